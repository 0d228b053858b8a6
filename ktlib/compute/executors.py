"""Where the runs are computed: every executor takes a sweep's runs by their keys (`submit`) and hands back one row
per run (`drain`). This module's runs in this process, by the plain path or the engine's groups;
ktlib.compute.cluster's on Dask workers."""
from __future__ import annotations

import contextlib
import copy
import math
import queue
import threading
from concurrent.futures import ThreadPoolExecutor

import torch

from ktlib.compute import engine, stacked
from ktlib.compute.experiment import RunKey, Task, grid
from ktlib.compute.model import connections, training_flops
from ktlib.compute.train import Epoch, evaluate, on_curve, predictions, row, source_task_accuracy, stopping_rule, train
from ktlib.compute.transfer import frozen_maps, layer_lrs, transfer, updated_parameters
from ktlib.config import Config
from ktlib.recipes import first_trained
from ktlib.recipes import recipe as recipe_of


def check(engine_name: str) -> None:
    """Fail now, before any work, if this engine cannot run here (the native kernels need a compiler)."""
    if engine_name != "plain":
        engine.KERNELS[engine_name].check()


def forgotten(task: Task, net, key: RunKey) -> float:
    """The source task's held-out accuracy with a run's copied layers put back under the source net's own
    (train.source_task_accuracy)."""
    return source_task_accuracy(task.source, net, key.n, key.recipe, task.source_test, task.source_codes)


def plain(task: Task, keys: list[RunKey], on_row) -> None:
    """The plain path, the one to read: each run on its own, by train.train."""
    cfg = task.cfg
    for key in keys:
        train_set, seed = task.trial_set(key.k, key.trial)
        net = transfer(task.copied_from(key.recipe), key.n, seed, key.recipe, task.kept(key.recipe, key.k, key.trial))
        per_epoch, curve = math.ceil(len(train_set.y) / cfg.batch_size), []

        def read(epoch: Epoch) -> None:  # the test accuracy as the run trains (train.on_curve)
            if on_curve((epoch.epoch - 1) * per_epoch, epoch.epoch * per_epoch):
                curve.append((epoch.epoch * per_epoch, evaluate(net, *task.test, task.codes)[0]))

        fit = train(net, torch.from_numpy(train_set.x), torch.from_numpy(train_set.y), task.codes, seed=seed,
                    stop=stopping_rule(cfg, len(train_set.y)), max_epochs=cfg.max_epochs,
                    lr=layer_lrs(key.recipe, key.n, cfg.lr), batch_size=cfg.batch_size, on_epoch=read)
        accuracy, steps = evaluate(net, *task.test, task.codes)[0], len(fit.history) * per_epoch
        on_row(row(cfg, key, seed, fit.history, fit.stopped_by, accuracy, predictions(net, task.test[0], task.codes),
                   forgotten(task, net, key), evaluate(net, *task.validation, task.codes)[0],
                   curve if curve and curve[-1][0] == steps else [*curve, (steps, accuracy)], updated_parameters(net)))


# ---------------------------------------------------------------- the engine's groups

# One task of the engine: the recipes whose runs train together, n and k. A group holds every trial of one recipe's
# cell; the partial recipes that keep as many maps of the same level train in one group (all their choosers), since
# they share their inputs and their arithmetic: at C5, k=40, a step of 90 runs cost about half as much per run as a
# step of five (measured on the pilot of issue 38).
Group = tuple[tuple[str, ...], int, int]


def bundle(key: RunKey) -> tuple:
    """What the runs of one group share: the cell, or for a partial recipe its level, its kept maps and k."""
    r = recipe_of(key.recipe)
    return (key.n, key.k, r.kept) if r.level is not None else (key.recipe, key.n, key.k)


def group_cost(group: Group) -> float:
    """A group's rough cost, to schedule the long ones first: its training FLOPs per epoch."""
    recipes, n, k = group
    return len(recipes) * k * training_flops(connections(), first_trained(recipes[0], n))


