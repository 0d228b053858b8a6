"""The experiment end to end: data and class split, the source net, then every run of the grid, resumably."""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from tqdm import tqdm  # plain text bars: they also read well in executed notebooks

from . import data as D
from . import cluster, engine, readouts, runs, store
from .config import Config, Purpose, derive_seed
from .model import build, state_hash, target_codes
from .results import (COLUMNS, DAMAGED_ROW, PREDICTIONS_FILE, READOUTS_FILE, RESULTS_FILE, SOURCE_FILE,
                      SOURCE_RECORD, ResultsError, RunKey, differences, experiment_differences, git_commit, keys,
                      parse_results, read_predictions, read_readouts, read_results, read_source_record,
                      recorded_sources, row_line, run_keys, versions, write_predictions, write_results,
                      write_source_record)
from .train import Fit, ReachAccuracy, evaluate, train
from .transfer import RECIPES, copy_source


@dataclass
class Experiment:
    """Data and class split fixed by a config: everything the runs share."""
    cfg: Config
    data: D.Emnist
    split: D.ClassSplit
    checksums: dict

    @classmethod
    def load(cls, cfg: Config, loaded: tuple[D.Emnist, dict] | None = None) -> "Experiment":
        """From cfg.data_dir, or from its (data, checksums) already loaded."""
        if loaded is None:
            path = D.resolve_data_dir(cfg.data_dir)
            loaded = D.load(path), D.checksums(path)
        data, checksums = loaded
        split = D.split_classes(data, derive_seed(cfg.split_seed(), Purpose.SPLIT), cfg.n_classes,
                                cfg.source_per_class, max(cfg.sizes), cfg.test_per_class, cfg.source_chars,
                                cfg.target_chars)
        return cls(cfg, data, split, checksums)

    def chars(self, role: str) -> str:
        return "".join(self.data.mapping[c] for c in getattr(self.split, role))

    def codes(self, role: str) -> torch.Tensor:
        purpose = Purpose.SOURCE_CODES if role == "source" else Purpose.TARGET_CODES
        return target_codes(self.cfg.n_classes, self.cfg.code_bits, self.seed(purpose), self.cfg.code_scheme)

    def seed(self, purpose: Purpose, *keys: int) -> int:
        """The seed of one purpose in this class split."""
        return derive_seed(self.cfg.split_seed(), purpose, *keys)

    def source_set(self) -> D.Subset:
        return D.draw(self.data.train, self.split.source, self.cfg.source_per_class, self.seed(Purpose.SOURCE_DATA))

    def source_test_set(self) -> D.Subset:
        """Held-out images of the source classes, from the test file (as many as test_per_class, or all a
        class has when fewer)."""
        per_class = min([self.cfg.test_per_class] + [self.data.counts("test")[c] for c in self.split.source])
        return D.draw(self.data.test, self.split.source, per_class, self.seed(Purpose.SOURCE_TEST))

    def test_set(self) -> D.Subset:
        return D.draw(self.data.test, self.split.target, self.cfg.test_per_class, self.seed(Purpose.TEST_DATA))

    def trial_set(self, k: int, trial: int) -> tuple[D.Subset, int]:
        """The k-per-class training set of one trial and that trial's seed (shared by every n and recipe)."""
        seed = self.seed(Purpose.TRIAL, k, trial)
        return D.draw(self.data.train, self.split.target, k, seed), seed

    def copies(self, source: torch.nn.Module) -> dict[str, torch.nn.Module]:
        """The nets this configuration's recipes copy from: the trained source net, and the controls drawn
        from it and this split's seeds (the random ones all from one draw, so they differ only in scale)."""
        kinds = {RECIPES[r].copies for r in self.cfg.recipes} | {"trained"}
        return {kind: copy_source(kind, source, self.seed(Purpose.SHUFFLE if kind == "shuffled"
                                                          else Purpose.RANDOM_SOURCE)) for kind in sorted(kinds)}

    def task(self, source: torch.nn.Module) -> runs.Task:
        """What the runs of this experiment share, for a trainer."""
        test, held = self.test_set(), self.source_test_set()
        # each (k, trial) set drawn once: every n and recipe, and every group holding it, trains on the same
        sets = functools.lru_cache(maxsize=None)(self.trial_set)
        return runs.Task(self.cfg, source, sets, (torch.from_numpy(test.x), torch.from_numpy(test.y)),
                         self.codes("target"), self.copies(source), (torch.from_numpy(held.x),
                         torch.from_numpy(held.y)), self.codes("source"))

    def source_config(self) -> dict:
        """Everything that determines the source net: its fields of the config, its classes, the data."""
        c = self.cfg
        trainer = {} if source_trainer(c) == "plain" else {"source_trainer": source_trainer(c)}
        return dict(seed=c.split_seed(), n_classes=c.n_classes, code_bits=c.code_bits, code_scheme=c.code_scheme,
                    source_per_class=c.source_per_class, source_accuracy=c.source_accuracy,
                    source_max_epochs=c.source_max_epochs, lr=c.lr, batch_size=c.batch_size,
                    source=self.chars("source"), checksums=self.checksums, **trainer)

    def source_key(self) -> str:
        return hashlib.sha256(json.dumps(self.source_config(), sort_keys=True).encode()).hexdigest()

    def record(self) -> dict:
        """What a results file's header says about the experiment, for the same-experiment check."""
        return {"config": self.cfg.experiment(), "data_checksums": self.checksums,
                "source_classes": self.chars("source"), "target_classes": self.chars("target")}


