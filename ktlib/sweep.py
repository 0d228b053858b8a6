"""The paper's experiment: one config, the source net, and the resumable n x k x trial sweep."""
from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import io
import json
import math
import os
import platform
import queue
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm  # plain text bars: they also read well in executed notebooks

from . import data as D
from . import engine, native, store
from .model import LAYERS, build, connections, free_parameters, state_hash, target_codes, training_flops
from .train import Converged, ReachAccuracy, evaluate, train
from .paths import choose, launch_dir
from .transfer import check_levels, is_integer, transfer

RESULTS_FILE = "sweep.csv"
SOURCE_FILE = "source.pt"
SOURCE_RECORD = "source.json"  # the source net's training record, readable without torch
RESULTS_DIR_ENV = "KTLIB_RESULTS_DIR"
REPO = Path(__file__).resolve().parents[1]  # the checkout ktlib is installed from (pip install -e .)
PROFILES = ("paper", "smoke")
# ktlib.engine with its C kernels (the default) or its PyTorch ones, or train.train one run at a time
ENGINES = ("native", "batched", "plain")
COLUMNS = ["n", "retained", "k", "trial", "seed", "test_accuracy", "train_accuracy", "train_loss",
           "epochs", "stopped_by", "seconds", "trainable_parameters", "git_commit"]


@dataclass
class Config:
    """Every knob of the experiment; field names are the notebooks' papermill parameters."""
    seed: int = 0
    data_dir: str | None = None            # None: $KTLIB_DATA_DIR, then ./data/emnist (see ktlib.paths)
    results_dir: str | None = None         # None: $KTLIB_RESULTS_DIR, then ./results/<profile>
    profile: str = "paper"
    # classes and codes
    n_classes: int = 20
    source_chars: str | None = None        # None: drawn by seed among classes with enough images
    target_chars: str | None = None
    code_bits: int = 20
    code_scheme: str = "random"            # or "one-of-n" (needs code_bits == n_classes)
    # source net: trained until it reaches the paper's training accuracy
    source_per_class: int = 400
    source_accuracy: float = 0.9438
    source_max_epochs: int = 100
    # target nets: the grid, each run trained to convergence
    levels: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4, 5])
    sizes: list[int] = field(default_factory=lambda: [1, 5, 10, 20, 40])
    trials: int = 5
    test_per_class: int = 50
    max_epochs: int = 1000
    patience: int = 20
    min_improvement: float = 0.01
    loss_floor: float = 1e-3
    # optimiser
    lr: float = 1e-3
    batch_size: int = 32
    # how the runs are computed: the engine's numbers equal the plain path's within rounding, not bit for bit
    engine: str = "native"
    workers: int | None = None             # engine threads, one core each; None: the usable cores

    def __post_init__(self):
        """Refuse, before any work, anything that could fail later; make every path absolute."""
        _choice("profile", self.profile, PROFILES)
        _choice("engine", self.engine, ENGINES)
        _choice("code_scheme", self.code_scheme, ("random", "one-of-n"))
        self.seed = _integer("seed", self.seed, 0)
        for name in ("n_classes", "code_bits", "source_per_class", "source_max_epochs", "trials", "test_per_class",
                     "max_epochs", "patience", "batch_size"):
            setattr(self, name, _integer(name, getattr(self, name), 1))
        self.source_accuracy = _number("source_accuracy", self.source_accuracy, 0, 1, "in (0, 1]", low_open=True)
        self.min_improvement = _number("min_improvement", self.min_improvement, 0, 1, "in [0, 1)", high_open=True)
        self.loss_floor = _number("loss_floor", self.loss_floor, 0, math.inf, ">= 0")
        self.lr = _number("lr", self.lr, 0, math.inf, "> 0", low_open=True)
        for name in ("source_chars", "target_chars"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), str):
                raise ValueError(f"{name} must be a string of characters or None, got {getattr(self, name)!r}")
        self.levels = sorted({check_levels(n) for n in self.levels})
        if not self.levels or not self.sizes or not all(is_integer(k) and k >= 1 for k in self.sizes):
            raise ValueError(f"levels and sizes must be non-empty, sizes integers >= 1; got {self.levels}, {self.sizes}")
        self.sizes = sorted({int(k) for k in self.sizes})
        if self.workers is not None:
            self.workers = _integer("workers", self.workers, 1)
        if self.code_scheme == "one-of-n" and self.code_bits != self.n_classes:
            raise ValueError(f"code_bits must equal n_classes ({self.n_classes}) for one-of-N codes, got {self.code_bits}")
        if self.code_scheme == "random" and self.n_classes > 2 ** self.code_bits:
            raise ValueError(f"code_bits={self.code_bits} cannot give {self.n_classes} distinct codes")
        if self.engine == "native":  # what kernels.c is built for
            if self.batch_size > native.MAX_BATCH:
                raise ValueError(f"batch_size={self.batch_size}: the native engine takes batches of at most "
                                 f"{native.MAX_BATCH}; use engine='batched' or 'plain'")
            if self.code_bits != native.CODE_BITS:
                raise ValueError(f"code_bits={self.code_bits}: the native engine is built for {native.CODE_BITS} "
                                 f"code bits; use engine='batched' or 'plain'")
        self.data_dir = str(D.data_dir_path(self.data_dir))
        self.results_dir = str(choose(self.results_dir, RESULTS_DIR_ENV, Path("results") / self.profile))

    @classmethod
    def for_profile(cls, profile: str = "paper", **overrides) -> "Config":
        """The paper's protocol, or `smoke`: the same pipeline shrunk to seconds."""
        base = {"smoke": dict(source_per_class=40, source_max_epochs=2, levels=[0, 5], sizes=[1],
                              trials=1, test_per_class=10, max_epochs=30)}.get(profile, {})
        return cls(profile=profile, **{**base, **overrides})

    @classmethod
    def for_notebook(cls, profile: str, seed: int, data_dir: str | None, results_dir: str | None,
                     engine: str) -> "Config":
        """A notebook's papermill parameters as a Config. Their paths, and the defaults, are taken from the
        directory papermill or Jupyter was started in, not from the kernel's working directory (ktlib.paths)."""
        _choice("profile", profile, PROFILES)
        base = launch_dir()
        return cls.for_profile(profile, seed=seed, engine=engine,
                               data_dir=str(choose(data_dir, D.DATA_DIR_ENV, D.DEFAULT_DATA_DIR, base)),
                               results_dir=str(choose(results_dir, RESULTS_DIR_ENV, Path("results") / profile, base)))

    def worker_count(self) -> int:
        """The engine's worker threads: `workers`, else the cores this process may use."""
        if self.workers:
            return int(self.workers)
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1

    def experiment(self) -> dict:
        """The fields that determine the numbers (not where files live, nor how many cores compute them)."""
        d = dataclasses.asdict(self)
        for where in ("data_dir", "results_dir", "workers"):
            d.pop(where)
        return d


