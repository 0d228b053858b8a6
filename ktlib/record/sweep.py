"""A sweep's life, the one way it goes: its directory checked, its source net made or loaded, its runs submitted to an
executor, and each run's row written as it comes back; resumable. A study is many sweeps on one executor."""
from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
from pathlib import Path

import pandas as pd
from tqdm import tqdm  # plain text bars: they also read well in executed notebooks

from ktlib.compute import cluster, executors, readouts, train
from ktlib.compute.experiment import Experiment, RunKey, grid
from ktlib.compute.model import Net
from ktlib.compute.source import held_out, train_source
from ktlib.compute.train import COLUMNS
from ktlib.config import Config
from ktlib.record import checks, files, provenance, store
from ktlib.recipes import recipe


def checked(cfg: Config, wait: bool = False) -> Experiment:
    """The experiment of a config, its results directory checked: refused if another process is writing there (or
    waited for), or if it holds another experiment. Writes nothing."""
    train.deterministic()
    exp = Experiment.load(cfg)
    store.wait_until_free(cfg.results_dir, wait)
    checks.check_directory(exp)
    return exp


def source_net(exp: Experiment, progress: bool = True, made: dict | None = None) -> tuple[Net, dict]:
    """The source net the results directory holds; or the one an earlier sweep of this call made under the same
    configuration (`made`, by source key: the same seed, data and fields give the same net, so the breadth study's
    largest source serves two of its parts), its record naming that sweep (`same_as`); or one trained now. It is saved
    there (the caller is its writer)."""
    saved, key = files.saved_source(exp), exp.source_key()
    if saved is not None:
        net, info = saved
        info = {**info, **held_out(exp, net)}
    elif made is not None and key in made:
        net, info, where = made[key]
        info = {**info, "same_as": os.path.relpath(where, exp.cfg.results_dir)}  # the record moves whole
    else:
        net, info = train_source(exp, progress)
    files.save_source(exp, net, info, written=saved is not None)
    if made is not None:
        made.setdefault(key, (net, info, exp.cfg.results_dir))
    return net, info


def train_or_load_source(cfg: Config, progress: bool = True, wait: bool = False) -> tuple[Experiment, Net, dict]:
    """A sweep's first step alone (the source notebook's): its directory checked, and its source net made or loaded,
    as the directory's one writer (wait: for another process writing there, rather than refuse)."""
    exp = checked(cfg, wait)
    with store.writer(cfg.results_dir, wait):
        checks.check_directory(exp)  # again: another writer may have written there meanwhile
        net, info = source_net(exp, progress)
    return exp, net, info


