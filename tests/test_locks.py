"""One writer per directory: two real processes on one --out; a dead holder's lock is taken over."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from damp.locks import LOCK_NAME, DirectoryInUse, exclusive_directory, has_content
from tests.test_preemption import RUN, damp, wait_for_rows

HOLD = "import sys, time; from damp.locks import exclusive_directory\n" \
       "with exclusive_directory(sys.argv[1]):\n    print('locked', flush=True); time.sleep(60)\n"


def holder(directory) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(directory)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


@pytest.mark.slow
@pytest.mark.parametrize("second", [["train", "--resume"], ["train", "--overwrite"], ["sweep", "--resume"]])
def test_second_writer_is_refused_with_the_holders_pid(second, tmp_path):
    out = tmp_path / "run"
    first = subprocess.Popen(damp("train", *RUN, "--set", "trainer.max_steps=400", "--out", str(out)),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_rows(first, out / "metrics.jsonl", 1)
        command, flag = second
        args = ["--grid", "method.std=0.1"] if command == "sweep" else []
        done = subprocess.run(damp(command, *RUN, *args, "--out", str(out), flag), capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 2
        line = done.stderr.split("\r")[-1].strip()  # what a terminal shows once the sweep's bar is erased
        assert len(line.splitlines()) == 1 and str(out) in line and f"PID {first.pid}" in line, line
        assert first.poll() is None  # the holder runs on undisturbed
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()


def test_lock_of_a_killed_process_is_taken_over(tmp_path):
    out = tmp_path / "run"
    proc = holder(out)
    with pytest.raises(DirectoryInUse, match=f"PID {proc.pid}"):
        with exclusive_directory(out):
            pass
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (out / LOCK_NAME).is_file()  # left behind by the killed holder
    assert not has_content(out)  # a stale lock file does not make the directory "not empty"
    with exclusive_directory(out):
        assert (out / LOCK_NAME).read_text().strip() == str(__import__("os").getpid())
    assert not (out / LOCK_NAME).exists()


def test_evaluate_refuses_a_locked_directory_and_a_refusal_leaves_nothing(tmp_path):
    from damp.cli import main

    out = tmp_path / "new"
    proc = holder(tmp_path / "held")
    try:
        start = time.time()
        code = main(["evaluate", str(tmp_path / "held"), "--quiet"])
        assert code == 2 and time.time() - start < 30
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with exclusive_directory(out):
        pass
    assert not out.exists()  # a directory the lock alone created is removed with it