def groups(keys: list[RunKey], cfg: Config) -> list[Group]:
    """The groups that hold these runs, longest first, each with every recipe of cfg's grid that trains in it.

    A group is computed whole even when only some of its runs are asked for: a run's numbers depend, in their last
    bits, on the group it trained in (runs that stop apart, trained beside others and then beside fewer, differ), so
    a resumed sweep recomputes the same groups."""
    wanted = {bundle(key) for key in keys}
    members: dict[tuple, dict[str, None]] = {}  # bundle -> its recipes, in the grid's order
    cells: dict[tuple, tuple[int, int]] = {}     # bundle -> (n, k)
    for key in grid(cfg):
        if bundle(key) in wanted:
            members.setdefault(bundle(key), {})[key.recipe] = None
            cells[bundle(key)] = (key.n, key.k)
    found = [(tuple(recipes), *cells[b]) for b, recipes in members.items()]
    return sorted(found, key=lambda g: -group_cost(g))


def group_inputs(task: Task, cache: stacked.FeatureCache, group: Group) -> tuple:
    """What the group's runs train on, recipe by recipe and trial by trial: their sets' inputs to the first trained
    layer, labels, seeds, the maps each keeps (None unless partial), and the test and validation sets' inputs to that
    layer."""
    recipes, n, k = group
    copied, start = task.copied_from(recipes[0]), first_trained(recipes[0], n)  # fine-tuned starts at the image
    sets = [task.trial_set(k, t) for t in range(task.cfg.trials)]
    # the shared sets first: a worker that finds one begun by another computes its chunks still untaken
    # (FeatureCache.get_many)
    test_x, valid_x, *trained = cache.get_many(copied, [task.test[0], task.validation[0],
                                                        *(torch.from_numpy(s.x) for s, _ in sets)], start)
    x, y = torch.stack(trained), torch.stack([torch.from_numpy(s.y) for s, _ in sets])
    if len(recipes) > 1:  # every recipe's runs on the same trials' sets
        x, y = x.repeat(len(recipes), *[1] * (x.dim() - 1)), y.repeat(len(recipes), 1)
    kept = [task.kept(r, k, t) for r in recipes for t in range(task.cfg.trials)]
    return x, y, [seed for _ in recipes for _, seed in sets], kept, test_x, valid_x


def train_group(task: Task, group: Group, inputs: tuple, on_row=None, cancel: threading.Event | None = None,
                helpers: engine.Helpers | None = None) -> list[dict]:
    """Train one group's runs side by side, on one thread (and on the idle workers `helpers` lends it); each run's
    row goes to on_row as it stops."""
    cfg, (recipes, n, k), (x, y, seeds, kept, test_x, valid_x) = task.cfg, group, inputs
    torch.set_num_threads(1)  # the engine's rule, for good in a worker: every run computes on one thread
    out, trials = [], cfg.trials
    runs = [(r, t) for r in recipes for t in range(trials)]

    nets = [transfer(task.copied_from(r), n, s, r, m) for (r, _), s, m in zip(runs, seeds, kept)]
    start = first_trained(recipes[0], n)
    frozen = torch.stack([frozen_maps(net.layers()[start]) for net in nets]) if any(m is not None for m in kept) else None

    def done(i: int, run: engine.Run) -> None:
        recipe, t = runs[i]
        key = RunKey(n, k, t, recipe)
        trained = stacked.load(copy.deepcopy(nets[i]), start, run.weights)
        out.append(row(cfg, key, seeds[i], run.history, run.stopped_by, run.test_accuracy, run.predictions,
                       forgotten(task, trained, key), run.validation_accuracy, run.curve, updated_parameters(nets[i])))
        if on_row:
            on_row(out[-1])

    with helpers.group() if helpers is not None else contextlib.nullcontext():
        engine.train_runs(nets, start, x, y, task.codes, seeds, stopping_rule(cfg, y.shape[1]), cfg.max_epochs,
                          (test_x, task.test[1]), layer_lrs(recipes[0], n, cfg.lr), cfg.batch_size, on_run=done,
                          cancel=cancel, kernels=cfg.engine, validation=(valid_x, task.validation[1]), frozen=frozen,
                          helpers=helpers)
    return out


