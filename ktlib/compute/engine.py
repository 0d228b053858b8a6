"""The sweep's engine: the trials of one (n, k) trained side by side, on frozen features computed once.

What it does and why it computes the same thing as the plain path (`train.train`) is explained once, in the
book's method chapter (book/method.md, "How the runs are computed"); the comments here say how.
"""
from __future__ import annotations

import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from ktlib.compute import native
from ktlib.compute.model import LAYERS, Net, connections, forward_flops, predict, training_flops
from ktlib.compute.stacked import ZS, _y, forward, grad_scale, gradients, keep_mask, slots, stack, views
from ktlib.compute.train import Epoch, on_curve, stop_reason

# ---------------------------------------------------------------- training

class Adam:
    """torch.optim.Adam's fused step on the stacked (R, P) parameters. They are kept scaled by 2S, so the learning
    rate is scaled by it and epsilon divided by it: the same steps.

    The step is torch's own fused kernel (torch._fused_adam_), called as torch.optim.Adam(fused=True) calls it, with
    the state it keeps: the optimiser's wrapper around that call cost about 110 us a step, seven times the kernel on F6's
    parameters for five runs (measured on the Intel Xeon of the engine issue). A test holds the two to the bit.

    segments: (columns, learning rate) of each run of parameters in P order. With more than one rate, each
    segment is a parameter group of its own, updated in a copy and written back into theta after a step.
    native: take each step in C (native.adam: the same step, written as PyTorch's AVX-512 code computes it), as the
    native kernels' one-call epochs do, so that a run's numbers do not depend on which of the two took an epoch."""

    BETAS = (0.9, 0.999)  # torch.optim.Adam's defaults

    def __init__(self, theta: torch.Tensor, segments: list[tuple[int, float]], eps: float = 1e-8,
                 native: bool = False):
        self.theta, self.bounds, self.eps, self.native = theta, [], eps / ZS, native
        merged: list[list] = []
        for width, lr in segments:  # neighbouring layers at one rate are one group, as they would be in one
            if merged and merged[-1][1] == lr:
                merged[-1][0] += width
            else:
                merged.append([width, lr])
        if len(merged) == 1:
            self.params = [theta]
        else:
            start = 0
            for width, _ in merged:
                self.bounds.append((start, start + width))
                start += width
            self.params = [theta[:, a:b].clone() for a, b in self.bounds]
        self.rates = [lr * ZS for _, lr in merged]
        # torch.optim.Adam's state per parameter: its step count (a float32 scalar tensor) and two moments
        self.steps = [torch.zeros((), dtype=torch.float32) for _ in self.params]
        self.moments = [(torch.zeros_like(p), torch.zeros_like(p)) for p in self.params]

    def step(self, grad: torch.Tensor) -> None:
        grads = [grad] if not self.bounds else [grad[:, a:b].contiguous() for a, b in self.bounds]
        for p, g, count, (m, v), lr in zip(self.params, grads, self.steps, self.moments, self.rates):
            if self.native:  # counts as torch does
                native.adam(p, g, (m, v), count, lr, self.BETAS, self.eps)
                continue
            count += 1  # exact: a count in float32, as torch keeps it
            torch._fused_adam_([p], [g], [m], [v], [], [count], amsgrad=False, lr=lr, beta1=self.BETAS[0],
                               beta2=self.BETAS[1], weight_decay=0.0, eps=self.eps, maximize=False)
        for p, (a, b) in zip(self.params, self.bounds):
            self.theta[:, a:b] = p

    def keep(self, rows: torch.Tensor) -> torch.Tensor:
        """Drop the rows of runs that stopped; returns the new parameter tensor."""
        self.theta = self.theta[rows]
        self.params = [self.theta] if not self.bounds else [p[rows] for p in self.params]
        self.moments = [(m[rows], v[rows]) for m, v in self.moments]
        return self.theta


