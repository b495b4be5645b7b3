"""Rules the config enforces on its values, so that a bad value is refused when the config
is built: before Prefect stores it as a flow parameter, MLflow logs it as a param, or a
run writes it to `run-config.json`.

- No credentials in any URL field: `user:password@`, a bare `token@`, or a query /
  fragment parameter named like a secret (`?token=`, `?api_key=`, `X-Amz-Signature`, ...).
  Credentials come from the environment (AWS_*, MLFLOW_TRACKING_*, ...). The error never
  repeats the value (the config models also hide input values in their errors).
- A run id names one folder under `storage.root`: it cannot hold a path.
- A storage root is a local folder, `file://` or `s3://bucket/prefix`.
- An override's value for a text field stays text (`takes_text`).

Only the standard library here: `a2tgpo.config` stays a leaf.
"""

from __future__ import annotations

import re
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin
from urllib.parse import parse_qsl

from pydantic import BaseModel, ConfigDict

from a2tgpo.errors import UnsafeValue

RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
# Query / fragment parameter names that carry secrets (lower case, '-' read as '_').
_SECRET_WORDS = ("token", "secret", "passw", "pwd", "signature", "credential", "apikey",
                 "api_key", "auth")  # fmt: skip
_SECRET_NAMES = ("key", "sig")

CREDENTIALS_HELP = (
    "must not embed credentials (user:password@, a token or a signature in the query); "
    "give them through environment variables (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, "
    "MLFLOW_TRACKING_TOKEN, ...)"
)


def refuse_credentials(value: str | None) -> str | None:
    """`value` unchanged, unless it is a URL that carries a credential."""
    if value and "://" in value:
        rest = value.split("://", 1)[1]
        # A secret may hold "/", so a URL parser would not find the "@" in the
        # authority (s3://KEY:SE/CRET@bucket): any "@" after the scheme counts.
        if "@" in rest or _has_secret_parameter(rest):
            raise UnsafeValue(CREDENTIALS_HELP)
    return value


def _has_secret_parameter(rest: str) -> bool:
    tails = re.split(r"[?#]", rest, maxsplit=1)[1:]
    for tail in tails:
        for name, _ in parse_qsl(tail.replace("#", "&"), keep_blank_values=True):
            name = name.strip().lower().replace("-", "_")
            if name in _SECRET_NAMES or name.endswith("_key"):
                return True
            if any(word in name for word in _SECRET_WORDS):
                return True
    return False


def check_run_id(value: str) -> str:
    """A run id is one folder name: no path, no leading dot, no '..', at most 128 chars."""
    if not RUN_ID.match(value) or ".." in value:
        raise UnsafeValue(
            "run_id must be 1-128 letters, digits, '.', '_' or '-', start with a letter or "
            "digit and hold no '..' (it names one folder under storage.root)"
        )
    return value


def check_storage_root(value: str) -> str:
    """A local folder, file://... or s3://bucket/prefix, without credentials."""
    refuse_credentials(value)
    if value.startswith("s3://"):
        if not BUCKET.match(value[len("s3://") :].split("/", 1)[0]):
            raise UnsafeValue("storage.root does not start with a valid S3 bucket name")
    elif "://" in value and not value.startswith("file://"):
        raise UnsafeValue("unsupported storage root: use a local folder, file:// or s3://")
    return value


def takes_text(model: Any, path: list[str]) -> bool:
    """Whether the field at `path` (section names, then the field) of the pydantic `model`
    holds a string: `--set run_id=123` then keeps the text "123", not the number."""
    for part in path[:-1]:
        model = model.model_fields[part].annotation
    annotation = model.model_fields[path[-1]].annotation
    options = get_args(annotation) if get_origin(annotation) in (Union, UnionType) else ()
    return any(_unannotated(a) is str for a in (annotation, *options))


def _unannotated(annotation: Any) -> Any:
    return get_args(annotation)[0] if get_origin(annotation) is Annotated else annotation


class Section(BaseModel):
    """The base of every section of the config tree (`a2tgpo.config`)."""

    # hide_input_in_errors: a refused value may be a credential; errors name the field only.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, hide_input_in_errors=True)
