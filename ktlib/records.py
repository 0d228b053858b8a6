"""The results files: every path and file name of a sweep's directory and of a study, how each file is read and
written, and whether a directory holds this experiment's runs."""
from __future__ import annotations

import hashlib
import io
import json
import math
import os
import platform
import re
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import data as D
from . import store
from .config import Config
from .experiment import COLUMNS, DETERMINED, KEY, Experiment, RunKey, grid
from .model import LAYERS, Net, build

RESULTS_FILE = "sweep.csv"
PREDICTIONS_FILE = "predictions.npz"  # each run's class predictions on the test images, one byte each
SOURCE_FILE = "source.pt"
SOURCE_RECORD = "source.json"  # the source net's training record, readable without torch
READOUTS_FILE = "readouts.csv"  # the training-free readouts of the grid (ktlib.readouts)
RECORD_FILES = (RESULTS_FILE, SOURCE_RECORD, SOURCE_FILE, PREDICTIONS_FILE, READOUTS_FILE)  # what a record keeps
STUDY_DIR = "study"  # a study's sweeps, under its profile's results directory: study/<part>/split-<s>/
ORDERED = "classes-"  # the parts of the breadth study (ktlib.breadth), whose sweeps are nesting orders: order-<o>/
REPO = Path(__file__).resolve().parents[1]  # the checkout ktlib is installed from (pip install -e .)
# One row per training-free readout of a sweep's grid (ktlib.readouts).
READOUT_COLUMNS = ["n", "recipe", "k", "trial", "readout", "test_accuracy"]
# Columns of words; every other column holds numbers, these whole ones.
TEXT_COLUMNS = ("retained", "recipe", "stopped_by", "git_commit", "readout")
INTEGER_COLUMNS = ("n", "k", "trial", "seed", "epochs", "trainable_parameters", "epoch_rule_epochs")
# Empty where a run has none: the source task's accuracy is measured only for runs that train copied layers, and
# where the first record's stopping rule would have stopped a run only if it would have stopped it sooner.
OPTIONAL = ("source_task_accuracy", "epoch_rule_epochs", "epoch_rule_train_accuracy")
# What a number may be: the accuracies are shares of images, in [0, 1]; every other number column is a count, a
# loss or a time, finite and >= 0, and a whole number no larger than LARGEST (beyond it a float64 cannot hold every
# whole number exactly: no count we write comes near). Anything else is damage, refused on opening.
SHARES = ("test_accuracy", "train_accuracy", "source_task_accuracy", "epoch_rule_train_accuracy")
LARGEST = 2 ** 53
# A results file's header: what a sweep writes in it (ktlib.sweep.Sweep.meta), and of what type.
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


def data_tag(checksums: dict | None) -> str:
    """How a record's name says which data made it: nothing for the record's subset (its published sums), else
    "data-" and 8 hex digits of the data's sha256 sums, such as the full official set's: another experiment."""
    if checksums is None or checksums == D.SUBSET_SHA256:
        return ""
    return "data-" + hashlib.sha256(json.dumps(checksums, sort_keys=True).encode()).hexdigest()[:8]


