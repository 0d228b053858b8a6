"""Train runs named by their keys and return one row each: by the plain path, or by the engine's groups."""
from __future__ import annotations

import copy
import math
import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

import torch

from . import engine
from .config import Config
from .data import Subset
from .model import LAYERS, Net, connections, trainable_parameters, training_flops
from .results import RunKey, retained
from .train import Converged, Epoch, Never, evaluate, predictions, train
from .transfer import BASELINE, RECIPES, first_trained, layer_lrs, transfer


@dataclass
class Task:
    """What every run of a sweep shares: the configuration, the source net, the data, the codes."""
    cfg: Config
    source: Net
    trial_set: Callable[[int, int], tuple[Subset, int]]  # (k, trial) -> that trial's training set and seed
    test: tuple[torch.Tensor, torch.Tensor]              # the test images and labels
    codes: torch.Tensor                                  # the target classes' codes
    copies: dict[str, Net]                               # the nets the recipes copy from (transfer.COPIES)
    source_test: tuple[torch.Tensor, torch.Tensor]       # held-out images and labels of the source classes
    source_codes: torch.Tensor                           # the source classes' codes

    def copied_from(self, recipe: str) -> Net:
        """The net whose bottom layers a run of this recipe copies."""
        kind = RECIPES[recipe].copies
        if kind not in self.copies:
            raise ValueError(f"a {recipe} run needs the task's {kind!r} net")
        return self.copies[kind]

    def source_task_accuracy(self, run_net: Net, key: RunKey) -> float:
        """The source net's held-out accuracy with its bottom n layers taken from a trained run: how much of
        the source task a run that trains its copied layers forgets. NaN for a run whose copied layers stay
        as they were copied."""
        if key.n == 0 or not RECIPES[key.recipe].trains:
            return float("nan")
        hybrid = copy.deepcopy(self.source)
        for name in LAYERS[:key.n]:
            setattr(hybrid, name, getattr(run_net, name))
        return evaluate(hybrid, *self.source_test, self.source_codes)[0]


def grid(cfg: Config) -> list[RunKey]:
    """Every run of the configuration's grid, n and recipe varying fastest (so a trial's set is drawn once in
    a row); the n=0 run, which copies nothing, once per trial, under the baseline recipe."""
    return [RunKey(n, k, t, r) for k in cfg.sizes for t in range(cfg.trials) for n in cfg.levels
            for r in (cfg.recipes if n > 0 else [BASELINE])]


def stopping_rule(cfg: Config, set_size: int) -> Converged | Never:
    """The configured rule for a training set of this many images: its patience and its minimum, counted in
    optimiser steps, become epochs of this set."""
    if cfg.stopping == "budget":
        return Never()
    steps = math.ceil(set_size / cfg.batch_size)  # per epoch
    patience = cfg.patience if cfg.patience_unit == "epochs" else math.ceil(cfg.patience / steps)
    return Converged(patience, cfg.min_improvement, cfg.loss_floor, math.ceil(cfg.min_steps / steps))


def epoch_rule(cfg: Config, history: list[Epoch]) -> tuple[float, float]:
    """Where the first record's rule (the configured patience in epochs, with no minimum) would have stopped this
    run, replayed on its own history: (that epoch, the training accuracy then); NaNs when it would not have stopped
    it by its last epoch, or the run does not train to convergence."""
    if cfg.stopping != "converged" or cfg.patience_unit != "epochs":
        return float("nan"), float("nan")
    rule = Converged(cfg.patience, cfg.min_improvement, cfg.loss_floor)
    for end in range(1, len(history) + 1):
        if rule(history[:end]):
            return end, history[end - 1].train_accuracy
    return float("nan"), float("nan")


def row(key: RunKey, seed: int, history: list[Epoch], stopped_by: str, test_accuracy: float,
        predicted: torch.Tensor, source_task_accuracy: float, replayed: tuple[float, float]) -> dict:
    """A finished run's row of the results file (all but the commit, which the sweep adds), and its test
    predictions under "predictions" (kept apart from the file's columns)."""
    last = history[-1]
    return {**key._asdict(), "retained": retained(key.n), "seed": seed, "test_accuracy": test_accuracy,
            "train_accuracy": last.train_accuracy, "train_loss": last.train_loss, "epochs": len(history),
            "stopped_by": stopped_by, "seconds": last.seconds,
            "trainable_parameters": trainable_parameters(first_trained(key.recipe, key.n)),
            "source_task_accuracy": source_task_accuracy, "epoch_rule_epochs": replayed[0],
            "epoch_rule_train_accuracy": replayed[1], "predictions": predicted.numpy().astype("uint8")}


