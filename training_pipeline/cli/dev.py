"""`training-pipeline dev`: the Dagster UI and daemon with the project-local instance.

`dagster dev` runs as a child in its own session, and this process stays its parent: Ctrl-C,
SIGTERM or SIGHUP here becomes a Ctrl-C for the whole session (webserver, daemon, code servers,
run workers), and whatever has not stopped after `GRACE_SECONDS` is terminated, then killed. So
the command stops like any server does, even when it was started in the background with SIGINT
ignored (Dagster maps SIGTERM onto the SIGINT handler, so by itself it would ignore SIGTERM too).
The child's environment silences warnings about Dagster's and its libraries' own internals.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from training_pipeline.cli.common import ensure_dagster_home
from training_pipeline.settings import project_root

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
GRACE_SECONDS = 30.0
"""How long Dagster gets to shut down cleanly before what is left is terminated."""
KILL_SECONDS = 5.0

QUIET_WARNINGS = (
    # Dagster recommends its separate `dg` tool over `dagster dev`, which is what we run.
    "ignore:Function `dev_command` is superseded",
    # pgserver asks platformdirs for a runtime dir; a server without a login session has none,
    # and the fallback platformdirs picks is fine.
    "ignore:XDG_RUNTIME_DIR is not set",
    # Dagster's own resource initialization reads a property Dagster deprecated.
    "ignore:InitResourceContext.dagster_run is deprecated",
)


def dev_argv(host: str, port: int) -> list[str]:
    """The `dagster dev` command line: webserver and daemon on `host` (loopback by default)."""
    dagster = Path(sys.executable).with_name("dagster")
    workspace = project_root() / "workspace.yaml"
    return [str(dagster), "dev", "-w", str(workspace), "--host", host, "--port", str(port)]


def quiet_environment(environment: Mapping[str, str]) -> dict[str, str]:
    """`environment` with the known noise filtered: Python warnings about Dagster's own commands
    and internals (the user's PYTHONWARNINGS still wins), and gRPC's info lines."""
    quiet = dict(environment)
    filters = [*QUIET_WARNINGS, *filter(None, [environment.get("PYTHONWARNINGS")])]
    quiet["PYTHONWARNINGS"] = ",".join(filters)
    quiet.setdefault("GRPC_VERBOSITY", "ERROR")  # e.g. "skipping fork() handlers" lines
    return quiet


def session_members(session: int) -> list[int]:
    """Processes of a session that are still running (zombies excluded; Linux `/proc`)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # exited meanwhile
        state, session_id = fields[0], int(fields[3])
        if session_id == session and state != "Z":
            members.append(int(entry.name))
    return members


def _signal_all(pids: Sequence[int], signum: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):  # exited meanwhile
            os.kill(pid, signum)


def _wait_until_gone(child: subprocess.Popen, until: float, interrupted: Callable[[], bool]):
    """Reap the child and wait for its session to empty, until a deadline or a second signal."""
    while time.monotonic() < until and not interrupted():
        child.poll()
        if not session_members(child.pid):
            return True
        time.sleep(0.2)
    child.poll()
    return not session_members(child.pid)


def supervise(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    grace_seconds: float = GRACE_SECONDS,
    echo: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True),
) -> int:
    """Run `argv` in its own session until it exits or a stop signal arrives; then stop all of
    it within `grace_seconds` (+ `KILL_SECONDS`). Returns 0 after a requested, clean stop."""
    requested: list[int] = []
    # A signal ignored when we started (SIGINT of a background job, SIGHUP under nohup) stays
    # ignored here; our handler is installed regardless, so the child starts with the default.
    ignored = {sig for sig in STOP_SIGNALS if signal.getsignal(sig) == signal.SIG_IGN}

    def on_signal(signum: int, _frame: object) -> None:
        if signum not in ignored:
            requested.append(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in STOP_SIGNALS}
    try:
        child = subprocess.Popen(
            list(argv), cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL, start_new_session=True
        )
        while child.poll() is None and not requested:
            time.sleep(0.2)
        if requested:
            echo("stopping Dagster (webserver, daemon, code servers) ...")
            os.killpg(child.pid, signal.SIGINT)  # what Ctrl-C does to a foreground job
        deadline = time.monotonic() + (grace_seconds if requested else KILL_SECONDS)
        clean = _wait_until_gone(child, deadline, lambda: len(requested) > 1)
        if not clean:  # a second Ctrl-C, or the grace period is over
            echo("Dagster did not stop in time: terminating what is left")
            _signal_all(session_members(child.pid), signal.SIGTERM)
            if not _wait_until_gone(child, time.monotonic() + KILL_SECONDS, lambda: False):
                _signal_all(session_members(child.pid), signal.SIGKILL)
        returncode = child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if requested:
        echo("stopped" + ("" if clean else " (forcibly)"))
        return 0 if clean else 1
    return returncode


def command_dev(args: argparse.Namespace) -> int:
    """Open the Dagster UI on this machine only (127.0.0.1 unless --host says otherwise)."""
    ensure_dagster_home()
    print(
        f"Dagster UI on http://{args.host}:{args.port} (Ctrl-C stops it; the embedded "
        "PostgreSQL keeps running until `make stop`)",
        file=sys.stderr,
        flush=True,
    )
    argv = dev_argv(args.host, args.port)
    return supervise(argv, cwd=project_root(), env=quiet_environment(os.environ))


def register(commands: argparse._SubParsersAction) -> None:
    """`dev [--host H] [--port P]`."""
    dev = commands.add_parser(
        "dev", help="open the Dagster UI and run the daemon (project-local DAGSTER_HOME)"
    )
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument("--port", type=int, default=3000)
    dev.set_defaults(handler=command_dev)
