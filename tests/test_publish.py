"""The record is what the book stands on. `ktlib publish` replaces it only with a finished build of the same
experiment, every file of it checked, and in one step: after every refusal, failure or kill the record's files
have the sha256 sums they had. `ktlib compare` pairs no runs of two experiments; `ktlib seed` starts a build from
the record whole."""
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import as_ordinary_user, dry_run, fingerprint, ktlib_cli, on_a_small_disk, run, write_emnist
from test_sweep import small

import ktlib
from ktlib import cli
from ktlib.compute import data as D
from ktlib.compute import executors, experiment
from ktlib.record import compare, files, layout, reproduce, store, studies, sweep
from ktlib.record import download as DL
from ktlib.record.files import PREDICTIONS_FILE, READOUTS_FILE, RESULTS_FILE, SOURCE_FILE, SOURCE_RECORD


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_emnist(tmp_path_factory.mktemp("emnist"), {"train": 14, "test": 10})


def as_the_records_data(monkeypatch, data_dir):
    """Take this synthetic data for the record's subset, whose records carry no data tag in their names."""
    monkeypatch.setattr(DL, "SUBSET_SHA256", D.checksums(data_dir))


def publish(where, data, *flags) -> int:
    return cli.main(["publish", str(where), "--data-dir", str(data), *flags])


