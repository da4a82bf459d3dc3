"""Peak memory of a process, read from /proc while it runs."""

from __future__ import annotations

import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path


def peak_rss_kb(pid: int) -> int:
    """VmHWM: the process's own peak RSS since exec (0 once it is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def descendants(pid: int) -> list[int]:
    """Every live descendant of pid; a process may exit at any point while we walk."""
    found, queue = [], [pid]
    while queue:
        parent = queue.pop()
        try:
            tasks = list(Path(f"/proc/{parent}/task").iterdir())
        except OSError:  # it exited between two reads
            continue
        for task in tasks:
            try:
                children = [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
            found += children
            queue += children
    return found


@dataclass
class Measured:
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    peak_mb: float  # the process itself
    children_peak_mb: float  # its largest descendant (a local Spark driver JVM, say)


def run_measured(command: list[str], **popen) -> Measured:
    """Run a command to the end, polling its and its descendants' peak RSS."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)
    peak = children = 0
    out: list[str] = []
    err: list[str] = []
    readers = [threading.Thread(target=lambda s=s, b=b: b.append(s.read()), daemon=True)
               for s, b in ((process.stdout, out), (process.stderr, err))]
    for reader in readers:
        reader.start()
    while process.poll() is None:
        peak = max(peak, peak_rss_kb(process.pid))
        for child in descendants(process.pid):
            children = max(children, peak_rss_kb(child))
        time.sleep(0.05)
    for reader in readers:
        reader.join()
    return Measured(process.returncode, "".join(out), "".join(err), time.perf_counter() - started,
                    peak / 1024, children / 1024)