def record_path(profile: str, engine: str = "native", root: str | os.PathLike = REPO,
                checksums: dict | None = None) -> Path:
    """The committed results file of a profile's grid: results/<profile>/, with -<engine> for an engine other
    than the default and -<data_tag> for data other than the record's subset (`checksums`: the data's sha256 sums),
    in the checkout `root` (by default the one ktlib runs from)."""
    name = "-".join([profile] + [engine] * (engine != "native") + [t for t in [data_tag(checksums)] if t])
    return Path(root) / "results" / name / RESULTS_FILE


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
    missing = [c for c in columns if c not in rows]
    if missing:
        raise ResultsError(f"{path}: no column {missing}")
    incomplete = rows[[c for c in columns if c not in (*OPTIONAL, "git_commit")]].isna().any(axis=1)
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
        as_float = values.astype("float64")
        outside = values.notna() & ~(as_float.between(0, high) & np.isfinite(as_float))
        if outside.any():
            raise ResultsError(f"{path}:{row_line(outside)}: {c}={plain(rows[c][outside].iloc[0])!r} is not {rule}; "
                               f"the file is damaged: {DAMAGED_ROW}")
        rows[c] = values.astype("int64") if c in INTEGER_COLUMNS and values.notna().all() else values
    twice = rows.duplicated([c for c in (*KEY, "readout") if c in columns])
    if twice.any():
        raise ResultsError(f"{path}:{row_line(twice)}: a second row for the same run; the file is damaged: "
                           f"{DAMAGED_ROW}")
    return meta, rows, cut


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
    """(metadata, rows) of a sweep's training-free readouts (ktlib.readouts); the metadata holds each
    recipe's feature spread per level under "spread"."""
    meta, rows, cut = parse_results(Path(results_dir) / READOUTS_FILE, READOUT_COLUMNS)
    if cut:
        raise ResultsError(f"{Path(results_dir) / READOUTS_FILE}: its last row was cut short; delete the file to "
                           f"measure the readouts again")
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
    return out


# ---------------------------------------------------------------- the same experiment?

EXPERIMENT = ("config", "data_checksums", "source_classes", "target_classes")  # what a header says of it


def differences(theirs: dict, mine: dict, prefix: str = "") -> list[str]:
    """Each field whose value differs, as 'name (X there, Y now)'; nested dicts by their dotted names."""
    out = []
    for key in sorted(set(theirs) | set(mine), key=str):
        a, b = theirs.get(key), mine.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key} ({a!r} there, {b!r} now)")
    return out


def experiment_differences(theirs: dict, mine: dict, ignore: tuple[str, ...] = ()) -> list[str]:
    """What makes two results files' headers different experiments; `ignore`: config fields allowed to differ."""
    def part(meta: dict) -> dict:
        out = {key: meta.get(key) for key in EXPERIMENT}
        out["config"] = {k: v for k, v in (out["config"] or {}).items() if k not in ignore}
        return out
    return differences(part(theirs), part(mine))


def whole_header(path: Path, meta: dict) -> dict:
    """meta, when it holds every field a sweep writes in a header (HEADER); else one error naming what it lacks."""
    missing = [name for name in HEADER if name not in meta]
    if missing:
        raise ResultsError(f"{path}: its header has no {', '.join(missing)}; a sweep writes them all, so the file "
                           f"is damaged: restore it from a copy")
    return meta


def header_config(path: Path, meta: dict, **where) -> Config:
    """The configuration a results file's header records (with `where`: data_dir, results_dir), or one error
    naming the file."""
    try:
        return Config.of_experiment({**meta["config"], **where})
    except (TypeError, ValueError) as e:
        raise ResultsError(f"{path}: its header's config is not one this ktlib can run ({e})") from None


