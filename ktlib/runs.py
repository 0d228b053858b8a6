"""Train runs named by their keys and return one row each: by the plain path, or by the engine's groups."""
from __future__ import annotations

import functools
import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

import torch

from . import engine
from .config import Config
from .data import Subset
from .model import Net, connections, trainable_parameters, training_flops
from .results import RunKey, retained
from .train import Converged, Epoch, evaluate, train
from .transfer import transfer


@dataclass
class Task:
    """What every run of a sweep shares: the configuration, the source net, the data, the codes."""
    cfg: Config
    source: Net
    trial_set: Callable[[int, int], tuple[Subset, int]]  # (k, trial) -> that trial's training set and seed
    test: tuple[torch.Tensor, torch.Tensor]              # the test images and labels
    codes: torch.Tensor                                  # the target classes' codes


def grid(cfg: Config) -> list[RunKey]:
    """Every run of the configuration's grid, n varying fastest (so a trial's set is drawn once in a row)."""
    return [RunKey(n, k, t) for k in cfg.sizes for t in range(cfg.trials) for n in cfg.levels]


def stopping_rule(cfg: Config) -> Converged:
    return Converged(cfg.patience, cfg.min_improvement, cfg.loss_floor)


def row(key: RunKey, seed: int, history: list[Epoch], stopped_by: str, test_accuracy: float) -> dict:
    """A finished run's row of the results file (all but the commit, which the sweep adds)."""
    last = history[-1]
    return {**key._asdict(), "retained": retained(key.n), "seed": seed, "test_accuracy": test_accuracy,
            "train_accuracy": last.train_accuracy, "train_loss": last.train_loss, "epochs": len(history),
            "stopped_by": stopped_by, "seconds": last.seconds, "trainable_parameters": trainable_parameters(key.n)}


def plain(task: Task, keys: list[RunKey], on_row) -> None:
    """The plain path, the one to read: each run on its own, by train.train."""
    cfg = task.cfg
    trial_set = functools.lru_cache(maxsize=1)(task.trial_set)  # keys come n fastest: a set serves every n
    for key in keys:
        train_set, seed = trial_set(key.k, key.trial)
        net = transfer(task.source, key.n, seed)
        fit = train(net, torch.from_numpy(train_set.x), torch.from_numpy(train_set.y), task.codes, seed=seed,
                    stop=stopping_rule(cfg), max_epochs=cfg.max_epochs, lr=cfg.lr, batch_size=cfg.batch_size)
        on_row(row(key, seed, fit.history, fit.stopped_by, evaluate(net, *task.test, task.codes)[0]))


def group_cost(n: int, k: int) -> float:
    """A group's rough cost, to schedule the long ones first: its training FLOPs per epoch."""
    return k * training_flops(connections(), n)


def grouped(task: Task, keys: list[RunKey], on_row) -> None:
    """The engine: the trials of each (n, k) side by side, one group per worker thread, longest first.

    A group is computed whole even when only some of its runs are asked for: a run's numbers depend on the
    group it trained in (through rounding), so a resumed sweep recomputes the same groups."""
    cfg, source, codes = task.cfg, task.source, task.codes
    wanted = set(keys)
    groups = sorted({(key.n, key.k) for key in keys}, key=lambda g: -group_cost(*g))
    cache = engine.FeatureCache()
    test_x = {n: cache.get(source, task.test[0], n) for n, _ in groups}
    sets = {k: [task.trial_set(k, t) for t in range(cfg.trials)] for _, k in groups}
    events: queue.Queue = queue.Queue()
    cancel = threading.Event()

    def job(n: int, k: int, x: torch.Tensor, y: torch.Tensor, seeds: list[int]):
        torch.set_num_threads(1)  # a worker per core; one thread also keeps the numbers machine-independent
        nets = [transfer(source, n, s) for s in seeds]
        engine.train_runs(nets, n, x, y, codes, seeds, stopping_rule(cfg), cfg.max_epochs, (test_x[n], task.test[1]),
                          cfg.lr, cfg.batch_size, on_run=lambda t, run: events.put((RunKey(n, k, t), seeds[t], run)),
                          cancel=cancel, kernels=cfg.engine)

    def drain(block: bool) -> None:
        try:
            while True:
                key, seed, run = events.get(timeout=0.1) if block else events.get_nowait()
                block = False
                if key in wanted:
                    on_row(row(key, seed, run.history, run.stopped_by, run.test_accuracy))
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


TRAINERS = {"plain": plain, "native": grouped, "batched": grouped}


def check(engine_name: str) -> None:
    """Fail now, before any work, if this engine cannot run here (the native kernels need a compiler)."""
    if engine_name != "plain":
        engine.KERNELS[engine_name].check()


def train_runs(task: Task, keys: list[RunKey], on_row=None) -> list[dict]:
    """Train the runs `keys` by the configured engine; each row goes to on_row as its run ends. Returns them."""
    rows = []

    def collect(r: dict) -> None:
        rows.append(r)
        if on_row:
            on_row(r)

    if keys:
        TRAINERS[task.cfg.engine](task, keys, collect)
    return rows
