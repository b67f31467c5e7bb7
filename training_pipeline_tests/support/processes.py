"""Processes for tests: free loopback ports, and process trees read from Linux `/proc`."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_answering(url: str, process: subprocess.Popen, deadline_seconds: float) -> bool:
    """Wait until `url` answers while `process` runs; False if it exited or the deadline passed
    (the process is then killed)."""
    deadline = time.monotonic() + deadline_seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return True
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                return False
            time.sleep(0.1)


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a process, None if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], int(fields[1])


def descendants(pid: int) -> set[int]:
    """Every process below `pid` (children, their children, ...) right now."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
            parents[int(entry.name)] = stat[1]
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def running(pids: set[int]) -> set[int]:
    """The processes of `pids` that have not exited (a zombie has exited)."""
    return {pid for pid in pids if (stat := _stat(pid)) is not None and stat[0] != "Z"}


def wait_until_gone(pids: set[int], deadline_seconds: float) -> set[int]:
    """Wait until none of `pids` runs, at most `deadline_seconds`; returns those still running."""
    deadline = time.monotonic() + deadline_seconds
    while (alive := running(pids)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return alive
