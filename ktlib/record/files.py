"""A sweep's record files: the results (one row per run), the training-free readouts, the test predictions and the
source net, each written whole and read back with every check; a row is made in ktlib.compute.train.row and read
back here (read_results)."""
from __future__ import annotations

import io
import json
import math
import os
import re
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ktlib.compute import readouts
from ktlib.compute.experiment import KEY, Experiment, RunKey
from ktlib.compute.model import Net, build
from ktlib.compute.train import COLUMNS, curve_points
from ktlib.record import store
from ktlib.recipes import SCORES

RESULTS_FILE = "sweep.csv"
PREDICTIONS_FILE = "predictions.npz"  # each run's class predictions on the test images, one byte each
SOURCE_FILE = "source.pt"
SOURCE_RECORD = "source.json"  # the source net's training record, readable without torch
READOUTS_FILE = "readouts.csv"  # the training-free readouts of the grid (ktlib.compute.readouts)
RECORD_FILES = (RESULTS_FILE, SOURCE_RECORD, SOURCE_FILE, PREDICTIONS_FILE, READOUTS_FILE)  # what a record keeps
SCORES_FILE = "scores.csv"  # a sweep with partial recipes: each map's scores per trial (ktlib.compute.maps)
SCORE_COLUMNS = ["n", "k", "trial", "map", *SCORES]
# Columns of words; every other column holds numbers, these whole ones.
TEXT_COLUMNS = ("retained", "recipe", "stopped_by", "git_commit", "readout", "test_curve")
INTEGER_COLUMNS = ("n", "k", "trial", "seed", "epochs", "trainable_parameters", "epoch_rule_epochs")
# Empty where a run has none: the source task's accuracy is measured only for runs that train copied layers, and
# where the first record's stopping rule would have stopped a run only if it would have stopped it sooner.
OPTIONAL = ("source_task_accuracy", "epoch_rule_epochs", "epoch_rule_train_accuracy")
# What a number may be: the accuracies are shares of images, in [0, 1]; every other number column is a count, a
# loss or a time, finite and >= 0, and a whole number no larger than LARGEST (beyond it a float64 cannot hold every
# whole number exactly: no count we write comes near). Anything else is damage, refused on opening.
SHARES = ("test_accuracy", "validation_accuracy", "train_accuracy", "source_task_accuracy",
          "epoch_rule_train_accuracy")
SIGNED = ("saliency", "ablation")  # loss changes, which may be negative: any finite number
# Columns a record made before the validation images existed lacks: read as empty (NaN, ""), so that its numbers
# stay readable and any choice on them is refused (ktlib.analysis.controls.validated).
LATER = {"validation_accuracy": float("nan"), "test_curve": ""}
LARGEST = 2 ** 53
# A results file's header: what a sweep writes in it (ktlib.record.sweep.Sweep.meta), and of what type.
HEADER = {"config": dict, "data_checksums": dict, "source_classes": str, "target_classes": str, "source": dict,
          "git_commit": str, "versions": dict}


class ResultsError(ValueError):
    """A results file is not one, or is damaged."""


def run_keys(rows: pd.DataFrame) -> list[RunKey]:
    """The key of each row, in order."""
    return [RunKey(int(n), int(k), int(t), str(r)) for n, k, t, r in rows[KEY].itertuples(index=False)]


def keys(rows: pd.DataFrame) -> set[RunKey]:
    """The runs a table of rows holds."""
    return set(run_keys(rows))


# ---------------------------------------------------------------- the sweep's file

