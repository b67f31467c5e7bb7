"""`training-pipeline dev` stops like a server: Ctrl-C or SIGTERM stops the webserver, the daemon
and the code servers within a bounded time, and Dagster's own warnings are not shown."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from training_pipeline.cli.dev import supervise
from training_pipeline.settings import project_root
from training_pipeline_tests.support.processes import (
    descendants,
    free_port,
    running,
    wait_until_answering,
    wait_until_gone,
)

BIN = Path(sys.executable).parent
NOISE = ("SupersessionWarning", "dg dev", "XDG_RUNTIME_DIR", "RuntimeDirWarning", "fork_posix")


def start_dev(tmp_path: Path, database_url: str, *, ignore_sigint: bool):
    """`training-pipeline dev` on a free port, in its own process group like a terminal's job;
    returns the process, its port and its log, once the webserver answers."""
    port = free_port()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
        "DATABASE_URL": database_url,
    }
    log = tmp_path / "dev.log"

    def as_started_by_a_shell() -> None:
        # A script's `cmd &` starts its job with SIGINT ignored; a terminal's job has the default.
        signal.signal(signal.SIGINT, signal.SIG_IGN if ignore_sigint else signal.SIG_DFL)

    with log.open("wb") as output:
        process = subprocess.Popen(
            [str(BIN / "training-pipeline"), "dev", "--port", str(port)],
            cwd=project_root(),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=as_started_by_a_shell,
        )
    if not wait_until_answering(f"http://127.0.0.1:{port}/server_info", process, 120):
        raise AssertionError(f"the webserver did not answer:\n{log.read_text()[-3000:]}")
    return process, log


@pytest.mark.parametrize(
    ("how", "ignore_sigint"),
    [("ctrl-c", False), ("sigterm", False), ("sigterm-of-a-background-job", True)],
)
def test_dev_stops_everything_it_started(tmp_path, database_url, how, ignore_sigint):
    process, log = start_dev(tmp_path, database_url, ignore_sigint=ignore_sigint)
    try:
        tree = {process.pid} | descendants(process.pid)
        assert len(tree) >= 5  # us, dagster dev, webserver, daemon, code server(s)
        if how == "ctrl-c":
            os.killpg(process.pid, signal.SIGINT)  # what the terminal sends its foreground job
        else:
            process.send_signal(signal.SIGTERM)
        # A deadline, not a duration: Dagster shuts down in a second or two when the machine is
        # idle; within 60 s is the promise (30 s of grace, then terminate, then kill).
        assert wait_until_gone(tree, 60) == set(), log.read_text()[-3000:]
        assert process.wait(timeout=10) == 0
    finally:
        for pid in descendants(process.pid):
            os.kill(pid, signal.SIGKILL)
        process.kill()
    output = log.read_text()
    assert "Serving dagster-webserver" in output and output.rstrip().endswith("stopped")
    assert not [noise for noise in NOISE if noise in output], output


STUBBORN = """
import os, pathlib, signal, sys, time
for stop in (signal.SIGINT, signal.SIGTERM):
    signal.signal(stop, signal.SIG_IGN)
ready = pathlib.Path(sys.argv[1])
ready.with_suffix(".tmp").write_text(str(os.getpid()))
ready.with_suffix(".tmp").rename(ready)  # appears complete, with the pid
time.sleep(120)
pathlib.Path(sys.argv[1] + ".finished").write_text("slept to the end")
"""


def test_what_does_not_stop_in_time_is_killed(tmp_path):
    ready = tmp_path / "ready"
    lines: list[str] = []

    def stop_when_ready() -> None:
        deadline = time.monotonic() + 60
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)  # to supervise(), in this very process

    handlers = {stop: signal.getsignal(stop) for stop in (signal.SIGINT, signal.SIGTERM)}
    threading.Thread(target=stop_when_ready, daemon=True).start()
    code = supervise(
        [sys.executable, "-c", STUBBORN, str(ready)],
        cwd=tmp_path,
        env=os.environ,
        grace_seconds=0.5,
        echo=lines.append,
    )
    assert code == 1
    assert lines[-2:] == [
        "Dagster did not stop in time: terminating what is left",
        "stopped (forcibly)",
    ]
    # Killed, not waited for: gone when supervise() returns, without having slept to the end.
    assert running({int(ready.read_text())}) == set()
    assert not Path(f"{ready}.finished").exists()
    assert {stop: signal.getsignal(stop) for stop in handlers} == handlers  # put back