def check_directory(exp: Experiment) -> tuple[dict, pd.DataFrame, bool] | None:
    """Refuse a results directory that holds another experiment's files, naming the fields that differ.

    Reads only: a refused run leaves the directory as it was. Returns the results file's (metadata, rows,
    whether its last row was cut short), or None when there is none yet."""
    where, images = Path(exp.cfg.results_dir), exp.cfg.n_classes * exp.cfg.test_per_class
    mine, planned, source_config, source_key = exp.record(), set(grid(exp.cfg)), exp.source_config(), exp.source_key()
    found = None
    path = where / RESULTS_FILE
    if path.exists():
        found = parse_results(path)
        whole_header(path, found[0])
        diff = experiment_differences(found[0], mine)
        if diff:
            raise RuntimeError(f"{path} holds runs of another experiment: {'; '.join(diff)}. "
                               f"Choose another results_dir, or delete it.")
        found_keys = run_keys(found[1])
        outside = pd.Series([key not in planned for key in found_keys], dtype=bool)
        if outside.any():
            raise ResultsError(f"{path}:{row_line(outside)}: a run outside this configuration's grid "
                               f"({found_keys[int(outside.idxmax())]}); the file is damaged: {DAMAGED_ROW}")
        fixed = pd.DataFrame([exp.determined(key) for key in found_keys], columns=list(DETERMINED), dtype=object)
        for column in DETERMINED:
            other = pd.Series(found[1][column].to_numpy() != fixed[column].to_numpy(), dtype=bool)
            if other.any():
                i = int(other.idxmax())
                there, here = plain(found[1][column].iloc[i]), fixed[column].iloc[i]
                raise ResultsError(f"{path}:{row_line(other)}: {column}={there!r}, where this experiment's run "
                                   f"{found_keys[i]} has {here!r}: the row is another experiment's, or damaged: "
                                   f"{DAMAGED_ROW}")
    if (where / PREDICTIONS_FILE).exists():
        read_predictions(where, images, exp.cfg.n_classes)
    if (where / READOUTS_FILE).exists():
        diff = experiment_differences(whole_header(where / READOUTS_FILE, read_readouts(where)[0]), mine)
        if diff:
            raise RuntimeError(f"{where / READOUTS_FILE} holds readouts of another experiment: {'; '.join(diff)}. "
                               f"Choose another results_dir, or delete it.")
    record = where / SOURCE_RECORD
    if record.exists():
        diff = differences(read_source_record(where)["source_config"], source_config)
        if diff:
            raise RuntimeError(f"{record} is the record of a source net trained under another configuration: "
                               f"{'; '.join(diff)}. Choose another results_dir, or delete it.")
    net = where / SOURCE_FILE
    if net.exists() and load_source(net).get("key") != source_key:
        raise RuntimeError(f"{net} was trained under another configuration or data; "
                           f"choose another results_dir, or delete it")
    return found


# ---------------------------------------------------------------- a study's sweeps

def study_root(results_dir: str | os.PathLike) -> Path:
    """Where a profile's study keeps its sweeps, in the results directory of its paper sweep."""
    return Path(results_dir) / STUDY_DIR


def sweep_dir(root: str | os.PathLike, part: str, split: int) -> Path:
    """The directory of one sweep of a study: <root>/<part>/split-<split>, or order-<order> in the breadth study's
    parts (its `split` is the nesting order)."""
    return Path(root) / part / f"{'order' if part.startswith(ORDERED) else 'split'}-{split}"


def study_sweeps(root: str | os.PathLike, parts: list[str] = ()) -> list[tuple[str, int, Path]]:
    """(part, split or order, directory) of every finished-or-started sweep under a study's root, in the order of
    `parts` (others after them), then by split."""
    out = []
    for path in sorted(Path(root).glob(f"*/*-*/{RESULTS_FILE}")):
        part, number = path.parent.parent.name, path.parent.name.rsplit("-", 1)[1]
        if number.isdigit() and path.parent == sweep_dir(root, part, int(number)):
            out.append((part, int(number), path.parent))
    order = list(parts)
    return sorted(out, key=lambda v: (order.index(v[0]) if v[0] in order else len(order), v[1]))


def study_runs(root: str | os.PathLike, parts: list[str] = ()) -> pd.DataFrame:
    """Every run of a study, tidy: one row per run, with its part (`variant`) and split."""
    frames = [read_results(where / RESULTS_FILE)[1].assign(variant=part, split=split)
              for part, split, where in study_sweeps(root, parts)]
    if not frames:
        raise FileNotFoundError(f"{root} holds no study results")
    return pd.concat(frames, ignore_index=True)


def study_readouts(root: str | os.PathLike, parts: list[str] = ()) -> pd.DataFrame:
    """Every training-free readout of a study, tidy, with its part (`variant`) and split."""
    frames = [read_readouts(where)[1].assign(variant=part, split=split)
              for part, split, where in study_sweeps(root, parts) if (where / READOUTS_FILE).exists()]
    if not frames:
        raise FileNotFoundError(f"{root} holds no readouts")
    return pd.concat(frames, ignore_index=True)


