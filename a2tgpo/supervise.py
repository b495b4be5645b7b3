"""Nothing a run starts outlives it: long CLI commands run under a guardian process.

A SIGKILLed `a2tgpo train` used to leave vLLM's engine processes, the ephemeral Prefect
server and DeepSpeed workers running: a killed process cannot clean up, and its
children are simply re-parented. So a long command runs as three processes:

    a2tgpo train ...             the top process: forwards signals, returns the exit code
      └─ guardian                its own process group; dies with the top (PDEATHSIG)
           └─ the command        in the guardian's group, with everything it starts

The guardian does nothing but wait, so it always reacts: when the top process dies
(the kernel sends the guardian SIGTERM) or is terminated, it sends SIGTERM to its
command (it unwinds: `finally` blocks close its engines, the flow's tracker records
the failure), waits a grace period, then SIGTERMs and SIGKILLs whatever is left of the
group and removes the session's temporary folder (`session_temp_dir`). When the command
ends by itself, leftovers of the group are ended the same way. Ctrl-C (SIGINT to the
top) reaches every process of the group, as a terminal's does; a second one ends the
session as SIGTERM does. Output and exit codes pass through unchanged (the processes
share the top's stdin, stdout and stderr). Linux only (prctl); elsewhere commands run
directly.

`A2TGPO_SUPERVISE=0` runs commands directly (debugging).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

# The commands that start engines, servers or worker processes.
LONG_COMMANDS = {"train", "sweep", "evaluate", "warmstart", "rollout", "score-ig", "train-step"}
SWITCH_ENV = "A2TGPO_SUPERVISE"
ROLE_ENV = "A2TGPO_SUPERVISED"  # set in the guardian ("guardian") and the command ("command")
PARENT_ENV = "A2TGPO_SUPERVISOR_PID"  # the pid the process must still have as parent
TEMP_ENV = "A2TGPO_SESSION_TMP"  # the session's temporary folder, removed by the guardian
GRACE_S = float(os.environ.get("A2TGPO_TERMINATE_GRACE_S", "15"))
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>

# The command process runs the CLI; the import is in the child's code, not here, so the
# library modules that use this one (the launcher) do not depend on the CLI.
_COMMAND_CODE = (
    "import sys; sys.argv[0] = sys.argv.pop(1); "
    "from a2tgpo.supervise import prepare_command; prepare_command(); "
    "from a2tgpo.cli import main; main()"
)
_GUARDIAN_CODE = (
    "import sys; sys.argv[0] = sys.argv.pop(1); "
    "from a2tgpo.supervise import guardian_main; guardian_main()"
)


def supported() -> bool:
    return sys.platform.startswith("linux")


def set_parent_death_signal(signum: int) -> None:
    """Ask the kernel to send `signum` to this process when its parent (thread) dies;
    kept across exec. No-op off Linux."""
    if supported():
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0)


def parent_death_preexec(signum: int) -> Callable[[], None] | None:
    """A Popen `preexec_fn` that sets the parent-death signal in the child before exec
    (prctl looked up here, so the forked child only makes the call); None off Linux."""
    if not supported():
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0)

    return preexec


def session_temp_dir() -> str | None:
    """The supervised session's temporary folder (removed by the guardian whatever
    happens), else None (the system's default): pass as `dir=` to tempfile."""
    folder = os.environ.get(TEMP_ENV)
    return folder if folder and os.path.isdir(folder) else None


def process_identity(pid: int | None = None) -> str:
    """`host:pid:start-time` of a process (this one by default): what a later run checks
    with `identity_alive` to tell a dead run from a live one, pid reuse included."""
    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()}:{pid}:{_start_time(pid)}"


def identity_alive(identity: str) -> bool:
    """Whether the process named by `process_identity` still runs. A process of another
    host cannot be checked from here: it counts as dead (a rerun takes the run over)."""
    parts = identity.rsplit(":", 2)
    if len(parts) != 3 or parts[0] != socket.gethostname() or not parts[1].isdigit():
        return False
    _host, pid, start = parts
    return _start_time(int(pid)) == start != ""


def process_on_this_host_is_gone(identity: str) -> bool:
    """Whether `identity` names a process of this host that no longer runs (False for
    another host's: folders on shared disks are not judged from here)."""
    parts = identity.rsplit(":", 2)
    return len(parts) == 3 and parts[0] == socket.gethostname() and not identity_alive(identity)


def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot ("" if it does not exist)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat[stat.rfind(")") + 2 :].split()[19]


def should_supervise(args: list[str]) -> bool:
    """Whether the command line `args` (without the program) runs a long command that
    is not supervised yet."""
    if not supported() or os.environ.get(ROLE_ENV) or os.environ.get(SWITCH_ENV) == "0":
        return False
    command = next((a for a in args if not a.startswith("-")), None)
    return command in LONG_COMMANDS


