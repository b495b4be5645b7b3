"""The project's input errors, and the one line the CLI prints for an error a user can fix.

`InputError` is the base of every error that says "what you gave cannot be used" (a
config value or file, a run id that clashes with a pinned run, a path that would leave
the store); modules raise a subclass, the CLI prints its message on one line and exits 2.
`describe` also knows the third-party errors that mean the same (a pydantic validation
error, a missing or unreadable file, an unreachable S3 endpoint, Prefect's temporary
server not starting). Anything else is a bug, and its traceback is what helps: `describe`
returns None for it. The module imports only the standard library (the config imports
it); `describe` imports the libraries whose errors it checks when it runs.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit


class InputError(ValueError):
    """Something the user gave cannot be used. A ValueError, so that older callers that
    catch ValueError keep working."""


class ConfigFileError(InputError):
    """A `--config` file is missing, unreadable or not YAML / JSON of a mapping."""


class RunConflict(InputError):
    """A run id is reused with settings other than those it was started with."""


class UnsafeValue(InputError):
    """A value that would leak a credential or leave the storage root."""


PREFECT_TIMEOUT_ENV = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
_PREFECT_TIMEOUT = "Timed out while attempting to connect to ephemeral Prefect API server"
_PREFECT_UNREACHABLE = re.compile(r"Failed to reach API at (?P<url>\S+)")
MAX_CHARS = 2000  # a message is one line of a terminal log, not a data dump


def describe(error: BaseException) -> str | None:
    """One line for an error the user can fix, else None. Looks through explicit causes
    (`raise X from input_error`), never through implicit contexts: a bug raised while
    handling an input error is still a bug."""
    for candidate in _causes(error):
        for describer in _DESCRIBERS:
            if (message := describer(candidate)) is not None:
                return one_line(message)
    return None


def one_line(text: str) -> str:
    """`text` with every run of whitespace (newlines included) as one space, cut to
    MAX_CHARS."""
    flat = " ".join(text.split())
    return flat if len(flat) <= MAX_CHARS else flat[: MAX_CHARS - 3] + "..."


def _causes(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__


def _validation(error: BaseException) -> str | None:
    from pydantic import ValidationError

    if not isinstance(error, ValidationError):
        return None
    # The models hide input values (they may be credentials): location and reason only.
    problems = [
        f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: "
        + e["msg"].removeprefix("Value error, ")
        for e in error.errors(include_input=False)
    ]
    return f"invalid {error.title}: " + "; ".join(problems)


def _project(error: BaseException) -> str | None:
    types: list[type] = [InputError]
    with contextlib.suppress(ImportError):  # the data layer's own input errors
        from a2tgpo.data.errors import DatasetValidationError, NotCommitted, StageMismatch

        types += [DatasetValidationError, NotCommitted, StageMismatch]
    # LoaderError is an InputError: no import of the loaders (they import the config)
    return str(error) if isinstance(error, tuple(types)) else None


def _files(error: BaseException) -> str | None:
    if isinstance(error, (FileNotFoundError, PermissionError, IsADirectoryError)):
        return str(error)
    if isinstance(error, UnicodeDecodeError):
        return f"an input file is not UTF-8 text: {error.reason} at byte {error.start}"
    with contextlib.suppress(ImportError):
        import pyarrow as pa

        if isinstance(error, pa.ArrowInvalid):  # a file that is not Parquet, a bad column
            return f"invalid input data: {error}"
    return None


def _network(error: BaseException) -> str | None:
    with contextlib.suppress(ImportError):
        import botocore.exceptions as boto

        if isinstance(error, boto.NoCredentialsError):
            return (
                "no S3 credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                "(or AWS_PROFILE) in the environment"
            )
        if isinstance(error, (boto.ConnectionError, boto.HTTPClientError)):
            endpoint = _origin(getattr(error, "kwargs", {}).get("endpoint_url", ""))
            return f"cannot reach s3 endpoint {endpoint or '(unknown)'}: {error}"
    with contextlib.suppress(ImportError):
        import aiohttp

        if isinstance(error, aiohttp.ClientConnectorError):
            return f"cannot reach s3 endpoint {error.host}:{error.port}: {error.os_error}"
    return None


def _prefect_startup(error: BaseException) -> str | None:
    """Prefect's RuntimeErrors for an API that is not there (Prefect 3.9 messages)."""
    text = str(error) if isinstance(error, RuntimeError) else ""
    if text.startswith(_PREFECT_TIMEOUT):
        seconds = os.environ.get(PREFECT_TIMEOUT_ENV, "Prefect's default")
        return (
            f"Prefect's temporary API server did not start within {seconds} s: raise "
            f"{PREFECT_TIMEOUT_ENV}, or start a server (`prefect server start`) and set "
            "PREFECT_API_URL=http://127.0.0.1:4200/api"
        )
    if (found := _PREFECT_UNREACHABLE.search(text)) is not None:
        return (
            f"cannot reach the Prefect API at {found['url'].rstrip('/.')}: start it "
            "(`prefect server start`), or unset PREFECT_API_URL to use a temporary server"
        )
    return None


def _origin(url: str) -> str:
    """scheme://host:port of a URL (the path names a bucket and key: noise here)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else url


_DESCRIBERS: tuple[Callable[[BaseException], str | None], ...] = (
    _validation,
    _project,
    _prefect_startup,
    _network,
    _files,
)