def parse_results(path: str | os.PathLike, columns: list[str] = COLUMNS) -> tuple[dict, pd.DataFrame, bool]:
    """(metadata, rows, cut) of a results file (or, with its columns, a readouts file); cut: its last row was
    cut short (the file does not end with a newline, as every file ktlib writes does), and is left out of rows.
    Any other damage is an error."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ResultsError(f"{path}: cannot be read ({getattr(e, 'strerror', None) or e})") from None
    first, _, body = text.partition("\n")
    try:
        meta = json.loads(first[2:]) if first.startswith("# ") else None
    except json.JSONDecodeError:
        meta = None
    if not isinstance(meta, dict) or "config" not in meta:
        raise ResultsError(f"{path}: not a ktlib results file (no whole '# {{...}}' metadata line)")
    wrong = [f"{name} is {json.dumps(meta[name])[:40]}" for name, kind in HEADER.items()
             if name in meta and not isinstance(meta[name], kind)]
    if isinstance(meta.get("source"), dict) and not isinstance(meta["source"].get("state_sha256"), str):
        wrong.append("source has no state_sha256")
    if wrong:
        raise ResultsError(f"{path}: its header is damaged ({'; '.join(wrong)}); restore the file from a copy")
    if not body.strip():
        raise ResultsError(f"{path}: no column line after the metadata; the file is damaged")
    cut = not body.endswith("\n") and "\n" in body
    if cut:
        body = body[:body.rindex("\n") + 1]
    try:
        rows = pd.read_csv(io.StringIO(body))
    except pd.errors.ParserError as e:  # a row with more fields than the column line: pandas counts body lines
        found = re.search(r"line (\d+), saw (\d+)", str(e))
        where = f":{int(found.group(1)) + 1}: a row of {found.group(2)} fields" if found else f": {e}"
        raise ResultsError(f"{path}{where}; the file is damaged: {DAMAGED_ROW}") from None
    older = columns is COLUMNS and not any(c in rows for c in LATER)
    if older:
        rows = rows.assign(**LATER)
    missing = [c for c in columns if c not in rows]
    if missing:
        raise ResultsError(f"{path}: no column {missing}")
    incomplete = rows[[c for c in columns if c not in (*OPTIONAL, *(LATER if older else ()), "git_commit")]
                      ].isna().any(axis=1)
    if incomplete.any():
        raise ResultsError(f"{path}:{row_line(incomplete)}: a row with missing values; the file is damaged: "
                           f"{DAMAGED_ROW}")
    for c in (c for c in columns if c not in TEXT_COLUMNS):
        values = pd.to_numeric(rows[c], errors="coerce")
        bad = values.isna() & rows[c].notna()
        if c in INTEGER_COLUMNS:
            bad |= values.notna() & (values % 1 != 0)
        if bad.any():
            raise ResultsError(f"{path}:{row_line(bad)}: {c}={rows[c][bad].iloc[0]!r} is not "
                               f"{'a whole number' if c in INTEGER_COLUMNS else 'a number'}; the file is damaged: "
                               f"{DAMAGED_ROW}")
        high, rule = (1, "a share in [0, 1]") if c in SHARES else (LARGEST, "a whole number in [0, 2**53]") \
            if c in INTEGER_COLUMNS else (math.inf, "a finite number >= 0")
        low, rule = (-math.inf, "a finite number") if c in SIGNED else (0, rule)
        as_float = values.astype("float64")
        outside = values.notna() & ~(as_float.between(low, high) & np.isfinite(as_float))
        if outside.any():
            raise ResultsError(f"{path}:{row_line(outside)}: {c}={plain(rows[c][outside].iloc[0])!r} is not {rule}; "
                               f"the file is damaged: {DAMAGED_ROW}")
        rows[c] = values.astype("int64") if c in INTEGER_COLUMNS and values.notna().all() else values
    if "test_curve" in columns and not older:
        unreadable = ~rows.test_curve.map(readable_curve)
        if unreadable.any():
            raise ResultsError(f"{path}:{row_line(unreadable)}: test_curve={rows.test_curve[unreadable].iloc[0]!r} is "
                               f"not a test curve; the file is damaged: {DAMAGED_ROW}")
    twice = rows.duplicated([c for c in (*KEY, "readout", "map") if c in columns])
    if twice.any():
        raise ResultsError(f"{path}:{row_line(twice)}: a second row for the same run; the file is damaged: "
                           f"{DAMAGED_ROW}")
    return meta, rows, cut


def readable_curve(text) -> bool:
    try:
        return all(0 <= accuracy <= 1 for _, accuracy in curve_points(text))
    except ValueError:
        return False


DAMAGED_ROW = "delete that line (the run is done again) or restore the file from a copy"


def plain(value):
    """A value of a table as Python has it, so that an error shows 7.0, not np.float64(7.0)."""
    return value.item() if isinstance(value, np.generic) else value


def row_line(bad: pd.Series) -> int:
    """The file's line of the first flagged row: the metadata line, the column names, then rows."""
    return int(np.flatnonzero(bad.to_numpy())[0]) + 3


def read_results(path: str | os.PathLike, cut_ok: bool = False) -> tuple[dict, pd.DataFrame]:
    """(metadata, rows) of a results file: a '# ' JSON header line, then CSV. A last row cut short is an
    error, unless cut_ok (it is then left out)."""
    meta, rows, cut = parse_results(path)
    if cut and not cut_ok:
        raise ResultsError(f"{path}: its last row was cut short; run the sweep again to redo that run")
    return meta, rows