def plain(task: Task, keys: list[RunKey], on_row) -> None:
    """The plain path, the one to read: each run on its own, by train.train."""
    cfg = task.cfg
    for key in keys:
        train_set, seed = task.trial_set(key.k, key.trial)
        net = transfer(task.copied_from(key.recipe), key.n, seed, key.recipe)
        fit = train(net, torch.from_numpy(train_set.x), torch.from_numpy(train_set.y), task.codes, seed=seed,
                    stop=stopping_rule(cfg, len(train_set.y)), max_epochs=cfg.max_epochs,
                    lr=layer_lrs(key.recipe, key.n, cfg.lr), batch_size=cfg.batch_size)
        on_row(row(key, seed, fit.history, fit.stopped_by, evaluate(net, *task.test, task.codes)[0],
                   predictions(net, task.test[0], task.codes), task.source_task_accuracy(net, key),
                   epoch_rule(cfg, fit.history)))


def group_cost(recipe: str, n: int, k: int) -> float:
    """A group's rough cost, to schedule the long ones first: its training FLOPs per epoch."""
    return k * training_flops(connections(), first_trained(recipe, n))


Group = tuple[str, int, int]  # (recipe, n, k): one task of the engine, the trials of one cell trained together


def groups(keys: list[RunKey]) -> list[Group]:
    """The groups that hold these runs, longest first.

    A group is computed whole even when only some of its runs are asked for: a run's numbers depend on the
    group it trained in (through rounding), so a resumed sweep recomputes the same groups."""
    return sorted({(key.recipe, key.n, key.k) for key in keys}, key=lambda g: -group_cost(*g))


def group_name(cfg: Config, group: Group) -> str:
    """The group's runs by their keys, for an error message."""
    recipe, n, k = group
    return f"RunKey(n={n}, k={k}, trial=0..{cfg.trials - 1}, recipe={recipe!r})"


def group_inputs(task: Task, cache: engine.FeatureCache, group: Group) -> tuple:
    """What the group's trials train on: their sets' inputs to the first trained layer, labels, seeds, and the
    test set's inputs to that layer."""
    recipe, n, k = group
    copied, start = task.copied_from(recipe), first_trained(recipe, n)  # fine-tuned starts at the image
    sets = [task.trial_set(k, t) for t in range(task.cfg.trials)]
    x = torch.stack([cache.get(copied, torch.from_numpy(s.x), start) for s, _ in sets])
    y = torch.stack([torch.from_numpy(s.y) for s, _ in sets])
    return x, y, [seed for _, seed in sets], cache.get(copied, task.test[0], start)


def train_group(task: Task, group: Group, inputs: tuple, on_row=None, cancel: threading.Event | None = None
                ) -> list[dict]:
    """Train one group's trials side by side, on one thread; each run's row goes to on_row as it stops."""
    cfg, (recipe, n, k), (x, y, seeds, test_x) = task.cfg, group, inputs
    torch.set_num_threads(1)  # a worker per core; one thread also keeps the numbers machine-independent
    out = []

    nets = [transfer(task.copied_from(recipe), n, s, recipe) for s in seeds]
    start = first_trained(recipe, n)

    def done(t: int, run: engine.Run) -> None:
        key = RunKey(n, k, t, recipe)
        trained = engine.load(copy.deepcopy(nets[t]), start, run.weights)
        out.append(row(key, seeds[t], run.history, run.stopped_by, run.test_accuracy, run.predictions,
                       task.source_task_accuracy(trained, key), epoch_rule(cfg, run.history)))
        if on_row:
            on_row(out[-1])

    engine.train_runs(nets, start, x, y, task.codes, seeds, stopping_rule(cfg, y.shape[1]), cfg.max_epochs,
                      (test_x, task.test[1]), layer_lrs(recipe, n, cfg.lr), cfg.batch_size, on_run=done,
                      cancel=cancel, kernels=cfg.engine)
    return out


class GroupFailed(RuntimeError):
    """A group of runs raised: the one error a sweep reports, naming the group's run keys."""


def failed(cfg: Config, group: Group, error: BaseException, where: str = "") -> GroupFailed:
    return GroupFailed(f"the runs {group_name(cfg, group)} failed{where}: {type(error).__name__}: {error}")


def grouped(task: Task, keys: list[RunKey], on_row) -> None:
    """The engine in this process: one group per worker thread, longest first (see `groups`)."""
    wanted = set(keys)
    cache = engine.FeatureCache()
    rows: queue.Queue = queue.Queue()
    cancel = threading.Event()

    def drain(block: bool) -> None:
        try:
            while True:
                r = rows.get(timeout=0.1) if block else rows.get_nowait()
                block = False
                if RunKey.of(r) in wanted:
                    on_row(r)
        except queue.Empty:
            pass

    threads = torch.get_num_threads()
    pool = ThreadPoolExecutor(task.cfg.worker_count(), thread_name_prefix="ktlib-engine")
    try:
        futures = {pool.submit(train_group, task, g, group_inputs(task, cache, g), rows.put, cancel): g
                   for g in groups(keys)}
        pending = set(futures)
        while pending:
            drain(block=True)
            for f in [f for f in pending if f.done()]:
                pending.discard(f)
                if f.exception() is not None:  # a worker's error stops the sweep here
                    raise failed(task.cfg, futures[f], f.exception()) from f.exception()
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
