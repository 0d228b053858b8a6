"""What a results directory holds, and what it says: the sweep's rows, the source net's record, their provenance."""
from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import re
import subprocess
import zipfile
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch

from . import store
from .config import ADDED_FIELDS
from . import data as D
from .model import LAYERS
from .transfer import BASELINE

RESULTS_FILE = "sweep.csv"
PREDICTIONS_FILE = "predictions.npz"  # each run's class predictions on the test images, one byte each
SOURCE_FILE = "source.pt"
SOURCE_RECORD = "source.json"  # the source net's training record, readable without torch
READOUTS_FILE = "readouts.csv"  # the training-free readouts of the grid (ktlib.readouts)
REPO = Path(__file__).resolve().parents[1]  # the checkout ktlib is installed from (pip install -e .)


class RunKey(NamedTuple):
    """Which run a row is: the retained levels n, the images per class k, the trial, and the transfer recipe
    (ktlib.transfer.RECIPES; the n=0 runs, shared by all, are stored under the baseline's)."""
    n: int
    k: int
    trial: int
    recipe: str = BASELINE

    @classmethod
    def of(cls, row: dict) -> "RunKey":
        """The key of a row (a dict with the key's fields, and others)."""
        return cls(*(row[f] for f in cls._fields))


KEY = list(RunKey._fields)
# One row per run, in the order of the committed records' columns.
COLUMNS = ["n", "retained", "recipe", "k", "trial", "seed", "test_accuracy", "train_accuracy", "train_loss", "epochs",
           "stopped_by", "seconds", "trainable_parameters", "source_task_accuracy", "epoch_rule_epochs",
           "epoch_rule_train_accuracy", "git_commit"]
# One row per training-free readout of a sweep's grid (ktlib.readouts).
READOUT_COLUMNS = ["n", "recipe", "k", "trial", "readout", "test_accuracy"]
# Columns of words; every other column holds numbers, these whole ones.
TEXT_COLUMNS = ("retained", "recipe", "stopped_by", "git_commit", "readout")
INTEGER_COLUMNS = ("n", "k", "trial", "seed", "epochs", "trainable_parameters", "epoch_rule_epochs")
# Empty where a run has none: the source task's accuracy is measured only for runs that train copied layers, and
# where the first record's stopping rule would have stopped a run only if it would have stopped it sooner.
OPTIONAL = ("source_task_accuracy", "epoch_rule_epochs", "epoch_rule_train_accuracy")


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
    if "recipe" not in rows and "n" in rows:  # written before recipes existed: the paper's recipe
        rows.insert(int(rows.columns.get_loc("n")) + 2, "recipe", BASELINE)
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
        rows[c] = values.astype("int64") if c in INTEGER_COLUMNS and values.notna().all() else values
    twice = rows.duplicated([c for c in (*KEY, "readout") if c in columns])
    if twice.any():
        raise ResultsError(f"{path}:{row_line(twice)}: a second row for the same run; the file is damaged: "
                           f"{DAMAGED_ROW}")
    return meta, rows, cut


DAMAGED_ROW = "delete that line (the run is done again) or restore the file from a copy"


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

def read_predictions(results_dir: str | os.PathLike, images: int | None = None
                     ) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """(keys, predictions, labels): one row of keys and of predictions (runs, test images) per run, and the
    test images' labels; indices into the target classes. A file of any other shape, or (given `images`) for
    another number of test images, is an error."""
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
    fields = {"key": str, "state_sha256": str, "epochs": int, "history": list}
    wrong = [name for name, kind in fields.items()
             if not isinstance(record, dict) or not isinstance(record.get(name), kind)]
    if wrong:
        raise ResultsError(f"{path} is not a source net's record: {', '.join(wrong)} missing or of the wrong type "
                           f"(it holds {type(record).__name__} {json.dumps(record)[:60]}); delete it")
    return record


def write_source_record(results_dir: str | os.PathLike, record: dict) -> None:
    store.write_bytes(Path(results_dir) / SOURCE_RECORD, json.dumps(record, indent=1).encode("utf-8"))


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
        config = {**ADDED_FIELDS, **(out["config"] or {})}  # a header older than a field has its default
        out["config"] = {k: v for k, v in config.items() if k not in ignore}
        return out
    return differences(part(theirs), part(mine))


# ---------------------------------------------------------------- tables, labels and provenance

def mean_table(rows: pd.DataFrame, value: str = "test_accuracy") -> pd.DataFrame:
    """Mean over trials: one row per n, one column per k."""
    return rows.pivot_table(index="n", columns="k", values=value, aggfunc="mean")


def retained(n: int) -> str:
    """Which layers n retained levels are: 'none', 'C1', 'C1-S2', ..."""
    return "none" if n == 0 else f"{LAYERS[0]}-{LAYERS[n - 1]}" if n > 1 else LAYERS[0]


def training_hours(rows: pd.DataFrame, engine: str) -> float:
    """The runs' training time on one core, in hours, as they recorded it when they were computed: the engine
    trains each group of trials side by side on one thread (ktlib.runs.groups), so a group takes its last run's
    time; the plain path trains one run at a time."""
    if engine == "plain":
        return float(rows.seconds.sum()) / 3600
    group = [c for c in ("variant", "split", "recipe", "n", "k") if c in rows]
    return float(rows.groupby(group).seconds.max().sum()) / 3600


def provenance(rows: pd.DataFrame, commit: str | None = None) -> str:
    """Which of the runs this build computed (they carry its commit) and which it read from the committed record
    (they carry the commit they were computed at), in a sentence."""
    commit = commit or git_commit()
    now = int((rows.git_commit == commit).sum())
    if now == len(rows):
        return f"all {len(rows):,} runs were computed in this build"
    if now == 0:
        return f"all {len(rows):,} runs were read from the committed record"
    return f"{now:,} of the {len(rows):,} runs were computed in this build, the others read from the committed record"


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