def read_readouts(results_dir: str | os.PathLike) -> tuple[dict, pd.DataFrame]:
    """(metadata, rows) of a sweep's training-free readouts (ktlib.compute.readouts); the metadata holds each
    recipe's feature spread per level under "spread"."""
    meta, rows, cut = parse_results(Path(results_dir) / READOUTS_FILE, readouts.COLUMNS)
    if cut:
        raise ResultsError(f"{Path(results_dir) / READOUTS_FILE}: its last row was cut short; delete the file to "
                           f"measure the readouts again")
    return meta, rows


def read_scores(results_dir: str | os.PathLike) -> tuple[dict, pd.DataFrame]:
    """(metadata, rows) of a sweep's map scores: per partly transferred level n, k, trial and map, each score."""
    meta, rows, cut = parse_results(Path(results_dir) / SCORES_FILE, SCORE_COLUMNS)
    if cut:
        raise ResultsError(f"{Path(results_dir) / SCORES_FILE}: its last row was cut short; delete the file to "
                           f"score the maps again")
    return meta, rows


def write_results(path: Path, meta: dict, rows: pd.DataFrame) -> None:
    text = "# " + json.dumps(meta, sort_keys=True) + "\n" + rows.to_csv(index=False, float_format="%.6g")
    store.write_bytes(path, text.encode("utf-8"))


# ---------------------------------------------------------------- the test predictions

