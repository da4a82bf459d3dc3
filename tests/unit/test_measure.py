"""The benchmark's /proc sampler copes with processes that come and go while it reads."""

import os
import signal
import subprocess
import sys
import time

from tests.measure import descendants, peak_rss_kb, run_measured


def test_a_process_that_has_exited_has_no_descendants_and_no_peak():
    # CI once saw /proc/<pid>/task vanish between pathlib's is_dir and scandir
    # (FileNotFoundError): any read may find the process gone.
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    assert descendants(gone.pid) == []
    assert peak_rss_kb(gone.pid) == 0


def test_descendants_include_grandchildren():
    script = ("import subprocess, sys; "
              "subprocess.run([sys.executable, '-c', 'import time; time.sleep(30)'], timeout=60)")
    parent = subprocess.Popen([sys.executable, "-c", script])
    try:
        for _ in range(200):
            found = descendants(parent.pid)
            if found:
                break
            time.sleep(0.05)
        assert len(found) == 1 and peak_rss_kb(found[0]) > 0
    finally:
        for pid in descendants(parent.pid):
            os.kill(pid, signal.SIGTERM)
        parent.wait(timeout=30)


def test_a_short_command_is_measured_to_the_end():
    measured = run_measured([sys.executable, "-c", "print('done')"])
    assert measured.returncode == 0 and measured.stdout == "done\n" and measured.peak_mb >= 0