def sums(checkout: Path) -> dict[str, str]:
    """The sha256 of every file under a checkout's results/, hidden ones included, by path: equal sums mean the record
    is byte for byte as it was and nothing was left beside it."""
    return {str(p.relative_to(checkout)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((checkout / "results").rglob("*")) if p.is_file()}


def keep_runs(where: Path, count: int) -> None:
    """A build as if stopped after its first `count` runs: its rows and their predictions."""
    meta, rows = files.read_results(where / RESULTS_FILE)
    keys, predicted, labels = files.read_predictions(where)
    files.write_results(where / RESULTS_FILE, meta, rows.iloc[:count])
    files.write_predictions(where, files.run_keys(rows.iloc[:count]),
                              [predicted[files.run_keys(keys).index(key)] for key in files.run_keys(rows)[:count]],
                              labels)


# --------------------------------------------------------------------------- what a publish does


@pytest.mark.parametrize("engine, record", [("native", "smoke"), ("batched", "smoke-batched")])
def test_publish_copies_a_build_to_the_record_named_for_its_profile_and_engine(tmp_path, data_dir, monkeypatch,
                                                                               engine, record):
    as_the_records_data(monkeypatch, data_dir)
    cfg = small(tmp_path, data_dir, sizes=[1], engine=engine)
    ktlib.run(cfg, progress=False)
    (tmp_path / "checkout").mkdir()
    monkeypatch.chdir(tmp_path / "checkout")
    assert publish(cfg.results_dir, data_dir) == 0
    for name in files.RECORD_FILES:
        published = tmp_path / "checkout" / "results" / record / name
        assert published.read_bytes() == (Path(cfg.results_dir) / name).read_bytes()
    assert sorted(p.name for p in (tmp_path / "checkout" / "results").iterdir()) == [record]  # nothing beside it


def test_a_build_on_other_data_publishes_to_a_record_of_its_own_and_leaves_the_subsets_alone(tmp_path, data_dir,
                                                                                              monkeypatch):
    monkeypatch.chdir(tmp_path)
    subsets = layout.record_path("smoke", root=tmp_path)
    subsets.parent.mkdir(parents=True)
    subsets.write_text("the record of the subset")
    cfg = small(tmp_path, data_dir, sizes=[1])
    rows = ktlib.run(cfg, progress=False)
    assert publish(cfg.results_dir, data_dir) == 0
    tag = layout.data_tag(D.checksums(data_dir))
    assert tag.startswith("data-") and subsets.read_text() == "the record of the subset"
    published = tmp_path / "results" / f"smoke-{tag}" / RESULTS_FILE
    assert published.read_bytes() == (Path(cfg.results_dir) / RESULTS_FILE).read_bytes()
    assert reproduce.compare_build(cfg.results_dir).loc[RESULTS_FILE, "equal"] == len(rows)


def test_publish_refuses_a_build_with_fewer_runs_than_its_grid_or_the_record_unless_told(tmp_path, data_dir,
                                                                                         monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    cfg = small(tmp_path, data_dir, sizes=[1])
    rows = ktlib.run(cfg, progress=False)
    record, _ = reproduce.publish(cfg.results_dir, data_dir=data_dir)
    saved = fingerprint(record)
    keep_runs(Path(cfg.results_dir), 2)
    assert publish(cfg.results_dir, data_dir) == 2
    err = capsys.readouterr().err
    assert f"sweep.csv holds 2 of its grid's {len(rows)} runs; sweep.csv holds 2 runs, the record {len(rows)}" in err
    assert "--partial" in err and fingerprint(record) == saved
    assert publish(cfg.results_dir, data_dir, "--partial") == 0
    assert "note: sweep.csv holds 2 of its grid's" in capsys.readouterr().out
    assert len(files.read_results(record / RESULTS_FILE)[1]) == 2


def test_publish_says_when_the_build_is_older_than_the_record_it_replaces(tmp_path, data_dir, monkeypatch, capsys):
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(tmp_path)]
    subprocess.run([*git, "init", "-q"], check=True)
    commits = []
    for message in ("old", "new"):
        subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", message], check=True)
        commits.append(subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip())
    monkeypatch.chdir(tmp_path)
    cfg = small(tmp_path, data_dir, sizes=[1])
    ktlib.run(cfg, progress=False)
    path = Path(cfg.results_dir) / RESULTS_FILE
    meta, rows = files.read_results(path)
    files.write_results(path, {**meta, "git_commit": commits[1]}, rows)
    record, notes = reproduce.publish(cfg.results_dir, data_dir=data_dir)
    assert notes == []
    files.write_results(path, {**meta, "git_commit": commits[0]}, rows)
    assert publish(cfg.results_dir, data_dir) == 0
    assert f"note: this build was made at {commits[0][:12]}, before the record it replaced" in capsys.readouterr().out


def test_publish_copies_the_study_with_the_sweep_and_keeps_every_sweep_of_the_record(tmp_path, smoke_data,
                                                                                    monkeypatch, capsys):
    as_the_records_data(monkeypatch, smoke_data)
    cfg = ktlib.Config.for_profile("smoke", data_dir=str(smoke_data), results_dir=str(tmp_path / "build"))
    ktlib.run(cfg, progress=False)
    studies.plan("study", cfg, 1).run(progress=False)
    monkeypatch.chdir(tmp_path)
    assert publish(cfg.results_dir, smoke_data) == 0
    record = tmp_path / "results" / "smoke"
    built = sorted(p.relative_to(cfg.results_dir) for p in Path(cfg.results_dir).rglob("*")
                   if p.suffix in (".csv", ".json", ".npz", ".pt") and not p.name.startswith("."))
    published = sorted(p.relative_to(record) for p in record.rglob("*") if p.is_file())
    one_of_n = layout.sweep_dir(layout.study_root(cfg.results_dir), "one-of-n", 0) / PREDICTIONS_FILE
    assert built == published and one_of_n.relative_to(cfg.results_dir) in published

    # a build that lacks one of the record's sweeps would drop it: refused, unless the maintainer says so
    before = sums(tmp_path)
    shutil.rmtree(one_of_n.parent)
    assert publish(cfg.results_dir, smoke_data) == 2
    assert "the record's study/one-of-n/split-0 is not in this build" in capsys.readouterr().err
    assert sums(tmp_path) == before
    assert publish(cfg.results_dir, smoke_data, "--partial") == 0
    assert not (record / "study" / "one-of-n").exists()


def test_the_record_itself_is_not_published_over_itself(tmp_path, data_dir, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    cfg = small(tmp_path, data_dir, sizes=[1])
    ktlib.run(cfg, progress=False)
    record, _ = reproduce.publish(cfg.results_dir, data_dir=data_dir)
    before = sums(tmp_path)
    assert publish(record, data_dir) == 2
    assert "is the record itself: there is nothing to publish" in capsys.readouterr().err and sums(tmp_path) == before


# --------------------------------------------------------------------------- refused: a damaged build


@pytest.fixture(scope="module")
def builds(smoke_data, tmp_path_factory) -> dict[int, Path]:
    """Two finished smoke sweeps, made once for these tests: seed 0 (the record's experiment) and seed 1."""
    out = {}
    for seed in (0, 1):
        out[seed] = tmp_path_factory.mktemp(f"seed{seed}") / "build"
        assert cli.main([*dry_run(smoke_data, out[seed]), "--seed", str(seed), "--no-progress"]) == 0
    return out


@pytest.fixture
def checkout(tmp_path, builds, smoke_data, monkeypatch) -> Path:
    """A checkout, the working directory, whose record is the seed-0 build, published."""
    (tmp_path / "checkout").mkdir()
    monkeypatch.chdir(tmp_path / "checkout")
    assert publish(builds[0], smoke_data) == 0
    return tmp_path / "checkout"


def header(change):
    def edit(where: Path, other: Path) -> None:
        path = where / RESULTS_FILE
        first, rest = path.read_text().split("\n", 1)
        meta = json.loads(first[2:])
        change(meta)
        path.write_text("# " + json.dumps(meta) + "\n" + rest)
    return edit


def cell(name: str, column: str, value: str):
    """The first row's `column` set to value, in a results or readouts file."""
    def edit(where: Path, other: Path) -> None:
        lines = (where / name).read_text().splitlines(keepends=True)
        columns, fields = lines[1].rstrip("\n").split(","), lines[2].rstrip("\n").split(",")
        fields[columns.index(column)] = value
        lines[2] = ",".join(fields) + "\n"
        (where / name).write_text("".join(lines))
    return edit


def predictions(change):
    def edit(where: Path, other: Path) -> None:
        with np.load(where / PREDICTIONS_FILE) as f:
            arrays = dict(f)
        change(arrays)
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        (where / PREDICTIONS_FILE).write_bytes(buffer.getvalue())
    return edit


def other_accuracy(arrays: dict) -> None:
    """The first run's predictions changed so that they give another test accuracy than its row."""
    right = arrays["predictions"][0] == arrays["labels"]
    arrays["predictions"][0] = np.where(right, (arrays["labels"] + 1) % 20, arrays["labels"])


def relabelled(arrays: dict) -> None:
    """Labels of other images, with predictions to match: every row's accuracy still holds."""
    arrays["labels"] = (arrays["labels"] + 1) % 20
    arrays["predictions"] = (arrays["predictions"] + 1) % 20


def json_file(name: str, change):
    def edit(where: Path, other: Path) -> None:
        (where / name).write_text(json.dumps(change(json.loads((where / name).read_text()))))
    return edit


def saved_torch(value) -> bytes:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


def other_weights(where: Path, other: Path) -> None:
    """source.pt under this sweep's key, but holding the other experiment's weights."""
    ours, theirs = (torch.load(d / SOURCE_FILE, weights_only=True) for d in (where, other))
    (where / SOURCE_FILE).write_bytes(saved_torch({**ours, "state_dict": theirs["state_dict"]}))


def other_rows(where: Path, other: Path) -> None:
    """The other experiment's rows and predictions under this sweep's header: each file whole, and each row's test
    accuracy given by its predictions."""
    first = (where / RESULTS_FILE).read_text().split("\n", 1)[0]
    (where / RESULTS_FILE).write_text(first + "\n" + (other / RESULTS_FILE).read_text().split("\n", 1)[1])
    shutil.copyfile(other / PREDICTIONS_FILE, where / PREDICTIONS_FILE)


def cut_last_row(where: Path, other: Path) -> None:
    text = (where / RESULTS_FILE).read_text()
    (where / RESULTS_FILE).write_text(text[:-6])


def others(*names: str):
    def edit(where: Path, other: Path) -> None:
        for name in names:
            shutil.copyfile(other / name, where / name)
    return edit


def rewrite(name: str, change):
    def edit(where: Path, other: Path) -> None:
        (where / name).write_bytes(change((where / name).read_bytes()))
    return edit


# what is done to a copy of the seed-0 build, and what the refusal says after the file's path
DAMAGES = {
    "predictions cut short": (PREDICTIONS_FILE, rewrite(PREDICTIONS_FILE, lambda b: b[:len(b) // 2]),
                              ": cannot be read"),
    "predictions that are garbage": (PREDICTIONS_FILE, rewrite(PREDICTIONS_FILE, lambda b: b"garbage" * 10),
                                     ": cannot be read (not a predictions file ktlib wrote)"),
    "a predicted class 250": (PREDICTIONS_FILE, predictions(lambda a: a["predictions"].__setitem__((0, 0), 250)),
                              ": class 250 among its predictions or labels, where this configuration has 20"),
    "predictions of a run with no row": (PREDICTIONS_FILE, predictions(lambda a: a["k"].__setitem__(0, 7)),
                                         ": predictions of 2 runs, 1 of them without a row in sweep.csv"),
    "predictions that give another accuracy": (PREDICTIONS_FILE, predictions(other_accuracy),
                                               ": the predictions of run RunKey("),
    "labels of other images": (PREDICTIONS_FILE, predictions(relabelled),
                               ": its labels are not those of this experiment's test images"),
    "source.json that is null": (SOURCE_RECORD, rewrite(SOURCE_RECORD, lambda b: b"null"),
                                 " is not a source net's record"),
    "source.json whose source_config is a list": (SOURCE_RECORD, json_file(SOURCE_RECORD, lambda r: {
        **r, "source_config": [1]}), " is not a source net's record: source_config missing, or of the wrong type"),
    "source.pt cut short": (SOURCE_FILE, rewrite(SOURCE_FILE, lambda b: b[:len(b) // 2]), " cannot be read"),
    "source.pt holding a list": (SOURCE_FILE, rewrite(SOURCE_FILE, lambda b: saved_torch([1, 2])),
                                 " is not a source net ktlib saved (it holds a list"),
    "source.pt holding another net's weights": ("", other_weights,
                                                ": source.pt hold another source net than the one sweep.csv was made "
                                                "with"),
    "source.pt and predictions of another experiment": (SOURCE_FILE, others(SOURCE_FILE, PREDICTIONS_FILE),
                                                        " was trained under another configuration or data"),
    "readouts with a word for a number": (READOUTS_FILE, cell(READOUTS_FILE, "test_accuracy", "abc"),
                                          ":3: test_accuracy='abc' is not a number"),
    "no readouts": ("", lambda where, other: (where / READOUTS_FILE).unlink(), ": no readouts.csv; a finished sweep"),
    "a header without a source": (RESULTS_FILE, header(lambda m: m.pop("source")), ": its header has no source"),
    "a header whose source is null": (RESULTS_FILE, header(lambda m: m.update(source=None)),
                                      ": its header is damaged (source is null)"),
    "a header whose config is a list": (RESULTS_FILE, header(lambda m: m.update(config=[1])),
                                        ": its header is damaged (config is [1])"),
    "an accuracy of 7": (RESULTS_FILE, cell(RESULTS_FILE, "test_accuracy", "7"),
                         ":3: test_accuracy=7.0 is not a share in [0, 1]"),
    "an infinite accuracy": (RESULTS_FILE, cell(RESULTS_FILE, "train_accuracy", "inf"),
                             ":3: train_accuracy=inf is not a share in [0, 1]"),
    "negative epochs": (RESULTS_FILE, cell(RESULTS_FILE, "epochs", "-3"),
                        ":3: epochs=-3 is not a whole number in [0, 2**53]"),
    "an n that overflows": (RESULTS_FILE, cell(RESULTS_FILE, "n", "99999999999999999999"),
                            ":3: n=99999999999999999999 is not a whole number in [0, 2**53]"),
    "a last row cut short": (RESULTS_FILE, cut_last_row, ": its last row was cut short"),
    "rows and predictions of another experiment": (RESULTS_FILE, other_rows,
                                                   ":3: seed="),
}


@pytest.mark.parametrize("case", DAMAGES)
def test_a_damaged_build_is_refused_naming_the_file_and_the_record_keeps_its_sums(checkout, builds, smoke_data,
                                                                                  tmp_path, capsys, case):
    name, change, says = DAMAGES[case]
    where = Path(shutil.copytree(builds[0], tmp_path / "damaged"))
    change(where, builds[1])
    before = sums(checkout)
    assert publish(where, smoke_data) == 2
    err = capsys.readouterr().err
    assert f"{where / name if name else where}{says}" in err and "Traceback" not in err, err
    assert sums(checkout) == before


def test_a_build_of_another_experiment_is_refused_unless_the_flag_names_it(checkout, builds, smoke_data, capsys):
    before = sums(checkout)
    assert publish(builds[1], smoke_data) == 2
    err = capsys.readouterr().err
    assert f"{builds[1]} is another experiment than the record in" in err
    assert "sweep.csv: config.seed (0 there, 1 now)" in err and "--new-experiment" in err
    assert sums(checkout) == before
    assert publish(builds[1], smoke_data, "--new-experiment") == 0
    assert "note: the record was another experiment: sweep.csv: config.seed (0 there, 1 now)" in capsys.readouterr().out
    record = next((checkout / "results").iterdir())
    assert fingerprint(record) == {name: (builds[1] / name).read_bytes() for name in files.RECORD_FILES}


def test_a_build_checked_against_other_data_than_its_own_is_refused(checkout, builds, smoke_data, tmp_path, capsys):
    other = Path(shutil.copytree(smoke_data, tmp_path / "other"))
    (other / D.MAPPING_FILE).write_bytes((other / D.MAPPING_FILE).read_bytes() + b"\n")
    before = sums(checkout)
    assert publish(builds[0], other) == 2
    assert (f"{builds[0] / RESULTS_FILE} was made on other data than the data at {other} ({D.MAPPING_FILE} differ); "
            f"give the data it was made on (--data-dir)") in capsys.readouterr().err
    assert sums(checkout) == before


# --------------------------------------------------------------------------- faults: the record as it was


def test_a_file_that_cannot_be_written_leaves_the_record_as_it_was(checkout, builds, smoke_data, monkeypatch, capsys):
    before, copy, calls = sums(checkout), store.copy_file, []

    def fails_on_the_third(source, dest):
        calls.append(dest)
        if len(calls) == 3:
            raise OSError(5, "Input/output error", str(dest))
        copy(source, dest)

    monkeypatch.setattr(store, "copy_file", fails_on_the_third)
    assert publish(builds[1], smoke_data, "--new-experiment") == 2
    err = capsys.readouterr().err
    assert f"cannot write {calls[2]}: Input/output error; nothing was published" in err
    assert sums(checkout) == before


def test_a_failed_switch_leaves_the_record_as_it_was(checkout, builds, smoke_data, monkeypatch, capsys):
    before = sums(checkout)

    def refused(new, dest):
        raise OSError(16, "Device or resource busy", str(dest))

    monkeypatch.setattr(store, "switch", refused)
    assert publish(builds[1], smoke_data, "--new-experiment") == 2
    assert "Device or resource busy; nothing was published" in capsys.readouterr().err
    assert sums(checkout) == before


@pytest.mark.parametrize("exchange", [True, False], ids=["one-rename", "two-renames"])
def test_the_switch_puts_the_new_directory_in_place_whole(tmp_path, monkeypatch, exchange):
    if not exchange:  # a system or file system without renameat2's RENAME_EXCHANGE
        monkeypatch.setattr(store, "_exchange", lambda a, b: False)
    dest = tmp_path / "record"
    dest.mkdir()
    (dest / "old").write_text("old")
    with store.new_directory(dest) as new:
        (new / "new").write_text("new")
    assert [p.name for p in tmp_path.iterdir()] == ["record"] and [p.name for p in dest.iterdir()] == ["new"]
    with pytest.raises(RuntimeError), store.new_directory(dest) as new:
        (new / "half").write_text("half")
        raise RuntimeError("a failure while it is filled")
    assert [p.name for p in tmp_path.iterdir()] == ["record"] and [p.name for p in dest.iterdir()] == ["new"]


def test_when_the_second_of_two_renames_fails_the_first_is_undone(tmp_path, monkeypatch):
    monkeypatch.setattr(store, "_exchange", lambda a, b: False)
    dest, rename, calls = tmp_path / "record", store.os.rename, []
    dest.mkdir()
    (dest / "old").write_text("old")

    def second_fails(a, b):
        calls.append(b)
        if len(calls) == 2:
            raise OSError(5, "Input/output error")
        rename(a, b)

    monkeypatch.setattr(store.os, "rename", second_fails)
    with pytest.raises(OSError), store.new_directory(dest) as new:
        (new / "new").write_text("new")
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["record"] and (dest / "old").read_text() == "old"


SMALL_DISK = """
import hashlib, json, os, shutil, sys
from pathlib import Path
from ktlib import cli
saved, checkout, build, data = map(Path, sys.argv[1:5])
shutil.copytree(saved, checkout / "results" / saved.name)
sums = lambda: {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(checkout.rglob("*")) if p.is_file()}
before = sums()
os.chdir(checkout)
rc = cli.main(["publish", str(build), "--data-dir", str(data), "--new-experiment"])
print(json.dumps({"rc": rc, "same": sums() == before, "left": sorted(os.listdir(checkout / "results"))}))
"""


def test_a_full_disk_leaves_the_record_as_it_was(checkout, builds, smoke_data, tmp_path):
    record = next((checkout / "results").iterdir())
    size = sum(p.stat().st_size for p in record.iterdir()) // 1024 + 64  # the record fits, a second copy does not
    elsewhere = tmp_path / "small"
    out = run(on_a_small_disk([sys.executable, "-c", SMALL_DISK, str(record), str(elsewhere), str(builds[1]),
                               str(smoke_data)], elsewhere / "results", size=f"{size}k"), cwd=checkout)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"rc": 2, "same": True, "left": [record.name]}
    assert "No space left on device; nothing was published" in out.stderr and "Traceback" not in out.stderr


def test_a_results_directory_that_cannot_be_written_leaves_the_record_as_it_was(checkout, builds, smoke_data):
    before = sums(checkout)
    (checkout / "results").chmod(0o555)
    try:
        out = run(as_ordinary_user(ktlib_cli("publish", str(builds[1]), "--data-dir", str(smoke_data),
                                             "--new-experiment")), cwd=checkout)
    finally:
        (checkout / "results").chmod(0o755)
    assert out.returncode == 2 and "Permission denied; nothing was published" in out.stderr, out.stderr
    assert sums(checkout) == before


# A publish that holds still after it has copied its first file into the new record, until killed.
PAUSING = """
import sys
from ktlib import cli
from ktlib.record import store
copy = store.copy_file
def copy_then_pause(source, dest):
    copy(source, dest)
    print("copied", flush=True)
    sys.stdin.readline()
store.copy_file = copy_then_pause
sys.exit(cli.main(sys.argv[1:]))
"""


def test_a_publish_killed_midway_leaves_the_record_and_the_next_one_cleans_up(checkout, builds, smoke_data):
    before = sums(checkout)
    child = subprocess.Popen([sys.executable, "-c", PAUSING, "publish", str(builds[1]), "--data-dir", str(smoke_data),
                              "--new-experiment"], cwd=checkout, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
    assert child.stdout.readline() == "copied\n"
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=60)
    left = {str(p.relative_to(checkout)) for p in (checkout / "results").rglob("*") if p.is_file()}
    assert {path: sha for path, sha in sums(checkout).items() if path in before} == before
    assert len(left) == len(before) + 1  # the file it copied, in a new record beside the old one
    assert publish(builds[1], smoke_data, "--new-experiment") == 0  # which the next publish removes
    record = next((checkout / "results").iterdir())
    assert [p.name for p in (checkout / "results").iterdir()] == [record.name]


@pytest.mark.parametrize("busy", ["build", "record"])
def test_publish_is_refused_while_a_sweep_writes_to_the_build_or_the_record(checkout, builds, smoke_data, busy,
                                                                            capsys):
    record = next((checkout / "results").iterdir())
    with store.writer(builds[1] if busy == "build" else record):
        before = sums(checkout)
        assert publish(builds[1], smoke_data, "--new-experiment") == 2
        assert "is in use by" in capsys.readouterr().err and sums(checkout) == before


# --------------------------------------------------------------------------- compare and seed


def test_compare_counts_runs_equal_within_tolerance_different_and_unmatched(tmp_path, data_dir, monkeypatch):
    as_the_records_data(monkeypatch, data_dir)
    monkeypatch.chdir(tmp_path)
    cfg = small(tmp_path, data_dir, sizes=[1])
    rows = ktlib.run(cfg, progress=False)
    assert reproduce.compare_build(cfg.results_dir).loc[RESULTS_FILE, "unmatched"] == len(rows)  # no record yet
    record = reproduce.publish(cfg.results_dir, data_dir=data_dir)[0] / RESULTS_FILE
    meta, theirs = files.read_results(record)
    theirs.loc[0, "test_accuracy"] += compare.TOLERANCE / 2
    theirs.loc[1, "test_accuracy"] += 2 * compare.TOLERANCE
    files.write_results(record, meta, theirs.drop(index=2))
    table = reproduce.compare_build(cfg.results_dir)
    assert table.loc[RESULTS_FILE].to_dict() == {
        "runs": len(rows), "equal": len(rows) - 3, "within tolerance": 1, "different": 1, "unmatched": 1}
    assert table.attrs["record"] == str(record.parent)


def test_compare_pairs_no_run_of_another_experiment_and_says_so_first(checkout, builds, capsys):
    assert cli.main(["compare", str(builds[1])]) == 0
    first, second, *table = capsys.readouterr().out.splitlines()
    assert first.startswith(f"{builds[1]} is another experiment than the record in ")
    assert first.endswith("config.seed (0 there, 1 now); source_classes" + first.split("source_classes", 1)[1])
    assert "those runs are not paired with the record's" in first and "run by run" in second
    assert table[-1].split() == [RESULTS_FILE, "2", "0", "0", "0", "4"]  # its 2 runs and the record's 2, unpaired


def test_a_build_seeded_from_the_record_resumes_it_and_trains_nothing(tmp_path, smoke_data, monkeypatch):
    as_the_records_data(monkeypatch, smoke_data)
    cfg = ktlib.Config.for_profile("smoke", data_dir=str(smoke_data), results_dir=str(tmp_path / "first"))
    ktlib.run(cfg, progress=False)
    monkeypatch.chdir(tmp_path)
    assert publish(cfg.results_dir, smoke_data) == 0
    assert cli.main(["seed", "second", "--profile", "smoke", "--data-dir", str(smoke_data)]) == 0
    again = ktlib.Config.for_profile("smoke", data_dir=str(smoke_data), results_dir=str(tmp_path / "second"))
    monkeypatch.setattr(sweep, "train_source", lambda *a, **k: pytest.fail("the source net was trained again"))
    monkeypatch.setattr(executors, "train_group", lambda *a, **k: pytest.fail("a target net was trained again"))
    monkeypatch.setattr(executors, "plain", lambda *a, **k: pytest.fail("a target net was trained again"))
    rows = ktlib.run(again, progress=False)
    first = ktlib.read_results(tmp_path / "first" / RESULTS_FILE)[1]
    key = list(experiment.KEY)
    assert rows.sort_values(key).test_accuracy.tolist() == first.sort_values(key).test_accuracy.tolist()
    assert "already holds results" in reproduce.seed("second", "smoke", "native", data_dir=str(smoke_data))


def test_a_record_made_with_other_data_or_seed_is_refused_before_anything_is_copied(tmp_path, smoke_data, monkeypatch):
    as_the_records_data(monkeypatch, smoke_data)
    cfg = ktlib.Config.for_profile("smoke", data_dir=str(smoke_data), results_dir=str(tmp_path / "first"))
    ktlib.run(cfg, progress=False)
    monkeypatch.chdir(tmp_path)
    reproduce.publish(cfg.results_dir, data_dir=smoke_data)
    other = Path(shutil.copytree(smoke_data, tmp_path / "other"))
    (other / D.MAPPING_FILE).write_bytes((other / D.MAPPING_FILE).read_bytes() + b"\n")
    with pytest.raises(ValueError, match=f"another data file {D.MAPPING_FILE}; make book builds from it only"):
        reproduce.seed("second", "smoke", "native", data_dir=str(other))
    with pytest.raises(ValueError, match=r"another seed \(0 there, 1 here\).*make reproduce"):
        reproduce.seed("second", "smoke", "native", seed_value=1, data_dir=str(smoke_data))
    assert not (tmp_path / "second").exists()
    (tmp_path / "third").mkdir()
    (tmp_path / "third" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="holds files but no sweep.csv; starting it from the record would mix the two"):
        reproduce.seed("third", "smoke", "native", data_dir=str(smoke_data))
    assert [p.name for p in (tmp_path / "third").iterdir()] == ["notes.txt"]


def test_compare_on_a_header_with_an_empty_config_pairs_nothing_and_does_not_trace_back(checkout, builds, tmp_path,
                                                                                       capsys):
    where = Path(shutil.copytree(builds[0], tmp_path / "emptied"))
    header(lambda meta: meta.update(config={}))(where, builds[1])
    assert cli.main(["compare", str(where)]) == 0
    out = capsys.readouterr()
    assert "Traceback" not in out.err and out.out.splitlines()[-1].split() == [RESULTS_FILE, "2", "0", "0", "0", "2"]


def test_compare_says_first_when_there_is_no_record_and_counts_the_sweeps_only_the_record_has(
        checkout, builds, tmp_path, monkeypatch, capsys):
    record = next((checkout / "results").iterdir())
    (tmp_path / "empty").mkdir()
    monkeypatch.chdir(tmp_path / "empty")
    assert cli.main(["compare", str(builds[0])]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first == f"there is no record in results/{record.name}: no run of {builds[0]} is paired"
    monkeypatch.chdir(checkout)
    shutil.copytree(builds[0], record / "study" / "baseline" / "split-0")  # a sweep the record has, the build not
    table = reproduce.compare_build(str(builds[0]))
    assert table.loc[RESULTS_FILE, "equal"] == 2
    assert table.loc["study/baseline/split-0"].to_dict() == {"runs": 0, "equal": 0, "within tolerance": 0,
                                                             "different": 0, "unmatched": 2}


# A publish on a system without renameat2's exchange, killed between the switch's two renames.
KILLED_BETWEEN_RENAMES = """
import os, sys
from ktlib import cli
from ktlib.record import store
store._exchange = lambda a, b: False
rename = os.rename
def rename_then_die(a, b):
    rename(a, b)
    if str(b).endswith(".old"):  # the old record moved aside, the new one not yet in its place
        os._exit(9)
store.os.rename = rename_then_die
sys.exit(cli.main(sys.argv[1:]))
"""


def test_a_publish_killed_between_two_renames_is_settled_by_the_next_and_the_record_comes_back(
        checkout, builds, smoke_data, capsys):
    before = sums(checkout)
    record = next((checkout / "results").iterdir())
    out = run([sys.executable, "-c", KILLED_BETWEEN_RENAMES, "publish", str(builds[1]), "--data-dir", str(smoke_data),
               "--new-experiment"], cwd=checkout)
    assert out.returncode == 9 and not record.exists()  # killed with the old record aside
    # the next publish puts the old record back before it compares: another experiment is still refused
    assert publish(builds[1], smoke_data) == 2
    assert "is another experiment than the record" in capsys.readouterr().err
    assert sums(checkout) == before


def test_a_writer_that_waited_on_a_directory_switched_meanwhile_holds_the_new_one(tmp_path):
    dest = tmp_path / "record"
    dest.mkdir()
    (dest / "old").write_text("old")
    entered = threading.Event()

    def write():
        with store.writer(dest, wait=True):  # waits for the publish below, then must lock what is there then
            (dest / "written").write_text(str(os.stat(dest).st_ino))
            entered.set()

    with store.held(dest, exclusive=True):
        waiting = threading.Thread(target=write)
        waiting.start()
        time.sleep(0.5)
        assert not entered.is_set()
        with store.new_directory(dest) as new:
            (new / "new").write_text("new")
    waiting.join(timeout=30)
    assert entered.is_set() and (dest / "written").read_text() == str(os.stat(dest).st_ino)
    assert sorted(p.name for p in dest.iterdir()) == [store.LOCK_FILE, "new", "written"]


def test_a_first_publish_holds_the_records_place_against_a_sweep(builds, smoke_data, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    record = layout.record_path("smoke", root=tmp_path, checksums=D.checksums(smoke_data)).parent
    copy, refused = store.copy_file, []

    def copy_while_a_sweep_tries(source, dest):
        if not refused:
            try:
                with store.writer(record):
                    pass
            except store.Busy as e:
                refused.append(str(e))
        copy(source, dest)

    monkeypatch.setattr(store, "copy_file", copy_while_a_sweep_tries)
    assert publish(builds[0], smoke_data) == 0
    assert refused and f"results directory {record} is in use" in refused[0]
    assert sorted(p.name for p in record.iterdir()) == sorted(files.RECORD_FILES)
    assert publish(builds[1], smoke_data) == 2  # and a refused first publish leaves no directory behind
    shutil.rmtree(record)
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    damaged = Path(shutil.copytree(builds[0], tmp_path / "damaged"))
    (damaged / SOURCE_RECORD).write_text("null")
    assert publish(damaged, smoke_data) == 2 and not (tmp_path / "results" / record.name).exists()