def run_supervised(argv: list[str]) -> int:
    """In the top process: run `argv` (program + args) under a guardian; its exit code
    (a command killed by a signal kills this process with the same signal)."""
    guardian = subprocess.Popen(
        [sys.executable, "-c", _GUARDIAN_CODE, *argv],
        env={**os.environ, ROLE_ENV: "guardian", PARENT_ENV: str(os.getpid())},
        process_group=0,
        preexec_fn=parent_death_preexec(signal.SIGTERM),
    )
    forward = {signal.SIGINT: signal.SIGINT, signal.SIGTERM: signal.SIGTERM}
    forward[signal.SIGHUP] = signal.SIGTERM
    for signum, sent in forward.items():
        signal.signal(signum, lambda _s, _f, sent=sent: _send(guardian.pid, sent))
    return _exit_code(guardian.wait())


def guardian_main() -> None:
    """The guardian: start the command in this process group, wait, clean up."""
    _exit_if_orphaned()
    stop: list[int] = []  # the signal that asked this session to end
    interrupts: list[int] = []

    def interrupt(signum: int, _frame) -> None:
        """Ctrl-C reaches the whole group, as a terminal sends it to its foreground
        group; a second one ends the session like SIGTERM (a command that ignores it)."""
        interrupts.append(signum)
        if len(interrupts) > 1:
            stop.append(signum)
        _signal_group(signal.SIGINT)

    signal.signal(signal.SIGINT, interrupt)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, lambda s, _f: stop.append(s))
    temp = tempfile.mkdtemp(prefix="a2tgpo-session-")
    command = subprocess.Popen(
        [sys.executable, "-c", _COMMAND_CODE, *sys.argv],
        env={**os.environ, ROLE_ENV: "command", PARENT_ENV: str(os.getpid()), TEMP_ENV: temp},
        preexec_fn=parent_death_preexec(signal.SIGTERM),
    )
    code = _wait_or_stop(command, stop)
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)  # from here on, only cleaning up
    if stop:  # the command unwinds first: it closes its engines and servers itself
        _send(command.pid, signal.SIGTERM)
        code = _wait(command, GRACE_S)
    end_group(grace_s=5.0)
    shutil.rmtree(temp, ignore_errors=True)
    if stop:
        code = 128 + stop[0]
    os._exit(_exit_code(code))


def prepare_command() -> None:
    """In the command process, before the CLI runs: end at once if the guardian is
    already gone, and unwind (finally blocks run) on SIGTERM."""
    _exit_if_orphaned()
    signal.signal(signal.SIGTERM, _raise_exit)


def end_group(grace_s: float) -> None:
    """SIGTERM every other process of this process group, wait up to `grace_s` for them
    to exit, then SIGKILL the rest (repeated while any remain, e.g. fresh forks)."""
    if not group_members():
        return
    _signal_group(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while group_members() and time.monotonic() < deadline:
        time.sleep(0.1)
    for _ in range(50):
        if not _signal_group(signal.SIGKILL):
            return
        time.sleep(0.05)


def group_members(pgid: int | None = None) -> list[int]:
    """Live processes of process group `pgid` (default: this one's), this one excluded."""
    pgid = os.getpgid(0) if pgid is None else pgid
    members = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:  # ended meanwhile
            continue
        state, _ppid, group = stat[stat.rfind(")") + 2 :].split()[:3]
        if int(group) == pgid and state not in ("Z", "X"):
            members.append(int(entry.name))
    return members


def _signal_group(signum: int) -> list[int]:
    """Send `signum` to the other members of this process group; the pids signalled."""
    members = group_members()
    for pid in members:
        _send(pid, signum)
    return members


def _wait_or_stop(command: subprocess.Popen, stop: list[int]) -> int | None:
    """The command's exit code, or None when a stop signal came first."""
    while not stop:
        try:
            return command.wait(timeout=0.2)
        except subprocess.TimeoutExpired:
            continue
    return None


def _wait(process: subprocess.Popen, timeout_s: float) -> int | None:
    try:
        return process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return None


def _send(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # ended meanwhile
        os.kill(pid, signum)


def _raise_exit(signum: int, _frame) -> None:
    raise SystemExit(128 + signum)


def _exit_if_orphaned() -> None:
    """The parent died before this process could ask to die with it: end now."""
    expected = os.environ.get(PARENT_ENV)
    if expected and os.getppid() != int(expected):
        os._exit(128 + signal.SIGTERM)


def _exit_code(code: int | None) -> int:
    """A child's return code as ours; a negative one (the child was killed by signal N)
    kills this process with N too, so the caller sees what it would have seen."""
    if code is None:
        return 1
    if code >= 0:
        return code
    signal.signal(-code, signal.SIG_DFL)
    os.kill(os.getpid(), -code)
    return 128 - code  # only if the signal did not end this process
