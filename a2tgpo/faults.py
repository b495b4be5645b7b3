"""Failpoints: named places where the fault-injection tests make the process die.

    A2TGPO_FAILPOINTS="stage-start:score-ig:0,before-commit:iter=00000/scored"

`failpoint(name)` does nothing unless the environment variable lists `name`; then it
kills its own process with SIGKILL: no `finally`, no `atexit`, no flushing, as when a
node dies or the OOM killer strikes. The names in use:

- `stage-start:<stage>:<iteration>`: a stage is about to run (`iteration` is `-` for the
  run-wide stages): the boundary after the previous stage committed.
- `before-commit:<last two parts of the output URI>`: a stage wrote all its files and
  is about to write its manifest (e.g. `before-commit:iter=00000/trajectories`): the
  middle of a stage, the worst moment for a torn write.
- `train-worker:<policy version>`: a train-step worker (rank) is starting the step that
  writes that policy version.

The check costs one dictionary lookup, so the calls stay in production code.
"""

from __future__ import annotations

import logging
import os
import signal

ENV = "A2TGPO_FAILPOINTS"
log = logging.getLogger(__name__)


def failpoint(name: str) -> None:
    """Die here (SIGKILL) when the environment names this failpoint."""
    wanted = os.environ.get(ENV)
    if not wanted or name not in {w.strip() for w in wanted.split(",")}:
        return
    log.warning("failpoint %s: killing process %d", name, os.getpid())
    logging.shutdown()  # the log line is the test's evidence of where the process died
    os.kill(os.getpid(), signal.SIGKILL)


def uri_tail(uri: str) -> str:
    """The last two parts of a URI: the name a `before-commit` failpoint uses."""
    return "/".join(uri.rstrip("/").split("/")[-2:])