class GroupFailed(RuntimeError):
    """A group of runs raised: the one error a sweep reports, naming the group's run keys."""


def group_text(group: Group) -> str:
    """A group as an error or a task names it: 'frozen n=5 k=2', or its first recipe and how many train with it."""
    recipes, n, k = group
    return f"{recipes[0]}{f' and {len(recipes) - 1} more' if len(recipes) > 1 else ''} n={n} k={k}"


def failed(cfg: Config, group: Group, error: BaseException, where: str = "") -> GroupFailed:
    recipes, n, k = group
    which = f"recipe={recipes[0]!r}" if len(recipes) == 1 else f"recipe in {list(recipes)}"
    return GroupFailed(f"the runs RunKey(n={n}, k={k}, trial=0..{cfg.trials - 1}, {which}) failed{where}: "
                       f"{type(error).__name__}: {error}")


def inputs_and_train(task: Task, cache: stacked.FeatureCache, group: Group, on_row, cancel: threading.Event,
                     helpers: engine.Helpers) -> list[dict]:
    """A worker's task: its group's inputs (from the shared cache, or computed on this worker while the other workers
    compute theirs), then its runs (train_group)."""
    torch.set_num_threads(1)  # as train_group: the features are computed on one thread, as they always are
    with helpers.group():  # a worker computing features is busy: the groups that train lend it no work
        inputs = group_inputs(task, cache, group)
    return train_group(task, group, inputs, on_row, cancel, helpers)


_GROUP_ENDED = object()  # put on grouped's queue of rows as each group ends


def grouped(task: Task, keys: list[RunKey], on_row) -> None:
    """The engine in this process: one group per worker thread, longest first (see `groups`)."""
    wanted = set(keys)
    cache = stacked.FeatureCache()
    rows: queue.Queue = queue.Queue()
    cancel = threading.Event()

    def drain(block: bool) -> None:
        try:
            while True:
                r = rows.get(timeout=0.1) if block else rows.get_nowait()
                block = False
                if r is not _GROUP_ENDED and RunKey.of(r) in wanted:
                    on_row(r)
        except queue.Empty:
            pass

    with stacked.torch_threads():  # as each group does; this process's count afterwards as it was
        pool = ThreadPoolExecutor(task.cfg.worker_count(), thread_name_prefix="ktlib-engine")
        helpers = engine.Helpers(task.cfg.worker_count())  # the last groups' share of the idle workers
        try:
            futures = {pool.submit(inputs_and_train, task, cache, g, rows.put, cancel, helpers): g
                       for g in groups(keys, task.cfg)}
            for f in futures:  # wakes the wait below as a group ends, which would otherwise sleep out its timeout
                f.add_done_callback(lambda _: rows.put(_GROUP_ENDED))
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
            helpers.close()
            drain(block=False)  # runs that finished meanwhile are kept


# ---------------------------------------------------------------- the executor of this process

class InProcess:
    """The runs computed here: one at a time by the plain path, or the engine's groups on a thread per core. The work
    is done in `drain`, one sweep after another, so that nothing else (a sweep's readouts, the next source net)
    shares the cores with it."""
    remote = False  # its work takes this process's cores

    def __init__(self):
        self.todo: list[tuple[Task, list[RunKey], object]] = []

    def check(self, engine_name: str) -> None:
        check(engine_name)

    def submit(self, task: Task, keys: list[RunKey], on_row) -> None:
        """The runs `keys` of a sweep; on_row gets each one's row in `drain`, as it finishes."""
        if keys:
            self.todo.append((task, keys, on_row))

    def drain(self, block: bool = True) -> None:
        """Compute every submitted run (block=False: nothing, as nothing computes meanwhile)."""
        while block and self.todo:
            task, keys, on_row = self.todo.pop(0)
            (plain if task.cfg.engine == "plain" else grouped)(task, keys, on_row)


def compute(task: Task, keys: list[RunKey]) -> list[dict]:
    """The rows of these runs, computed here by the task's engine, in the order they finished."""
    rows: list[dict] = []
    executor = InProcess()
    executor.submit(task, keys, rows.append)
    executor.drain()
    return rows