def study_spreads(root: str | os.PathLike, parts: list[str]) -> pd.DataFrame:
    """How much each level's output varies from image to image (ktlib.readouts.spread), per split and recipe, in
    the sweeps of these parts."""
    out = []
    for part, split, where in study_sweeps(root, parts):
        if part in parts and (where / READOUTS_FILE).exists():
            for recipe, values in read_readouts(where)[0]["spread"].items():
                out += [{"split": split, "recipe": recipe, "n": n, "level": "pixels" if n == 0 else LAYERS[n - 1],
                         "spread": value} for n, value in enumerate(values)]
    return pd.DataFrame(out).drop_duplicates(["split", "recipe", "n"], ignore_index=True)


def study_sources(root: str | os.PathLike, parts: list[str] = ()) -> pd.DataFrame:
    """Each sweep's source net: classes, epochs, training and held-out accuracy."""
    out = []
    for part, split, where in study_sweeps(root, parts):
        r = read_source_record(where)
        meta, _ = read_results(where / RESULTS_FILE)
        out.append({"variant": part, "split": split, "source": r["classes"], "target": meta["target_classes"],
                    "epochs": r["epochs"], "train_accuracy": r["train_accuracy"],
                    "held_out_accuracy": r["held_out_accuracy"], "state_sha256": r["state_sha256"]})
    return pd.DataFrame(out)


def study_predictions(root: str | os.PathLike, part: str) -> dict[int, tuple[pd.DataFrame, object, object, str]]:
    """Per split of a part: (keys, predictions, labels, target classes) of its runs' test predictions."""
    out = {}
    for p, split, where in study_sweeps(root, [part]):
        if p == part and (where / PREDICTIONS_FILE).exists():
            meta, _ = read_results(where / RESULTS_FILE)
            out[split] = (*read_predictions(where), meta["target_classes"])
    return out


def study_provenance(root: str | os.PathLike, parts: list[str] = ()) -> pd.DataFrame:
    """Per sweep of a study: the commit, split, classes, protocol, source net and versions that made it."""
    out = {}
    for part, split, where in study_sweeps(root, parts):
        meta, _ = read_results(where / RESULTS_FILE)
        out[str(where.relative_to(root))] = {
            "git commit": meta["git_commit"], "split": meta["config"]["split"],
            "source classes": meta["source_classes"], "target classes": meta["target_classes"],
            "code scheme": meta["config"]["code_scheme"], "stopping": meta["config"]["stopping"],
            "source net sha256": meta["source"]["state_sha256"][:16] + "...",
            "torch": meta["versions"]["torch"], "engine": meta["config"]["engine"]}
    return pd.DataFrame(out).T


# ---------------------------------------------------------------- provenance

def git_commit() -> str:
    """HEAD of the checkout ktlib runs from, marked -dirty when the code that makes the numbers differs from it.

    Only ktlib/ and the lock file count: the notebooks and results files are rewritten by the very build
    that records this."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--",
                                ":(top)ktlib", ":(top)requirements.lock"], cwd=here,
                               capture_output=True, text=True, check=True).stdout.strip()
        return head + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def older_commit(commit: str, than: str, root: str | os.PathLike = ".") -> bool:
    """Whether `commit` comes strictly before `than` in the history of the checkout `root` (False when git
    cannot tell, as for an unknown commit)."""
    a, b = commit.removesuffix("-dirty"), than.removesuffix("-dirty")
    if a == b:
        return False
    try:
        found = subprocess.run(["git", "merge-base", "--is-ancestor", a, b], cwd=root, capture_output=True)
        return found.returncode == 0
    except OSError:
        return False


def versions() -> dict:
    """The versions of Python and the packages that compute the numbers."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version(), "platform": platform.platform(),
           "torch_threads": torch.get_num_threads()}
    for pkg in ("ktlib", "torch", "numpy", "pandas"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out