# ---------------------------------------------------------------- the results directory, before any work

def check_directory(exp: Experiment) -> tuple[dict, pd.DataFrame, bool] | None:
    """Refuse a results directory that holds another experiment's files, naming the fields that differ.

    Reads only: a refused run leaves the directory as it was. Returns the results file's (metadata, rows,
    whether its last row was cut short), or None when there is none yet."""
    where = Path(exp.cfg.results_dir)
    found = None
    path = where / RESULTS_FILE
    if path.exists():
        found = parse_results(path)
        diff = experiment_differences(found[0], exp.record())
        if diff:
            raise RuntimeError(f"{path} holds runs of another experiment: {'; '.join(diff)}. "
                               f"Choose another results_dir, or delete it.")
        planned, found_keys = set(runs.grid(exp.cfg)), run_keys(found[1])
        outside = pd.Series([key not in planned for key in found_keys], dtype=bool)
        if outside.any():
            raise ResultsError(f"{path}:{row_line(outside)}: a run outside this configuration's grid "
                               f"({found_keys[int(outside.idxmax())]}); the file is damaged: {DAMAGED_ROW}")
    if (where / PREDICTIONS_FILE).exists():
        read_predictions(where, exp.cfg.n_classes * exp.cfg.test_per_class)
    if (where / READOUTS_FILE).exists():
        diff = experiment_differences(read_readouts(where)[0], exp.record())
        if diff:
            raise RuntimeError(f"{where / READOUTS_FILE} holds readouts of another experiment: {'; '.join(diff)}. "
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


def open_experiment(cfg: Config, wait: bool = False) -> Experiment:
    """Load the data and split the classes; refuse a results directory that another process is writing to
    (or wait for it), or that holds another experiment. Writes nothing."""
    torch.use_deterministic_algorithms(True)
    exp = Experiment.load(cfg)
    store.wait_until_free(cfg.results_dir, wait)
    check_directory(exp)
    return exp


# ---------------------------------------------------------------- the source net

def load_source_file(path: Path) -> dict:
    try:
        return torch.load(path, weights_only=False)
    except Exception as e:  # torch raises several kinds for a damaged file
        raise RuntimeError(f"{path} cannot be read ({e}); delete it to train the source net again") from None


def source_record(exp: Experiment, info: dict) -> dict:
    return {"key": exp.source_key(), "source_config": exp.source_config(), **info}


def held_out(exp: Experiment, net: torch.nn.Module) -> dict:
    """The source net's accuracy on held-out images of its own classes (its stopping rule reads only its
    training accuracy, so this is the number that says what it learned)."""
    s = exp.source_test_set()
    accuracy, _ = evaluate(net, torch.from_numpy(s.x), torch.from_numpy(s.y), exp.codes("source"))
    return {"held_out_accuracy": accuracy, "held_out_images": len(s.y)}


def source_trainer(cfg: Config) -> str:
    """What trains the source net: "plain" (train.train), or the engine's kernels, "native" or "batched"."""
    return cfg.engine if cfg.source_training == "engine" and cfg.engine != "plain" else "plain"


def train_by_engine(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, codes: torch.Tensor, seed: int, stop,
                    cfg: Config, test: tuple[torch.Tensor, torch.Tensor]) -> Fit:
    """train.train's steps for the whole net, by the engine's kernels (one run, one thread); the net is
    left trained."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the engine's workers do: the numbers do not depend on the machine's cores
    try:
        run = engine.train_runs([net], 0, x[None], y[None], codes, [seed], stop, cfg.source_max_epochs,
                                test, cfg.lr, cfg.batch_size, kernels=cfg.engine)[0]
    finally:
        torch.set_num_threads(threads)
    engine.load(net, 0, run.weights)
    return Fit(run.history, run.stopped_by)


def train_source(exp: Experiment, progress: bool = True) -> tuple[torch.nn.Module, dict]:
    """Train the source net, or load it from results_dir when the same config already trained it.

    A net trained here is written only if it is the one the directory's records were made with."""
    cfg, where = exp.cfg, Path(exp.cfg.results_dir)
    path = where / SOURCE_FILE
    if path.exists():
        saved = load_source_file(path)
        net = build(0, cfg.code_bits)
        net.load_state_dict(saved["state_dict"])
        info = {**saved["info"], **held_out(exp, net)}
        write_source_record(where, source_record(exp, info))
        return net, info
    seed = exp.seed(Purpose.SOURCE_INIT)
    net = build(seed, cfg.code_bits)
    s = exp.source_set()
    x, y, codes = torch.from_numpy(s.x), torch.from_numpy(s.y), exp.codes("source")
    stop = ReachAccuracy(cfg.source_accuracy)
    if source_trainer(cfg) != "plain":
        held = exp.source_test_set()
        fit = train_by_engine(net, x, y, codes, seed, stop, cfg,
                              (torch.from_numpy(held.x), torch.from_numpy(held.y)))
    else:
        with tqdm(total=cfg.source_max_epochs, desc=f"source net ({exp.chars('source')})", unit="epoch",
                  disable=not progress) as bar:
            def show(epoch):
                bar.set_postfix(train_accuracy=f"{epoch.train_accuracy:.4f}", goal=cfg.source_accuracy)
                bar.update()
            fit = train(net, x, y, codes, seed=seed, stop=stop, max_epochs=cfg.source_max_epochs, lr=cfg.lr,
                        batch_size=cfg.batch_size, on_epoch=show)
    last = fit.history[-1]
    info = {"classes": exp.chars("source"), "seed": seed, "epochs": len(fit.history),
            "train_accuracy": last.train_accuracy, "seconds": last.seconds,
            "reached_target": last.train_accuracy >= cfg.source_accuracy,
            "state_sha256": state_hash(net), **held_out(exp, net),
            "history": [dataclasses.asdict(e) for e in fit.history]}
    for record, sha in recorded_sources(where):
        if sha != info["state_sha256"]:
            raise RuntimeError(f"the source net trained now (sha256 {info['state_sha256'][:12]}) is not the one "
                               f"{record} was made with ({sha[:12]}), although the configuration is the same "
                               f"(another machine rounds differently?); nothing was written. Choose another "
                               f"results_dir.")
    buffer = io.BytesIO()
    torch.save({"key": exp.source_key(), "state_dict": net.state_dict(), "info": info}, buffer)
    store.write_bytes(path, buffer.getvalue())  # in memory first: torch.save hides a full disk's error
    write_source_record(where, source_record(exp, info))
    return net, info


def prepare(cfg: Config, progress: bool = True, wait: bool = False) -> tuple[Experiment, torch.nn.Module, dict]:
    """Load the data, split the classes, and train (or reload) the source net, as the results directory's
    one writer (wait: for another process that is writing there, rather than refuse)."""
    exp = open_experiment(cfg, wait)
    with store.writer(cfg.results_dir, wait):
        check_directory(exp)  # again: another writer may have written there meanwhile
        source, info = train_source(exp, progress)
    return exp, source, info


# ---------------------------------------------------------------- the sweep

def run(cfg: Config | None = None, progress: bool = True, wait: bool = False, **overrides) -> pd.DataFrame:
    """Run (or resume) the whole sweep; returns the tidy results, one row per run.

    `run(cfg)`, `run(profile="smoke", results_dir=...)`, or `run(cfg, trials=1)` to change some fields.
    Everything that can be checked is checked before any work; the results directory has one writer at a
    time (wait=True waits for another process writing there, instead of refusing). With cfg.cluster the
    groups run on Dask workers, and their rows are written here as they come back."""
    if cfg is None:
        cfg = Config.for_profile(overrides.pop("profile", "paper"), **overrides)
    elif overrides:
        cfg = dataclasses.replace(cfg, **overrides)  # re-validated by __post_init__
    runs.check(cfg.engine)
    exp = open_experiment(cfg, wait)
    # the cluster first: an address that is not one is refused before the results directory is made
    with (cluster.connect(cfg.cluster) if cfg.cluster else contextlib.nullcontext()) as pool, \
            store.writer(cfg.results_dir, wait):
        if pool is not None:
            pool.check(cfg.engine)  # the cluster answers and its workers can run the engine: before any work
        sweep = Sweep(exp, progress)
        sweep.read_out()
        try:
            if pool is None:
                runs.train_runs(sweep.task, sweep.todo, sweep.save)
            else:
                pool.submit(sweep.task, sweep.todo, sweep.save, exp.checksums)
                pool.drain()
        except KeyboardInterrupt:
            sweep.bar.close()
            print(f"\ninterrupted: {len(sweep.records)} of {len(sweep.grid)} runs are saved in {sweep.path}; run "
                  f"again to resume", file=sys.stderr)
            raise
        return sweep.finish()


class Sweep:
    """A sweep's results directory, opened by its one writer: the source net, the runs saved so far (kept on
    resuming), the runs still to do, and `save` for each finished one."""

    def __init__(self, exp: Experiment, progress: bool = True, bar: tqdm | None = None):
        cfg = exp.cfg
        found = check_directory(exp)
        source, source_info = train_source(exp, progress)
        self.meta = {**exp.record(), "source": {k: v for k, v in source_info.items() if k != "history"},
                     "versions": versions(), "git_commit": git_commit(),
                     "workers": None if cfg.engine == "plain" or cfg.cluster else cfg.worker_count(),
                     **({"cluster": cfg.cluster} if cfg.cluster else {})}
        self.cfg, self.path = cfg, Path(cfg.results_dir) / RESULTS_FILE
        self.records: list[dict] = []
        self.predicted: dict[RunKey, object] = {}  # each run's test predictions, written before its row
        self.labels = exp.test_set().y
        done = set()
        if found:
            old_meta, rows, cut = found
            if old_meta["source"]["state_sha256"] != source_info["state_sha256"]:
                raise RuntimeError(f"{self.path} was made with another source net; choose another results_dir")
            if cut:
                print(f"{self.path}: its last row was cut short; that run is done again", file=sys.stderr)
            self.meta["git_commit"] = old_meta["git_commit"]  # the commit that started it; rows carry their own
            self.records, done = rows.to_dict("records"), keys(rows)
            if (Path(cfg.results_dir) / PREDICTIONS_FILE).exists():
                old_keys, old_predictions, _ = read_predictions(cfg.results_dir)
                self.predicted = {key: p for key, p in zip(run_keys(old_keys), old_predictions) if key in done}
            missing = done - set(self.predicted)
            if missing:  # a record from before predictions were kept: those runs are done again
                self.records = [r for r in self.records
                                if RunKey.of(r) not in missing]
                done -= missing
        self.grid = runs.grid(cfg)
        self.todo = [key for key in self.grid if key not in done]
        self.task = exp.task(source)
        self.commit = git_commit()
        saved = len(self.grid) - len(self.todo)
        if bar is None:
            bar = tqdm(total=len(self.grid), initial=saved, desc="sweep", unit="run", disable=not progress)
        elif not bar.disable:  # a bar shared by several sweeps; saved runs are not progress (nor its rate)
            bar.total, bar.initial, bar.n = bar.total + len(self.grid), bar.initial + saved, bar.n + saved
            bar.refresh()
        self.bar = bar

    def read_out(self) -> None:
        """Measure the grid's training-free readouts (a few seconds of forward passes) unless they are saved."""
        where = Path(self.cfg.results_dir)
        if (where / READOUTS_FILE).exists():
            meta, _ = read_readouts(where)
            if meta["source"]["state_sha256"] == self.meta["source"]["state_sha256"]:
                return
        rows, spreads = readouts.measure(self.task)
        write_results(where / READOUTS_FILE, {**self.meta, "spread": spreads}, rows)

    def save(self, result: dict) -> None:
        """Write one finished run: its predictions, then its row (the client is the files' only writer)."""
        self.predicted[RunKey.of(result)] = result.pop("predictions")
        write_predictions(self.cfg.results_dir, list(self.predicted), list(self.predicted.values()), self.labels)
        self.records.append({**result, "git_commit": self.commit})
        write_results(self.path, self.meta, pd.DataFrame(self.records, columns=COLUMNS))
        self.bar.set_postfix(n=result["n"], k=result["k"], test=f"{result['test_accuracy']:.3f}",
                             epochs=result["epochs"])
        self.bar.update()

    def finish(self) -> pd.DataFrame:
        self.bar.close()
        return read_results(self.path)[1].sort_values(["k", "trial", "n"], ignore_index=True)