class Sweep:
    """A sweep's results directory, opened by its one writer: the runs saved so far (kept on resuming), the runs
    still to do, and `save` for each finished one."""

    def __init__(self, exp: Experiment, source: Net, source_info: dict, found, bar: tqdm):
        cfg = exp.cfg
        self.meta = {**exp.record(), "source": {k: v for k, v in source_info.items() if k != "history"},
                     "versions": provenance.versions(), "git_commit": provenance.git_commit(),
                     "workers": None if cfg.engine == "plain" or cfg.cluster else cfg.worker_count(),
                     **({"cluster": cfg.cluster} if cfg.cluster else {})}
        self.cfg, self.path = cfg, Path(cfg.results_dir) / files.RESULTS_FILE
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
            self.records, done = rows.to_dict("records"), files.keys(rows)
            if (Path(cfg.results_dir) / files.PREDICTIONS_FILE).exists():
                old_keys, old_predictions, _ = files.read_predictions(cfg.results_dir)
                self.predicted = {key: p for key, p in zip(files.run_keys(old_keys), old_predictions) if key in done}
            missing = done - set(self.predicted)
            if missing:  # a record from before predictions were kept: those runs are done again
                self.records = [r for r in self.records if RunKey.of(r) not in missing]
                done -= missing
        self.grid = grid(cfg)
        self.todo = [key for key in self.grid if key not in done]
        self.task = exp.task(source)
        self.commit = provenance.git_commit()
        saved = len(self.grid) - len(self.todo)
        if not bar.disable:  # saved runs are not progress (nor its rate)
            bar.total, bar.initial, bar.n = bar.total + len(self.grid), bar.initial + saved, bar.n + saved
            bar.refresh()
        self.bar = bar

    def read_out(self) -> None:
        """Measure the grid's training-free readouts (a few seconds of forward passes) unless they are saved."""
        where = Path(self.cfg.results_dir)
        if (where / files.READOUTS_FILE).exists():
            meta, _ = files.read_readouts(where)
            if meta["source"]["state_sha256"] == self.meta["source"]["state_sha256"]:
                return
        rows, spreads = readouts.measure(self.task)
        files.write_results(where / files.READOUTS_FILE, {**self.meta, "spread": spreads,
                                                          "spread_images": "validation"}, rows)

    def score_maps(self) -> None:
        """Score the maps of every partly transferred level of the grid on each trial's training set (ktlib.compute.
        maps), unless they are saved; the runs choose their maps from these same numbers (Task.kept)."""
        where = Path(self.cfg.results_dir)
        levels = sorted({recipe(r).level for r in self.cfg.recipes} - {None})
        if not levels or (where / files.SCORES_FILE).exists() and files.read_scores(where)[0]["source"][
                "state_sha256"] == self.meta["source"]["state_sha256"]:
            return
        rows = [{"n": n, "k": k, "trial": t, "map": j, **{name: v[j] for name, v in scores.items()}}
                for n in levels for k in self.cfg.sizes for t in range(self.cfg.trials)
                for scores in [self.task.map_scores(n, k, t)] for j in range(len(scores["mi"]))]
        files.write_results(where / files.SCORES_FILE, self.meta, pd.DataFrame(rows, columns=files.SCORE_COLUMNS))

    def save(self, result: dict) -> None:
        """Write one finished run: its predictions, then its row (this process is the files' only writer)."""
        self.predicted[RunKey.of(result)] = result.pop("predictions")
        files.write_predictions(self.cfg.results_dir, list(self.predicted), list(self.predicted.values()),
                                  self.labels)
        self.records.append({**result, "git_commit": self.commit})
        files.write_results(self.path, self.meta, pd.DataFrame(self.records, columns=COLUMNS))
        self.bar.set_postfix(n=result["n"], k=result["k"], test=f"{result['test_accuracy']:.3f}",
                             epochs=result["epochs"])
        self.bar.update()


def executor(cfg: Config):
    """Where the runs are computed (an executor in a context): Dask's workers for cfg.cluster, else this process."""
    return cluster.connect(cfg) if cfg.where else contextlib.nullcontext(executors.InProcess())


def run_sweeps(configs: list[Config], progress: bool = True, wait: bool = False, name: str = "sweep") -> None:
    """Run (or resume) these sweeps on one executor. Every directory is checked before any work; then each sweep is
    opened (its directory held, its source net made or loaded) and its runs submitted. In this process each sweep's
    runs are computed before the next source net trains; on a cluster, while it trains. `name` labels the progress
    bar."""
    executors.check(configs[0].engine)  # source nets train here, by the engine
    experiments = [checked(cfg, wait) for cfg in configs]  # a bad directory is refused now, not after an hour
    opened: list[Sweep] = []
    made: dict[str, tuple[Net, dict, str]] = {}  # this call's source nets by key: a later sweep's same net is reused
    # the cluster first: an address that is not one is refused before a results directory is made
    with executor(configs[0]) as pool, contextlib.ExitStack() as held:
        pool.check(configs[0].engine)  # its workers can run the engine: before any source net trains
        bar = tqdm(total=0, desc=name, unit="run", disable=not progress)
        try:
            for exp in experiments:
                held.enter_context(store.writer(exp.cfg.results_dir, wait))
                found = checks.check_directory(exp)  # again: another writer may have written there meanwhile
                sweep = Sweep(exp, *source_net(exp, progress, made), found, bar)
                opened.append(sweep)
                pool.submit(sweep.task, sweep.todo, sweep.save)
                sweep.read_out()  # here, while a cluster trains
                sweep.score_maps()
                pool.drain(block=not pool.remote)
            pool.drain()
        except KeyboardInterrupt:
            bar.close()
            for sweep in opened:
                print(f"\ninterrupted: {len(sweep.records)} of {len(sweep.grid)} runs are saved in {sweep.path}; run "
                      f"again to resume", file=sys.stderr)
            raise
    bar.close()


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
    run_sweeps([cfg], progress, wait)
    path = Path(cfg.results_dir) / files.RESULTS_FILE
    return files.read_results(path)[1].sort_values(["k", "trial", "n"], ignore_index=True)