def _choice(name: str, value, allowed: tuple) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")


def _integer(name: str, value, low: int) -> int:
    if not is_integer(value) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _number(name: str, value, low: float, high: float, rule: str, low_open=False, high_open=False) -> float:
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) \
        and math.isfinite(value) and (low < value if low_open else low <= value) \
        and (value < high if high_open else value <= high)
    if not ok:
        raise ValueError(f"{name} must be a number {rule}, got {value!r}")
    return value if isinstance(value, (int, float)) else value.item()


def record_path(profile: str, engine: str = "native") -> Path:
    """The committed results file of a profile's grid: results/<profile>/, results/<profile>-<engine>/ for
    an engine other than the default, in the checkout ktlib runs from."""
    return REPO / "results" / (profile if engine == "native" else f"{profile}-{engine}") / RESULTS_FILE


def derive_seed(seed: int, *keys: int) -> int:
    """An independent 31-bit seed for each purpose, so adding a purpose never shifts the others."""
    return int(np.random.SeedSequence([seed, *keys]).generate_state(1)[0] >> 1)


_NET = build(0)
CONNECTIONS, FREE_PARAMETERS = connections(_NET), free_parameters(_NET)  # per layer, counted from the model

# purposes for derive_seed
SPLIT, SOURCE_DATA, SOURCE_INIT, SOURCE_CODES, TARGET_CODES, TEST_DATA, TRIAL = range(7)


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


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version(), "platform": platform.platform(),
           "torch_threads": torch.get_num_threads()}
    for pkg in ("ktlib", "torch", "numpy", "pandas"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


# ---------------------------------------------------------------- the experiment's pieces

@dataclass
class Experiment:
    """Data and class split fixed by a config: everything the runs share."""
    cfg: Config
    data: D.Emnist
    split: D.ClassSplit
    checksums: dict

    @classmethod
    def load(cls, cfg: Config) -> "Experiment":
        path = D.resolve_data_dir(cfg.data_dir)
        data = D.load(path)
        split = D.split_classes(data, derive_seed(cfg.seed, SPLIT), cfg.n_classes, cfg.source_per_class,
                                max(cfg.sizes), cfg.test_per_class, cfg.source_chars, cfg.target_chars)
        return cls(cfg, data, split, D.checksums(path))

    def chars(self, role: str) -> str:
        return "".join(self.data.mapping[c] for c in getattr(self.split, role))

    def codes(self, role: str) -> torch.Tensor:
        purpose = SOURCE_CODES if role == "source" else TARGET_CODES
        return target_codes(self.cfg.n_classes, self.cfg.code_bits, derive_seed(self.cfg.seed, purpose),
                            self.cfg.code_scheme)

    def source_set(self) -> D.Subset:
        return D.draw(self.data.train, self.split.source, self.cfg.source_per_class,
                      derive_seed(self.cfg.seed, SOURCE_DATA))

    def test_set(self) -> D.Subset:
        return D.draw(self.data.test, self.split.target, self.cfg.test_per_class,
                      derive_seed(self.cfg.seed, TEST_DATA))

    def trial_set(self, k: int, trial: int) -> tuple[D.Subset, int]:
        """The k-per-class training set of one trial and that trial's seed (shared by every n)."""
        seed = derive_seed(self.cfg.seed, TRIAL, k, trial)
        return D.draw(self.data.train, self.split.target, k, seed), seed

    def source_config(self) -> dict:
        """Everything that determines the source net: its fields of the config, its classes, the data."""
        c = self.cfg
        return dict(seed=c.seed, n_classes=c.n_classes, code_bits=c.code_bits, code_scheme=c.code_scheme,
                    source_per_class=c.source_per_class, source_accuracy=c.source_accuracy,
                    source_max_epochs=c.source_max_epochs, lr=c.lr, batch_size=c.batch_size,
                    source=self.chars("source"), checksums=self.checksums)

    def source_key(self) -> str:
        return hashlib.sha256(json.dumps(self.source_config(), sort_keys=True).encode()).hexdigest()

    def record(self) -> dict:
        """What a results file's header says about the experiment, for the same-experiment check."""
        return {"config": self.cfg.experiment(), "data_checksums": self.checksums,
                "source_classes": self.chars("source"), "target_classes": self.chars("target")}


def tensors(s: D.Subset) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(s.x), torch.from_numpy(s.y)


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


def check_directory(exp: Experiment) -> tuple[dict, pd.DataFrame, bool] | None:
    """Refuse a results directory that holds another experiment's files, naming the fields that differ.

    Reads only: a refused run leaves the directory as it was. Returns the results file's (metadata, rows,
    whether its last row was cut short), or None when there is none yet."""
    where = Path(exp.cfg.results_dir)
    found = None
    path = where / RESULTS_FILE
    if path.exists():
        found = parse_results(path)
        diff = differences({k: found[0].get(k) for k in exp.record()}, exp.record())
        if diff:
            raise RuntimeError(f"{path} holds runs of another experiment: {'; '.join(diff)}. "
                               f"Choose another results_dir, or delete it.")
    record = where / SOURCE_RECORD
    if record.exists():
        saved = read_source_record(where)
        if "source_config" in saved:
            diff = differences(saved["source_config"], exp.source_config())
        else:  # written before the record kept its configuration
            diff = [] if saved.get("key") == exp.source_key() else ["the source net's key"]
        if diff:
            raise RuntimeError(f"{record} is the record of a source net trained under another configuration: "
                               f"{'; '.join(diff)}. Choose another results_dir, or delete it.")
    net = where / SOURCE_FILE
    if net.exists() and load_source_file(net).get("key") != exp.source_key():
        raise RuntimeError(f"{net} was trained under another configuration or data; "
                           f"choose another results_dir, or delete it")
    return found


def load_source_file(path: Path) -> dict:
    try:
        return torch.load(path, weights_only=False)
    except Exception as e:  # torch raises several kinds for a damaged file
        raise RuntimeError(f"{path} cannot be read ({e}); delete it to train the source net again") from None


def train_source(exp: Experiment, progress: bool = True) -> tuple[torch.nn.Module, dict]:
    """Train the source net, or load it from results_dir when the same config already trained it.

    A net trained here is written only if it is the one the directory's records were made with."""
    cfg, where = exp.cfg, Path(exp.cfg.results_dir)
    path, key = where / SOURCE_FILE, exp.source_key()
    if path.exists():
        saved = load_source_file(path)
        net = build(0, cfg.code_bits)
        net.load_state_dict(saved["state_dict"])
        write_source_record(path, exp, saved["info"])
        return net, saved["info"]
    seed = derive_seed(cfg.seed, SOURCE_INIT)
    net = build(seed, cfg.code_bits)
    x, y = tensors(exp.source_set())
    with tqdm(total=cfg.source_max_epochs, desc=f"source net ({exp.chars('source')})", unit="epoch",
              disable=not progress) as bar:
        def show(row):
            bar.set_postfix(train_accuracy=f"{row['train_accuracy']:.4f}", goal=cfg.source_accuracy)
            bar.update()
        history = train(net, x, y, exp.codes("source"), seed=seed, stop=ReachAccuracy(cfg.source_accuracy),
                        max_epochs=cfg.source_max_epochs, lr=cfg.lr, batch_size=cfg.batch_size, on_epoch=show)
    info = {"classes": exp.chars("source"), "seed": seed, "epochs": len(history),
            "train_accuracy": history[-1]["train_accuracy"], "seconds": history[-1]["seconds"],
            "reached_target": history[-1]["train_accuracy"] >= cfg.source_accuracy,
            "state_sha256": state_hash(net), "history": history}
    for record, sha in recorded_sources(where):
        if sha != info["state_sha256"]:
            raise RuntimeError(f"the source net trained now (sha256 {info['state_sha256'][:12]}) is not the one "
                               f"{record} was made with ({sha[:12]}), although the configuration is the same "
                               f"(another machine rounds differently?); nothing was written. Choose another "
                               f"results_dir.")
    buffer = io.BytesIO()
    torch.save({"key": key, "state_dict": net.state_dict(), "info": info}, buffer)
    store.write_bytes(path, buffer.getvalue())  # in memory first: torch.save hides a full disk's error
    write_source_record(path, exp, info)
    return net, info


def recorded_sources(where: Path) -> list[tuple[Path, str]]:
    """Each file in `where` that names the source net its contents were made with, and that net's sha256."""
    out = []
    if (where / RESULTS_FILE).exists():
        out.append((where / RESULTS_FILE, read_results(where / RESULTS_FILE, cut_ok=True)[0]["source"]["state_sha256"]))
    if (where / SOURCE_RECORD).exists():
        out.append((where / SOURCE_RECORD, read_source_record(where)["state_sha256"]))
    return out


def write_source_record(path: Path, exp: Experiment, info: dict) -> None:
    record = {"key": exp.source_key(), "source_config": exp.source_config(), **info}
    store.write_bytes(path.with_name(SOURCE_RECORD), json.dumps(record, indent=1).encode("utf-8"))


def read_source_record(results_dir: str | os.PathLike) -> dict:
    """The source net's training record (classes, accuracy, epochs, per-epoch history)."""
    path = Path(results_dir) / SOURCE_RECORD
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise RuntimeError(f"{path} is damaged ({e}); delete it") from None


def stopping_rule(cfg: Config) -> Converged:
    return Converged(cfg.patience, cfg.min_improvement, cfg.loss_floor)


def outcome(history: list[dict], test_accuracy: float, n: int, cfg: Config) -> dict:
    """A finished run's row: how it ended, and how well it does on the test set."""
    last = history[-1]
    fitted = last["train_accuracy"] == 1.0 and last["train_loss"] < cfg.loss_floor
    return {"test_accuracy": test_accuracy, "train_accuracy": last["train_accuracy"],
            "train_loss": last["train_loss"], "epochs": len(history),
            "stopped_by": "fit" if fitted else ("cap" if len(history) == cfg.max_epochs else "plateau"),
            "seconds": last["seconds"], "trainable_parameters": trainable_parameters(n)}


def trainable_parameters(n: int) -> int:
    return sum(list(FREE_PARAMETERS.values())[n:])


def run_one(source, n: int, train_set: D.Subset, test: tuple, codes: torch.Tensor, seed: int,
            cfg: Config) -> dict:
    """The plain path: train one target net with the bottom n layers transferred and frozen; test it."""
    net = transfer(source, n, seed)
    x, y = tensors(train_set)
    history = train(net, x, y, codes, seed=seed, stop=stopping_rule(cfg), max_epochs=cfg.max_epochs, lr=cfg.lr,
                    batch_size=cfg.batch_size)
    return outcome(history, evaluate(net, *test, codes)[0], n, cfg)


def run_groups(exp: Experiment, source, todo: list[tuple], test: tuple, codes: torch.Tensor, save) -> None:
    """The engine's path: the trials of each (n, k) train side by side, one group per worker thread.

    A group is computed whole even when some of its runs are saved already: a run's numbers depend on
    the group it trained in (through rounding), so a resumed sweep recomputes the same groups."""
    cfg = exp.cfg
    if cfg.engine == "native":
        native.library()  # build the kernels now: a missing compiler is one clear error, not one per worker
    wanted = {(n, k, t) for k, t, n in todo}
    groups = sorted({(n, k) for k, _, n in todo}, key=lambda g: -group_cost(*g))  # the longest first
    cache = engine.FeatureCache()
    test_x = {n: cache.get(source, test[0], n) for n, _ in groups}
    sets = {k: [exp.trial_set(k, t) for t in range(cfg.trials)] for _, k in groups}
    events: queue.Queue = queue.Queue()
    cancel = threading.Event()

    def job(n: int, k: int, x: torch.Tensor, y: torch.Tensor, seeds: list[int]):
        torch.set_num_threads(1)  # a worker per core; one thread also keeps the numbers machine-independent
        nets = [transfer(source, n, s) for s in seeds]
        engine.train_runs(nets, n, x, y, codes, seeds, stopping_rule(cfg), cfg.max_epochs, (test_x[n], test[1]),
                          cfg.lr, cfg.batch_size, on_run=lambda t, run: events.put((n, k, t, seeds[t], run)),
                          cancel=cancel, kernels=cfg.engine)

    def drain(block: bool) -> None:
        try:
            while True:
                n, k, t, seed, run = events.get(timeout=0.1) if block else events.get_nowait()
                block = False
                if (n, k, t) in wanted:
                    save(n, k, t, seed, outcome(run.history, run.test_accuracy, n, cfg))
        except queue.Empty:
            pass

    threads = torch.get_num_threads()
    pool = ThreadPoolExecutor(cfg.worker_count(), thread_name_prefix="ktlib-engine")
    try:
        futures = []
        for n, k in groups:
            x = torch.stack([cache.get(source, torch.from_numpy(s.x), n) for s, _ in sets[k]])
            y = torch.stack([torch.from_numpy(s.y) for s, _ in sets[k]])
            futures.append(pool.submit(job, n, k, x, y, [seed for _, seed in sets[k]]))
        pending = set(futures)
        while pending:
            drain(block=True)
            for f in [f for f in pending if f.done()]:
                pending.discard(f)
                f.result()  # a worker's error stops the sweep here
    finally:
        cancel.set()  # on an error or interrupt the other workers stop at their next step
        pool.shutdown(wait=True)
        torch.set_num_threads(threads)
        drain(block=False)  # runs that finished meanwhile are kept


def group_cost(n: int, k: int) -> float:
    """A group's rough cost, to schedule the long ones first: its training FLOPs per epoch."""
    return k * training_flops(CONNECTIONS, n)


# ---------------------------------------------------------------- the results file

class ResultsError(ValueError):
    """A results file is not one, or is damaged."""


def parse_results(path: str | os.PathLike) -> tuple[dict, pd.DataFrame, bool]:
    """(metadata, rows, cut) of a results file; cut: its last row was cut short (the file does not end with
    a newline, as every file ktlib writes does), and is left out of rows. Any other damage is an error."""
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
    rows = pd.read_csv(io.StringIO(body))
    missing = [c for c in COLUMNS if c not in rows]
    if missing:
        raise ResultsError(f"{path}: no column {missing}")
    incomplete = rows[COLUMNS[:-1]].isna().any(axis=1)
    if incomplete.any():
        line = int(np.flatnonzero(incomplete)[0]) + 3  # the metadata line, the column names, then rows
        raise ResultsError(f"{path}:{line}: a row with missing values; the file is damaged")
    return meta, rows, cut


def read_results(path: str | os.PathLike, cut_ok: bool = False) -> tuple[dict, pd.DataFrame]:
    """(metadata, rows) of a results file: a '# ' JSON header line, then CSV. A last row cut short is an
    error, unless cut_ok (it is then left out)."""
    meta, rows, cut = parse_results(path)
    if cut and not cut_ok:
        raise ResultsError(f"{path}: its last row was cut short; run the sweep again to redo that run")
    return meta, rows


def write_results(path: Path, meta: dict, rows: pd.DataFrame) -> None:
    text = "# " + json.dumps(meta, sort_keys=True) + "\n" + rows.to_csv(index=False, float_format="%.6g")
    store.write_bytes(path, text.encode("utf-8"))


def retained(n: int) -> str:
    return "none" if n == 0 else f"{LAYERS[0]}-{LAYERS[n - 1]}" if n > 1 else LAYERS[0]


def open_experiment(cfg: Config, wait: bool = False) -> Experiment:
    """Load the data and split the classes; refuse a results directory that another process is writing to
    (or wait for it), or that holds another experiment. Writes nothing."""
    torch.use_deterministic_algorithms(True)
    exp = Experiment.load(cfg)
    store.wait_until_free(cfg.results_dir, wait)
    check_directory(exp)
    return exp


def prepare(cfg: Config, progress: bool = True, wait: bool = False) -> tuple[Experiment, torch.nn.Module, dict]:
    """Load the data, split the classes, and train (or reload) the source net, as the results directory's
    one writer (wait: for another process that is writing there, rather than refuse)."""
    exp = open_experiment(cfg, wait)
    with store.writer(cfg.results_dir, wait):
        check_directory(exp)  # again: another writer may have written there meanwhile
        source, info = train_source(exp, progress)
    return exp, source, info


def run(cfg: Config | None = None, progress: bool = True, wait: bool = False, **overrides) -> pd.DataFrame:
    """Run (or resume) the whole sweep; returns the tidy results, one row per run.

    `run(cfg)`, `run(profile="smoke", results_dir=...)`, or `run(cfg, trials=1)` to change some fields.
    Everything that can be checked is checked before any work; the results directory has one writer at a
    time (wait=True waits for another process writing there, instead of refusing)."""
    if cfg is None:
        cfg = Config.for_profile(overrides.pop("profile", "paper"), **overrides)
    elif overrides:
        cfg = dataclasses.replace(cfg, **overrides)  # re-validated by __post_init__
    if cfg.engine == "native":
        native.library()  # a missing compiler or an unwritable cache is one clear error, before any work
    exp = open_experiment(cfg, wait)
    with store.writer(cfg.results_dir, wait):
        return _sweep(exp, progress)


def _sweep(exp: Experiment, progress: bool) -> pd.DataFrame:
    """The sweep itself, inside the results directory's writer lock."""
    cfg = exp.cfg
    found = check_directory(exp)
    source, source_info = train_source(exp, progress)
    meta = {**exp.record(), "source": {k: v for k, v in source_info.items() if k != "history"},
            "versions": versions(), "git_commit": git_commit(),
            "workers": None if cfg.engine == "plain" else cfg.worker_count()}
    path = Path(cfg.results_dir) / RESULTS_FILE
    records: list[dict] = []
    if found:
        old_meta, rows, cut = found
        if old_meta["source"]["state_sha256"] != source_info["state_sha256"]:
            raise RuntimeError(f"{path} was made with another source net; choose another results_dir")
        if cut:
            print(f"{path}: its last row was cut short; that run is done again", file=sys.stderr)
        meta["git_commit"] = old_meta["git_commit"]  # the commit that started it; rows carry their own
        records = rows.to_dict("records")
    done = {(r["n"], r["k"], r["trial"]) for r in records}
    grid = [(k, t, n) for k in cfg.sizes for t in range(cfg.trials) for n in cfg.levels]
    todo = [g for g in grid if (g[2], g[0], g[1]) not in done]

    test = tensors(exp.test_set())
    codes = exp.codes("target")
    commit = git_commit()
    bar = tqdm(total=len(grid), initial=len(grid) - len(todo), desc="sweep", unit="run", disable=not progress)

    def save(n: int, k: int, trial: int, seed: int, result: dict) -> None:
        records.append({"n": n, "retained": retained(n), "k": k, "trial": trial, "seed": seed,
                        **result, "git_commit": commit})
        write_results(path, meta, pd.DataFrame(records, columns=COLUMNS))
        bar.set_postfix(n=n, k=k, test=f"{result['test_accuracy']:.3f}", epochs=result["epochs"])
        bar.update()

    try:
        if cfg.engine == "plain":
            trial_set = functools.lru_cache(maxsize=1)(exp.trial_set)  # the grid is ordered so n varies fastest
            for k, trial, n in todo:
                train_set, seed = trial_set(k, trial)
                save(n, k, trial, seed, run_one(source, n, train_set, test, codes, seed, cfg))
        elif todo:
            run_groups(exp, source, todo, test, codes, save)
    except KeyboardInterrupt:
        bar.close()
        print(f"\ninterrupted: {len(records)} of {len(grid)} runs are saved in {path}; run again to resume",
              file=sys.stderr)
        raise
    bar.close()
    if not path.exists():  # an empty grid
        write_results(path, meta, pd.DataFrame(records, columns=COLUMNS))
    return read_results(path)[1].sort_values(["k", "trial", "n"], ignore_index=True)


def mean_table(rows: pd.DataFrame, value: str = "test_accuracy") -> pd.DataFrame:
    """Mean over trials: one row per n, one column per k."""
    return rows.pivot_table(index="n", columns="k", values=value, aggfunc="mean")


# ---------------------------------------------------------------- command line

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="ktlib", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("sweep", help="train the source net and run the n x k x trial grid (resumable)")
    s.add_argument("--profile", choices=PROFILES, default="paper")
    s.add_argument("--dry-run", action="store_true", help="same as --profile smoke: the pipeline in seconds")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--data-dir", default=None, help=f"EMNIST directory (default ${D.DATA_DIR_ENV})")
    s.add_argument("--results-dir", default=None, help=f"default ${RESULTS_DIR_ENV}, then results/<profile>")
    s.add_argument("--levels", type=int, nargs="+")
    s.add_argument("--sizes", type=int, nargs="+")
    s.add_argument("--trials", type=int)
    s.add_argument("--engine", choices=ENGINES, default="native",
                   help="batched: the engine without its C kernels; plain: the reference loop, one run at a time")
    s.add_argument("--workers", type=int, help="engine threads (default: the usable cores)")
    s.add_argument("--wait", action="store_true",
                   help="if another process is writing to the results directory, wait for it instead of refusing")
    s.add_argument("--no-progress", action="store_true")
    d = sub.add_parser("download", help="fetch the official EMNIST archive and extract the ByClass files")
    d.add_argument("--dest", default=str(D.DEFAULT_DATA_DIR))
    d.add_argument("--url", default=D.EMNIST_URL)
    d.add_argument("--md5", default=D.EMNIST_MD5)
    d.add_argument("--keep-archive", action="store_true")
    a = p.parse_args(argv)
    try:
        if a.command == "download":
            dest = D.download(a.dest, a.url, a.md5, keep_archive=a.keep_archive)
            print(f"EMNIST ByClass files are in {dest}; set {D.DATA_DIR_ENV}={dest.resolve()}")
            return 0
        overrides = {k: v for k, v in dict(levels=a.levels, sizes=a.sizes, trials=a.trials).items() if v is not None}
        cfg = Config.for_profile("smoke" if a.dry_run else a.profile, seed=a.seed, data_dir=a.data_dir,
                                 results_dir=a.results_dir, engine=a.engine, workers=a.workers, **overrides)
        start = time.perf_counter()
        rows = run(cfg, progress=not a.no_progress, wait=a.wait)
    except (D.DataError, ValueError, RuntimeError) as e:
        print(f"ktlib: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    print(f"{len(rows)} runs in {Path(cfg.results_dir) / RESULTS_FILE} "
          f"({time.perf_counter() - start:.0f} s this invocation)")
    for value, title in (("test_accuracy", "mean test accuracy"), ("train_accuracy", "mean final training accuracy")):
        print(f"{title} (rows: n retained levels, columns: k samples per class)")
        print(mean_table(rows, value).to_string(float_format="%.3f"))
    print("how runs stopped:", rows["stopped_by"].value_counts().to_dict())
    return 0