def read_predictions(results_dir: str | os.PathLike, images: int | None = None, classes: int | None = None
                     ) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """(keys, predictions, labels): one row of keys and of predictions (runs, test images) per run, and the
    test images' labels; indices into the target classes. A file of any other shape, or (given `images` and
    `classes`) for another number of test images, or with a class index beyond the target classes, is an error."""
    path = Path(results_dir) / PREDICTIONS_FILE
    way_out = "delete it, and the runs it held are done again"
    try:
        with np.load(path, allow_pickle=False) as f:
            keys = pd.DataFrame({name: f[name] for name in KEY})
            predicted, labels = f["predictions"], f["labels"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        why = "not a predictions file ktlib wrote" if "allow_pickle" in str(e) else e  # object arrays, or no npz
        raise ResultsError(f"{path}: cannot be read ({why}); {way_out}") from None
    if not (predicted.ndim == 2 and labels.ndim == 1 and predicted.shape == (len(keys), len(labels))
            and predicted.dtype == labels.dtype == np.uint8):
        raise ResultsError(f"{path}: predictions of shape {predicted.shape} ({predicted.dtype}) for {len(keys)} runs "
                           f"and {labels.shape} labels ({labels.dtype}); expected (runs, test images) of uint8; "
                           f"{way_out}")
    if images is not None and len(labels) != images:
        raise ResultsError(f"{path}: predictions for {len(labels)} test images, this configuration has {images}; "
                           f"{way_out}")
    largest = max(int(predicted.max(initial=0)), int(labels.max(initial=0)))
    if classes is not None and largest >= classes:
        raise ResultsError(f"{path}: class {largest} among its predictions or labels, where this configuration has "
                           f"{classes} target classes (0 to {classes - 1}); {way_out}")
    return keys, predicted, labels


def write_predictions(results_dir: str | os.PathLike, keys: list[RunKey], predictions: list[np.ndarray],
                      labels: np.ndarray) -> None:
    buffer = io.BytesIO()
    columns = {name: np.array([getattr(key, name) for key in keys]) for name in KEY}
    np.savez_compressed(buffer, predictions=np.stack(predictions).astype(np.uint8), labels=labels.astype(np.uint8),
                        **columns)
    store.write_bytes(Path(results_dir) / PREDICTIONS_FILE, buffer.getvalue())


# ---------------------------------------------------------------- the source net's record

def read_source_record(results_dir: str | os.PathLike) -> dict:
    """The source net's training record (classes, accuracy, epochs, per-epoch history)."""
    path = Path(results_dir) / SOURCE_RECORD
    try:
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ResultsError(f"{path} is damaged ({e}); delete it") from None
    fields = {"key": str, "state_sha256": str, "epochs": int, "history": list, "source_config": dict, "classes": str,
              "train_accuracy": float, "held_out_accuracy": float}  # float: a share, in [0, 1]

    def fits(value, kind) -> bool:
        if kind not in (int, float):
            return isinstance(value, kind)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            return False
        return 0 <= value <= 1 if kind is float else value >= 0 and value == int(value)
    wrong = [name for name, kind in fields.items() if not fits(record.get(name), kind)] \
        if isinstance(record, dict) else []
    if wrong or not isinstance(record, dict):
        what = f": {', '.join(wrong)} missing, or of the wrong type or range" if wrong else ""
        raise ResultsError(f"{path} is not a source net's record{what} (it holds {type(record).__name__} "
                           f"{json.dumps(record)[:60]}); delete it")
    return record


def write_source_record(results_dir: str | os.PathLike, record: dict) -> None:
    store.write_bytes(Path(results_dir) / SOURCE_RECORD, json.dumps(record, indent=1).encode("utf-8"))


def load_source(path: Path) -> dict:
    """A saved source net's file: its key, state dict and record (tensors, numbers and words only: a file that
    holds anything else is refused, not run)."""
    way_out = "delete it to train the source net again"
    try:
        saved = torch.load(path, weights_only=True)
    except Exception as e:  # torch raises several kinds for a damaged file
        raise ResultsError(f"{path} cannot be read ({first_sentence(e)}); {way_out}") from None
    if not (isinstance(saved, dict) and isinstance(saved.get("key"), str) and isinstance(saved.get("info"), dict)
            and isinstance(saved.get("state_dict"), dict)):
        raise ResultsError(f"{path} is not a source net ktlib saved (it holds a {type(saved).__name__}, not a key, a "
                           f"state and a record); {way_out}")
    return saved


def first_sentence(error: BaseException) -> str:
    """What torch says of a file it cannot read, without the paragraphs of advice it appends."""
    return re.split(r"(?<=[.:])\s", str(error).strip(), maxsplit=1)[0].rstrip(".:")[:200]


def source_state(path: Path, code_bits: int) -> tuple[Net, dict]:
    """The net a saved source net's file holds, and the file's contents (load_source)."""
    saved, net = load_source(path), build(0, code_bits)
    try:
        net.load_state_dict(saved["state_dict"])
    except (RuntimeError, TypeError, KeyError) as e:  # tensors of other names or shapes
        raise ResultsError(f"{path} holds no net of this configuration's shape ({first_sentence(e)}); "
                           f"delete it to train the source net again") from None
    return net, saved


def saved_source(exp: Experiment) -> tuple[Net, dict] | None:
    """The source net results_dir holds (check_directory has found it to be this configuration's), and its record
    with the held-out accuracy left for the caller to measure; None when there is none."""
    path = Path(exp.cfg.results_dir) / SOURCE_FILE
    if not path.exists():
        return None
    net, saved = source_state(path, exp.cfg.code_bits)
    return net, saved["info"]


def save_source(exp: Experiment, net: Net, info: dict, written: bool) -> None:
    """Write the source net's record, and (unless `written`: it was loaded from there) the net itself, which must be
    the one every file of the directory was made with."""
    where = Path(exp.cfg.results_dir)
    if not written:
        for record, sha in recorded_sources(where):
            if sha != info["state_sha256"]:
                raise RuntimeError(f"the source net trained now (sha256 {info['state_sha256'][:12]}) is not the one "
                                   f"{record} was made with ({sha[:12]}), although the configuration is the same "
                                   f"(another machine rounds differently?); nothing was written. Choose another "
                                   f"results_dir.")
        buffer = io.BytesIO()
        torch.save({"key": exp.source_key(), "state_dict": net.state_dict(), "info": info}, buffer)
        store.write_bytes(where / SOURCE_FILE, buffer.getvalue())  # in memory first: torch.save hides a full disk's error
    write_source_record(where, {"key": exp.source_key(), "source_config": exp.source_config(), **info})


def recorded_sources(results_dir: str | os.PathLike) -> list[tuple[Path, str]]:
    """Each file in results_dir that names the source net its contents were made with, and that net's sha256."""
    where, out = Path(results_dir), []
    if (where / RESULTS_FILE).exists():
        out.append((where / RESULTS_FILE, read_results(where / RESULTS_FILE, cut_ok=True)[0]["source"]["state_sha256"]))
    if (where / SOURCE_RECORD).exists():
        out.append((where / SOURCE_RECORD, read_source_record(where)["state_sha256"]))
    if (where / READOUTS_FILE).exists():
        out.append((where / READOUTS_FILE, read_readouts(where)[0]["source"]["state_sha256"]))
    if (where / SCORES_FILE).exists():
        out.append((where / SCORES_FILE, read_scores(where)[0]["source"]["state_sha256"]))
    return out