class Helpers:
    """The engine's idle worker threads, lent to the groups still running: once fewer groups run than there are
    workers (the sweep's last, longest groups), a group's kernel calls split its runs over its own thread and its
    share of the idle ones. Each run is still computed whole, by one thread, as it is alone: every run's numbers are
    the same however its group's runs are split (a test pins it)."""

    # A call is split only when each part has at least this much arithmetic (FLOPs): handing a part to another
    # thread and waiting for it costs tens of microseconds. A call is an epoch of steps (NativeKernels.epoch) or an
    # evaluation pass. Split step by step (tried on the Intel Xeon of the engine issue), the n=3 and n=4 groups (30-50
    # MFLOP a step for five runs) did not measurably gain and were left unsplit; split epoch by epoch, bench.py's n=3
    # and n=4 cells (--sizes 10 40) took 3.9 s against 5.1-5.2 s and 3.4-3.9 s against 4.5-4.7 s on the Zen 4
    # (2026-12-07, with that session's other changes; benchmarks/README.md). The n=5 groups' epochs stay whole (under
    # 0.1 GFLOP for five runs of 800 images).
    MIN_PART_FLOPS = 5e7

    def __init__(self, workers: int):
        self.workers, self.running, self.lock = workers, 0, threading.Lock()
        self.pool = ThreadPoolExecutor(workers - 1, thread_name_prefix="ktlib-helper") if workers > 1 else None

    @contextmanager
    def group(self):
        """The block is one running group."""
        with self.lock:
            self.running += 1
        try:
            yield
        finally:
            with self.lock:
                self.running -= 1

    def parts(self, runs: int, flops: float) -> int:
        """How many threads a call of `runs` runs and `flops` FLOPs in all may use now: its own, and its even share
        of the workers no group holds."""
        if self.pool is None or runs < 2 or flops < 2 * self.MIN_PART_FLOPS:  # most calls: no lock to take
            return 1
        with self.lock:
            share = (self.workers - self.running) // max(self.running, 1)
        return max(1, min(runs, 1 + share, int(flops // self.MIN_PART_FLOPS)))

    def split(self, runs: int, k: int, call) -> list:
        """[call(a, b) for each of k parts a..b of the runs], the first on this thread, the others on helpers."""
        bounds = [runs * i // k for i in range(k + 1)]
        others = [self.pool.submit(call, a, b) for a, b in zip(bounds[1:-1], bounds[2:])]
        return [call(bounds[0], bounds[1]), *(f.result() for f in others)]

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True)


def step_by_step(kernels, theta, x, target, perms, grad, frozen, opt: Adam, batch: int,
                 codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One epoch's steps, a kernel call and an Adam step at a time: each run's batches in the order of its row of
    perms (R, N); then the runs' outputs on their images and the nearest codes (kernels.classify)."""
    for idx in perms.split(batch, dim=1):
        opt.step(kernels.gradients(theta, x, target, idx.contiguous(), grad, frozen))
    return kernels.classify(theta, x, codes)


class TorchKernels:
    """The engine's steps in PyTorch (`forward`, `backward`) for runs with n frozen layers: no compiler needed. They
    take `helpers` as the native kernels do, and leave them idle."""

    def __init__(self, net: Net, n: int, helpers: Helpers | None = None):
        self.n, self.layout = n, slots(net, n)
        self.scale = grad_scale(self.layout, keep_mask(net, n))

    def gradients(self, theta, x, target, idx, grad, frozen=None):
        rows = torch.arange(len(idx))[:, None] * x.shape[1]
        pick = (rows + idx).flatten()
        xb = x.flatten(0, 1).index_select(0, pick).view(*idx.shape, *x.shape[2:])
        tb = target.flatten(0, 1).index_select(0, pick).view(*idx.shape, -1)
        g = gradients(theta, xb, tb, self.n, self.layout, self.scale, grad)
        return g if frozen is None else g.mul_(self.hold(frozen))

    def epoch(self, theta, x, target, perms, grad, frozen, opt: Adam, batch: int, codes: torch.Tensor):
        return step_by_step(self, theta, x, target, perms, grad, frozen, opt, batch, codes)

    def hold(self, frozen: torch.Tensor) -> torch.Tensor:
        """(R, P): 0 on the frozen maps' weights and biases of layer n, the first two slots of the layout, else 1."""
        weights, biases = (s for s in self.layout[:2])
        out = torch.ones(len(frozen), self.layout[-1].offset + math.prod(self.layout[-1].shape))
        per_map = math.prod(weights.shape[1:])
        out[:, :weights.offset + math.prod(weights.shape)].view(len(frozen), -1, per_map)[frozen] = 0
        out[:, biases.offset:biases.offset + biases.shape[0]][frozen] = 0
        return out

    def outputs(self, theta, x, shared=False, chunk: int = 512):
        """(R, M, bits): each run's outputs on its inputs x (R, M, ...), or on the shared x (M, ...)."""
        p = views(theta, self.layout)
        with torch.no_grad():
            return torch.stack([torch.cat([
                _y(forward({k: v[r:r + 1] for k, v in p.items()}, (x if shared else x[r])[None, i:i + chunk],
                           self.n)[1][5])[0]
                for i in range(0, x.shape[0 if shared else 1], chunk)]) for r in range(len(theta))])

    def classify(self, theta, x, codes, shared=False) -> tuple[torch.Tensor, torch.Tensor]:
        """(outputs, the index of each output's nearest code): `outputs`, then model.predict."""
        out = self.outputs(theta, x, shared)
        return out, predict(out, codes)

    @staticmethod
    def check() -> None:
        """Nothing to check: PyTorch is all they need."""


class NativeKernels:
    """The engine's steps in C (ktlib/compute/kernels.c, built on first use) for runs with n frozen layers."""

    def __init__(self, net: Net, n: int, helpers: Helpers | None = None):
        if net.F6.weight.shape[0] != native.CODE_BITS:
            raise ValueError(f"the native kernels are built for {native.CODE_BITS} code bits, not "
                             f"{net.F6.weight.shape[0]}; use engine='batched'")
        self.n, self.keep, self.helpers = n, keep_mask(net, n), helpers
        conn = connections()
        self.step_flops, self.image_flops = training_flops(conn, n), forward_flops(conn, n)  # per image

    def _parts(self, runs: int, flops: float) -> int:
        """How many threads a call of these runs and FLOPs may use (Helpers.parts); one without helpers."""
        return 1 if self.helpers is None else self.helpers.parts(runs, flops)

    def gradients(self, theta, x, target, idx, grad, frozen=None):
        parts = self._parts(len(theta), idx.numel() * self.step_flops)
        if parts == 1:  # most calls: no views to make (a small group's step is tens of microseconds)
            return native.gradients(self.n, theta, grad, x, target, idx, self.keep, frozen)

        def part(a: int, b: int) -> None:  # runs a..b: rows of every argument, each contiguous
            native.gradients(self.n, theta[a:b], grad[a:b], x[a:b], target[a:b], idx[a:b], self.keep,
                             None if frozen is None else frozen[a:b])
        self.helpers.split(len(theta), parts, part)
        return grad

    def epoch(self, theta, x, target, perms, grad, frozen, opt: Adam, batch: int, codes: torch.Tensor):
        """`step_by_step`'s steps and its closing `classify`, in one call to C (native.epoch, whose Adam step is
        native.adam's, as opt's) where all parameters train at one rate: a step's Python and its call of PyTorch's Adam
        had cost about half its arithmetic, 20 us of a 60 us step of five runs at n=5, k=40, on the Zen 4 (timed by a
        script outside the repository, not kept). Split over helpers, each part is one such call for its rows (its own
        copy of the step count, which every part advances alike); the part that ends the group's tensor rounds Adam's
        last values as torch does the whole tensor's."""
        if len(opt.params) > 1:
            return step_by_step(self, theta, x, target, perms, grad, frozen, opt, batch, codes)
        parts = self._parts(len(theta), perms.numel() * self.step_flops)
        (m, v), count, R = opt.moments[0], opt.steps[0], len(theta)
        if parts == 1:
            return self._joined([native.epoch(self.n, theta, grad, x, target, perms, batch, self.keep, frozen, (m, v),
                                              count, opt.rates[0], Adam.BETAS, opt.eps, codes=codes)], codes)

        def part(a: int, b: int) -> tuple:  # runs a..b: rows of every argument, each contiguous
            own = count.clone()
            seen = native.epoch(self.n, theta[a:b], grad[a:b], x[a:b], target[a:b], perms[a:b], batch, self.keep,
                                None if frozen is None else frozen[a:b], (m[a:b], v[a:b]), own, opt.rates[0],
                                Adam.BETAS, opt.eps, tail=theta.numel() % 8 if b == R else 0, codes=codes)
            return own, seen
        done = self.helpers.split(R, parts, part)
        count.copy_(done[0][0])
        return self._joined([seen for _, seen in done], codes)

    def classify(self, theta, x, codes, shared=False) -> tuple[torch.Tensor, torch.Tensor]:
        """(outputs, the index of each output's nearest code): both from one call to C (native.classify) for each part
        of the runs, which finds the codes as kt_nearest does while the outputs are still in its vectors; model.predict's
        where it cannot vouch for them all. At n=5 each epoch's evaluation had spent about as long in torch.cdist and argmin as in the
        kernels' outputs, and then a fifth of its time in a call of kt_nearest of its own (on the Zen 4, scripts
        outside the repository)."""
        images = len(theta) * (x.shape[0] if shared else x.shape[1])
        parts = self._parts(len(theta), images * self.image_flops)
        if parts == 1:
            return self._joined([native.classify(self.n, theta, x, shared, codes)], codes)

        def part(a: int, b: int) -> tuple:
            return native.classify(self.n, theta[a:b], x if shared else x[a:b], shared, codes)
        return self._joined(self.helpers.split(len(theta), parts, part), codes)

    @staticmethod
    def _joined(parts: list[tuple], codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The parts' (outputs, nearest codes) as one call's: model.predict on all the outputs where a part could not
        vouch for its codes, so that torch sees the shapes it sees unsplit. One part is taken as it is, uncopied."""
        join = (lambda ts: ts[0]) if len(parts) == 1 else torch.cat
        out = join([o for o, _ in parts])
        if any(found is None for _, found in parts):
            return out, predict(out, codes)
        return out, join([found for _, found in parts])

    def outputs(self, theta, x, shared=False):
        images = len(theta) * (x.shape[0] if shared else x.shape[1])
        parts = self._parts(len(theta), images * self.image_flops)
        if parts == 1:
            return native.outputs(self.n, theta, x, shared)

        def part(a: int, b: int) -> torch.Tensor:
            return native.outputs(self.n, theta[a:b], x if shared else x[a:b], shared)
        return torch.cat(self.helpers.split(len(theta), parts, part))

    @staticmethod
    def check() -> None:
        """Build or load the kernels now: a missing compiler or an unwritable cache is one clear error."""
        native.library()


KERNELS = {"batched": TorchKernels, "native": NativeKernels}


def evaluate(kernels, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor, codes: torch.Tensor,
             shared: bool = False, target: torch.Tensor | None = None,
             seen: tuple | None = None) -> tuple[list, list | None, torch.Tensor]:
    """Per run: (accuracy by nearest code, mean squared error to the codes, the predicted classes: a row each) on
    x (R, N, ...) and labels y (R, N), or on one shared set x (N, ...), y (N,): the test or validation images,
    whose losses no caller reads, so that they are not computed (None). target: codes[y] (R, N, bits), where the
    caller holds it already (the training set's, every epoch); seen: the outputs and nearest codes (kernels.classify),
    where the caller has them (the epoch that just ended computed them)."""
    out, preds = kernels.classify(theta, x, codes, shared) if seen is None else seen
    y = y.expand(len(theta), -1) if shared else y
    # all runs in one call each: the numbers F.mse_loss and predict give run by run (a test pins it), with a
    # fixed cost per epoch that does not grow with the runs
    losses = None if shared else (out - (codes[y] if target is None else target)).square().mean((1, 2)).tolist()
    accs = [hits / y.shape[1] for hits in (preds == y).sum(1).tolist()]
    return accs, losses, preds


class Cancelled(Exception):
    """train_runs was asked to stop before its runs finished."""


@dataclass
class Run:
    """One run's outcome: its per-epoch history, why it stopped, its final test accuracy and predicted test
    classes, its trained parameters (layers n.., flattened, in the net's own scale), its final validation accuracy,
    and its test accuracy curve (train.on_curve: (steps, accuracy), ending with its last step)."""
    history: list[Epoch]
    stopped_by: str
    test_accuracy: float
    weights: torch.Tensor
    predictions: torch.Tensor
    validation_accuracy: float
    curve: list[tuple[int, float]]


def train_runs(nets: list[Net], n: int, x: torch.Tensor, y: torch.Tensor, codes: torch.Tensor, seeds: list[int],
               stop, max_epochs: int, test: tuple[torch.Tensor, torch.Tensor], lr: float | list[float] = 1e-3,
               batch_size: int = 32, on_run=None, cancel: threading.Event | None = None,
               kernels: str = "native", validation: tuple[torch.Tensor, torch.Tensor] | None = None,
               frozen: torch.Tensor | None = None, helpers: Helpers | None = None) -> list[Run]:
    """Train R nets side by side from layer n up (below it they are fixed); each stops by its own rule.

    x: (R, N, ...) the layer-n inputs of each run's training set (`frozen_inputs`), y: (R, N) its labels;
    test, validation: the test and validation sets' layer-n inputs (M, ...) and labels (M,), shared by all runs (no
    validation: its accuracy is NaN); the test accuracy is also read at the steps train.on_curve names, a forward
    pass that changes nothing. Shuffling is
    `train.train`'s (a generator per run, seeded with that run's seed). on_run(index, Run) is called as
    each run stops; once `cancel` is set, Cancelled is raised at the next epoch. lr: one learning rate, or
    one per trained layer from layer n up (transfer.layer_lrs). kernels: "native" (C, see native.py) or
    "batched" (PyTorch). frozen: (R, maps of layer n) bool, the maps of a partly transferred level n that each run
    holds (transfer.frozen_maps): their gradients are zero, and Adam moves them by exactly nothing; None, every
    parameter trains. helpers: the idle workers the native kernels may split the runs over (Helpers), or None."""
    R, N = y.shape
    steps = KERNELS[kernels](nets[0], n, helpers)
    theta = stack(nets, n)
    if theta.shape[1] == 0:
        raise ValueError("the nets have no trainable parameters")
    rates = lr if isinstance(lr, list) else [lr] * (len(LAYERS) - n)
    widths = [sum(math.prod(s.shape) for s in slots(nets[0], n) if s.name.startswith(f"{layer}."))
              for layer in LAYERS[n:]]
    opt = Adam(theta, list(zip(widths, rates, strict=True)), native=kernels == "native")
    grad = torch.empty_like(theta)
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    active = list(range(R))            # which run each row of theta is
    histories: list[list[Epoch]] = [[] for _ in range(R)]
    rules = [stop.follow() for _ in range(R)]  # each run's rule, fed its epochs
    curves: list[list[tuple[int, float]]] = [[] for _ in range(R)]
    results: list[Run | None] = [None] * R
    target = codes[y]
    per_epoch, taken = math.ceil(N / batch_size), 0  # optimiser steps: every run takes as many per epoch
    start = time.perf_counter()
    while active:
        if cancel is not None and cancel.is_set():
            raise Cancelled(f"{len(active)} of {R} runs unfinished")
        seen = steps.epoch(theta, x, target, torch.stack([torch.randperm(N, generator=gens[r]) for r in active]),
                           grad, frozen, opt, batch_size, codes)
        taken += per_epoch
        accs, losses, _ = evaluate(steps, theta, x, y, codes, target=target, seen=seen)
        if on_curve(taken - per_epoch, taken):
            for r, accuracy in zip(active, evaluate(steps, theta, test[0], test[1], codes, shared=True)[0]):
                curves[r].append((taken, accuracy))
        seconds = time.perf_counter() - start
        done = {}
        for row, r in enumerate(active):
            histories[r].append(Epoch(len(histories[r]) + 1, accs[row], losses[row], seconds))
            reason = stop_reason(rules[r], histories[r], max_epochs)
            if reason:
                done[row] = reason
        if not done:
            continue
        stopped = theta[torch.tensor(list(done))]
        test_acc, _, test_preds = evaluate(steps, stopped, test[0], test[1], codes, shared=True)
        valid_acc = (evaluate(steps, stopped, *validation, codes, shared=True)[0] if validation is not None
                     else [float("nan")] * len(done))
        for (row, reason), accuracy, preds, valid in zip(done.items(), test_acc, test_preds, valid_acc):
            r = active[row]
            if not curves[r] or curves[r][-1][0] != taken:
                curves[r].append((taken, accuracy))
            results[r] = Run(histories[r], reason, accuracy, theta[row] / ZS, preds, valid, curves[r])
            if on_run:
                on_run(r, results[r])
        keep = torch.tensor([row for row in range(len(active)) if row not in done], dtype=torch.long)
        active = [active[row] for row in keep.tolist()]
        if active:
            theta, grad = opt.keep(keep), grad[keep]
            frozen = None if frozen is None else frozen[keep]
            x, y, target = x[keep], y[keep], target[keep]
    return results
