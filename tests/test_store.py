"""A results directory has one writer at a time, and a failed write leaves what was saved as it was."""
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import dry_run, fingerprint, ktlib_cli, on_a_small_disk, run

import ktlib
from ktlib.record import files, store

# A sweep through the command line that starts when a line arrives on its stdin (its imports done), and
# after its first saved run holds still, with the directory's lock, until another line arrives.
PAUSING = """
import json, sys
from ktlib import cli
from ktlib.record import files

sys.stdin.readline()
write = files.write_results
def write_then_pause(path, *args):
    write(path, *args)
    if not write_then_pause.paused and path.name == "sweep.csv":  # not the readouts, written before any run
        write_then_pause.paused = True
        sys.stdin.readline()
write_then_pause.paused = False
files.write_results = write_then_pause
sys.exit(cli.main(json.loads(sys.argv[1])))
"""


def pausing(*argv: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", PAUSING, json.dumps(list(argv))], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def go(proc: subprocess.Popen) -> None:
    proc.stdin.write("go\n")
    proc.stdin.flush()


def sweep_args(data: Path, where: Path, *extra: str) -> list[str]:
    return dry_run(data, where, "--no-progress", "--levels", "0", "1", "2", "3", "4", "5", "--sizes", "1", "5",
                   "--trials", "3", *extra)


def holding(proc: subprocess.Popen, where: Path) -> None:
    """Wait until proc holds the writer lock of results directory `where` and has saved a run (then it pauses)."""
    deadline = time.monotonic() + 120
    lock, csv = where / store.LOCK_FILE, where / files.RESULTS_FILE
    while not (lock.exists() and lock.read_text().strip() == str(proc.pid) and csv.exists()):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() else "timeout"
        time.sleep(0.01)


def test_a_second_sweep_on_a_directory_in_use_is_refused_naming_the_writer(smoke_data, tmp_path):
    where = tmp_path / "results"
    first, second = pausing(*sweep_args(smoke_data, where, "--seed", "1")), \
        pausing(*sweep_args(smoke_data, where, "--seed", "2"))
    go(first)
    holding(first, where)
    go(second)
    _, err = second.communicate(timeout=120)
    assert second.returncode == 2 and "Traceback" not in err
    assert f"is in use by process {first.pid}" in err and "--wait" in err
    go(first)
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert "36 runs in" in out
    meta, rows = ktlib.read_results(where / files.RESULTS_FILE)
    assert meta["config"]["seed"] == 1 and len(rows) == 36 and not rows.duplicated(["n", "k", "trial"]).any()
    assert files.read_source_record(where)["state_sha256"] == meta["source"]["state_sha256"]

    # once the first is done, the other seed is refused for what it is, and nothing in the directory changes
    before = fingerprint(where)
    late = run(ktlib_cli(*sweep_args(smoke_data, where, "--seed", "2")))
    assert late.returncode == 2 and "config.seed (1 there, 2 now)" in late.stderr
    assert fingerprint(where) == before


def test_a_second_sweep_asked_to_wait_runs_after_the_first(smoke_data, tmp_path):
    where = tmp_path / "results"
    first, second = pausing(*sweep_args(smoke_data, where)), pausing(*sweep_args(smoke_data, where, "--wait"))
    go(first)
    holding(first, where)
    go(second)
    assert f"waiting for process {first.pid}" in second.stderr.readline()
    go(first)
    assert first.wait(timeout=300) == 0
    out, err = second.communicate(timeout=300)  # it finds every run done, and never pauses
    assert second.returncode == 0, err
    assert "36 runs in" in out
    _, rows = ktlib.read_results(where / files.RESULTS_FILE)
    assert len(rows) == 36 and not rows.duplicated(["n", "k", "trial"]).any()


def test_the_lock_is_released_when_its_holder_is_killed(smoke_data, tmp_path):
    where = tmp_path / "results"
    first = pausing(*sweep_args(smoke_data, where))
    go(first)
    holding(first, where)
    first.kill()
    first.communicate()
    with store.writer(where):  # not refused: the OS released the dead process's lock
        pass


def test_a_full_disk_is_one_clear_error_and_nothing_is_half_written(smoke_data, tmp_path):
    where = tmp_path / "small-disk"
    out = run(on_a_small_disk(ktlib_cli(*dry_run(smoke_data, where)), where, size="64k"))
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert f"cannot write {where / files.SOURCE_FILE}: No space left on device" in out.stderr


def test_a_failed_write_leaves_the_old_file_and_no_temporary_one(tmp_path, monkeypatch):
    dest = tmp_path / "file"
    store.write_bytes(dest, b"saved")

    def full(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("os.fsync", full)
    with pytest.raises(store.StoreError, match=f"cannot write {dest}: No space left on device"):
        store.write_bytes(dest, b"new")
    assert dest.read_bytes() == b"saved" and [p.name for p in tmp_path.iterdir()] == ["file"]


def test_a_writer_removes_only_the_temporary_files_ktlib_named(tmp_path):
    stale = [store.part_name(tmp_path / files.RESULTS_FILE), store.part_name(tmp_path / "probe")]
    mine = [tmp_path / ".my-notes.part", tmp_path / ".sweep.csv.part", tmp_path / ".sweep.csv.12.nothex!.part"]
    for p in stale + mine:
        p.write_text("x")
    with store.writer(tmp_path):
        pass
    assert [p.exists() for p in stale] == [False, False] and all(p.exists() for p in mine)
    store.remove_stale_parts(tmp_path / "other")
    assert all(p.exists() for p in mine)


def test_deleting_the_lock_file_mid_sweep_does_not_let_a_second_writer_in(smoke_data, tmp_path):
    where = tmp_path / "results"
    first, second = pausing(*sweep_args(smoke_data, where)), pausing(*sweep_args(smoke_data, where))
    go(first)
    holding(first, where)
    (where / store.LOCK_FILE).unlink()  # by hand, as a user tidying up might
    go(second)
    _, err = second.communicate(timeout=120)
    assert second.returncode == 2 and "is in use by another process" in err, err
    go(first)
    assert first.wait(timeout=300) == 0


def test_a_lock_held_by_another_program_names_no_stale_pid(tmp_path):
    import fcntl
    import os

    tmp_path.joinpath(store.LOCK_FILE).write_text("999999999\n")  # left by a writer long gone
    fd = os.open(tmp_path, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # as `flock DIR cmd` or another tool would
    try:
        with pytest.raises(store.Busy, match=rf"{tmp_path} is in use by another process, which holds its lock"):
            with store.writer(tmp_path):
                pass
    finally:
        os.close(fd)
