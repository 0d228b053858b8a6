"""A damaged results directory is refused when it is opened, before any work, naming the file and line and a way
out; and nothing in it is rewritten."""
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import dry_run, fingerprint

from ktlib import cli
from ktlib.compute import train
from ktlib.record import files


@pytest.fixture(scope="module")
def finished(smoke_data, tmp_path_factory) -> Path:
    """A finished smoke sweep (two runs: n=0 and n=5), made once for these tests."""
    where = tmp_path_factory.mktemp("finished") / "results"
    assert cli.main([*dry_run(smoke_data, where), "--no-progress"]) == 0
    return where


def damaged(finished: Path, tmp_path: Path, name: str, change) -> Path:
    """A copy of the finished directory whose file `name` `change` rewrote (text for CSV, bytes otherwise)."""
    where = Path(shutil.copytree(finished, tmp_path / "results"))
    path = where / name
    if name.endswith(".csv"):
        lines = path.read_text().splitlines(keepends=True)
        path.write_text("".join(change(lines)))
    else:
        path.write_bytes(change(path.read_bytes()))
    return where


def cell(line: str, column: str, value: str) -> str:
    """line with `column`'s field set to value (a line of sweep.csv, whose column order is COLUMNS)."""
    fields = line.rstrip("\n").split(",")
    fields[train.COLUMNS.index(column)] = value
    return ",".join(fields) + "\n"


def npz(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


ROWS = {  # the change to sweep.csv, and what the error says after "sweep.csv:<line>: "
    "a word for a number": (lambda ls: ls[:3] + [cell(ls[3], "test_accuracy", "abc")], 4,
                            "test_accuracy='abc' is not a number"),
    "a word for n": (lambda ls: ls[:2] + [cell(ls[2], "n", "x")] + ls[3:], 3, "n='x' is not a whole number"),
    "a row twice": (lambda ls: ls + [ls[3]], 5, "a second row for the same run"),
    "k outside the grid": (lambda ls: ls[:3] + [cell(ls[3], "k", "99")], 4,
                           "a run outside this configuration's grid (RunKey(n="),
    "an extra field": (lambda ls: ls[:3] + [ls[3].rstrip("\n") + ",extra\n"], 4,
                       f"a row of {len(train.COLUMNS) + 1} fields"),
}


@pytest.mark.parametrize("case", ROWS)
def test_a_damaged_row_is_refused_naming_its_line_before_any_work(finished, tmp_path, capsys, smoke_data, case):
    change, line, says = ROWS[case]
    where = damaged(finished, tmp_path, files.RESULTS_FILE, change)
    before = fingerprint(where)
    assert cli.main([*dry_run(smoke_data, where), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"{where / files.RESULTS_FILE}:{line}: {says}" in err, err
    assert "delete that line (the run is done again)" in err and (case != "k outside the grid" or "k=99" in err)
    assert fingerprint(where) == before


PREDICTIONS = {
    "the wrong shape": (lambda b: npz(**{**dict(np.load(io.BytesIO(b))), "predictions": np.zeros((2, 3), np.uint8)}),
                        "predictions of shape (2, 3) (uint8) for 2 runs"),
    "cut short": (lambda b: b[: len(b) // 2], "cannot be read"),
    "garbage": (lambda b: b"garbage" * 10, "cannot be read (not a predictions file ktlib wrote)"),
    "pickled objects": (lambda b: npz(**{**dict(np.load(io.BytesIO(b))), "predictions": np.array([{}], dtype=object)}),
                        "cannot be read (not a predictions file ktlib wrote)"),
}


@pytest.mark.parametrize("case", PREDICTIONS)
def test_damaged_predictions_are_refused_naming_the_file_before_any_work(finished, tmp_path, capsys, smoke_data,
                                                                          case):
    change, says = PREDICTIONS[case]
    where = damaged(finished, tmp_path, files.PREDICTIONS_FILE, change)
    before = fingerprint(where)
    assert cli.main([*dry_run(smoke_data, where), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"{where / files.PREDICTIONS_FILE}: {says}" in err and "delete it, and the runs it held" in err, err
    assert fingerprint(where) == before


def test_predictions_for_another_number_of_test_images_are_refused(finished, tmp_path, capsys, smoke_data):
    where = damaged(finished, tmp_path, files.PREDICTIONS_FILE, lambda b: npz(**{
        **dict(np.load(io.BytesIO(b))), "predictions": np.zeros((2, 7), np.uint8), "labels": np.zeros(7, np.uint8)}))
    assert cli.main([*dry_run(smoke_data, where), "--no-progress"]) == 2
    assert "predictions for 7 test images, this configuration has 200" in capsys.readouterr().err


def header(change):
    """sweep.csv's header, changed."""
    def edit(lines: list[str]) -> list[str]:
        meta = json.loads(lines[0][2:])
        change(meta)
        return ["# " + json.dumps(meta) + "\n", *lines[1:]]
    return edit


def saved_torch(value) -> bytes:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


SOURCES_AND_HEADERS = {  # file, its change, and what the error says after the file's path
    "a header without a source": (files.RESULTS_FILE, header(lambda m: m.pop("source")),
                                  ": its header has no source"),
    "a header whose source is null": (files.RESULTS_FILE, header(lambda m: m.update(source=None)),
                                      ": its header is damaged (source is null)"),
    "a header whose config is a list": (files.RESULTS_FILE, header(lambda m: m.update(config=[1])),
                                        ": its header is damaged (config is [1])"),
    "source.json whose source_config is a list": (
        files.SOURCE_RECORD, lambda b: json.dumps({**json.loads(b), "source_config": [1]}).encode(),
        " is not a source net's record: source_config missing, or of the wrong type"),
    "source.pt holding a list": (files.SOURCE_FILE, lambda b: saved_torch([1, 2]),
                                 " is not a source net ktlib saved (it holds a list"),
    "source.pt holding pickled code": (files.SOURCE_FILE, lambda b: saved_torch({"key": fingerprint}),
                                       " cannot be read"),
}


@pytest.mark.parametrize("case", SOURCES_AND_HEADERS)
def test_a_damaged_header_or_source_file_is_refused_on_resume_naming_it(finished, tmp_path, capsys, smoke_data, case):
    name, change, says = SOURCES_AND_HEADERS[case]
    where = damaged(finished, tmp_path, name, change)
    before = fingerprint(where)
    assert cli.main([*dry_run(smoke_data, where), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"{where / name}{says}" in err, err
    assert fingerprint(where) == before
