"""Training and evaluation: MSE to the class codes, Adam, explicit stopping rules; and the run policy that the
training loops (here and ktlib.compute.engine) obey: which rule stops a run, and the row a finished run leaves."""
from __future__ import annotations

import copy
import math
import time
from collections import deque
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ktlib.compute.model import Net, predict
from ktlib.compute.transfer import frozen_levels, hold_frozen_maps, trainable
from ktlib.config import LAYERS, Config
from ktlib.recipes import recipe as recipe_of


@dataclass(frozen=True)
class Epoch:
    """One row of a run's history, by either path: what the stopping rules read and source.json records."""
    epoch: int
    train_accuracy: float
    train_loss: float
    seconds: float  # since training began


CAP = "cap"  # why a run stopped when no rule said so before max_epochs


@dataclass(frozen=True)
class ReachAccuracy:
    """Stop once training accuracy reaches `accuracy` (the paper stopped its source net at 94.38%)."""
    accuracy: float

    def __call__(self, history: list[Epoch]) -> str | None:
        return "reached" if history[-1].train_accuracy >= self.accuracy else None

    def follow(self):
        """The rule as a run's loop reads it (see `stop_reason`): fed each epoch, it answers for the history so far."""
        return lambda epoch: self([epoch])  # the latest epoch is all it reads


@dataclass(frozen=True)
class Never:
    """No early stop: a fixed budget of epochs (the run goes on to max_epochs, stopped by CAP)."""

    def __call__(self, history: list[Epoch]) -> None:
        return None

    def follow(self):
        return lambda epoch: None


@dataclass(frozen=True)
class Converged:
    """Stop on a fitted training set (100% accuracy and loss below `loss_floor`) or a loss plateau:
    no relative improvement of `min_improvement` over the best loss for `patience` epochs, and not before
    `min_epochs` epochs. Once a run's loss has been NaN, no plateau stops it (as when the rule was numpy's minima)."""
    patience: int
    min_improvement: float
    loss_floor: float
    min_epochs: int = 0

    def __call__(self, history: list[Epoch]) -> str | None:
        see = self.follow()
        return [see(epoch) for epoch in history][-1]

    def follow(self):
        return _Plateau(self)


class _Plateau:
    """Converged, fed a run's epochs one at a time: the best loss before the last `patience` epochs kept as it grows,
    and the least of the last `patience` in a queue (each epoch's loss enters and leaves it once), so that reading the
    rule costs the same at epoch 400 as at epoch 4. The engine reads it for every run after every epoch: its earlier
    form, which re-read the whole history each time, had cost 0.09 s of the 0.49 s of bench.py's n=5, k=10 group on
    the Zen 4 (a profile, not kept)."""

    def __init__(self, rule: Converged):
        self.rule, self.losses, self.best_before, self.nan = rule, [], math.inf, False
        self.recent: deque[int] = deque()  # epochs among the last `patience` whose loss no later one undercuts

    def __call__(self, epoch: Epoch) -> str | None:
        rule, losses, i, loss = self.rule, self.losses, len(self.losses), epoch.train_loss
        losses.append(loss)
        self.nan = self.nan or math.isnan(loss)
        if i >= rule.patience:  # epoch i - patience leaves the last `patience` and joins those before them
            self.best_before = min(self.best_before, losses[i - rule.patience])
        while self.recent and self.recent[0] <= i - rule.patience:
            self.recent.popleft()
        while self.recent and losses[self.recent[-1]] >= loss:
            self.recent.pop()
        self.recent.append(i)
        if epoch.train_accuracy == 1.0 and loss < rule.loss_floor:
            return "fit"
        if i + 1 <= rule.patience or i + 1 < rule.min_epochs or self.nan:
            return None
        return "plateau" if losses[self.recent[0]] > self.best_before * (1 - rule.min_improvement) else None


def stop_reason(see, history: list[Epoch], max_epochs: int) -> str | None:
    """Why a run stops after its latest epoch (its rule's reason, else CAP at max_epochs), or None to go on.
    see: the run's rule as its `follow()` gave it, fed every epoch in turn, this one last."""
    return see(history[-1]) or (CAP if len(history) >= max_epochs else None)


@dataclass
class Fit:
    """How one training went: its history, and why it stopped."""
    history: list[Epoch]
    stopped_by: str


@torch.no_grad()
def outputs(net: Net, x: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    net.eval()
    return torch.cat([net(x[i:i + chunk]) for i in range(0, len(x), chunk)])


@torch.no_grad()
def evaluate(net: Net, x: torch.Tensor, y: torch.Tensor, codes: torch.Tensor) -> tuple[float, float]:
    """(accuracy by nearest code, mean squared error to the codes)."""
    out = outputs(net, x)
    return (predict(out, codes) == y).sum().item() / len(y), F.mse_loss(out, codes[y]).item()


def deterministic() -> None:
    """torch's deterministic kernels wherever it has them: the same seed and configuration, the same numbers."""
    torch.use_deterministic_algorithms(True)


@torch.no_grad()
def predictions(net: Net, x: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """The class of the nearest code, per image."""
    return predict(outputs(net, x), codes)


def train(net: Net, x: torch.Tensor, y: torch.Tensor, codes: torch.Tensor, *, seed: int, stop,
          max_epochs: int, lr: float | list[float] = 1e-3, batch_size: int = 32, on_epoch=None) -> Fit:
    """Train the net's unfrozen layers by minibatch Adam on MSE, until `stop` or max_epochs says so.

    lr: one learning rate, or one per trained layer from the lowest up (transfer.layer_lrs)."""
    params = trainable(net)
    if not params:
        raise ValueError("the net has no trainable parameters")
    n = frozen_levels(net)
    if isinstance(lr, list) and len(set(lr)) > 1:  # a group per layer: Adam's steps are per parameter anyway
        opt = torch.optim.Adam([{"params": trainable(layer), "lr": rate}
                                for layer, rate in zip(net.layers()[n:], lr, strict=True)])
    else:
        opt = torch.optim.Adam(params, lr=lr[0] if isinstance(lr, list) else lr)
    gen = torch.Generator().manual_seed(seed)
    target = codes[y]
    history, see, start = [], stop.follow(), time.perf_counter()
    while True:
        net.train()
        for idx in torch.randperm(len(x), generator=gen).split(batch_size):
            with torch.no_grad():  # frozen layers need no autograd graph
                h = net.features(x[idx], n)
            loss = F.mse_loss(net(h, start=n), target[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            hold_frozen_maps(net)
            opt.step()
        acc, loss = evaluate(net, x, y, codes)
        history.append(Epoch(len(history) + 1, acc, loss, time.perf_counter() - start))
        if on_epoch:
            on_epoch(history[-1])
        reason = stop_reason(see, history, max_epochs)
        if reason:
            return Fit(history, reason)


# ---------------------------------------------------------------- the run policy: when a run stops, and what it leaves

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
    see = Converged(cfg.patience, cfg.min_improvement, cfg.loss_floor).follow()
    for end, epoch in enumerate(history, 1):
        if see(epoch):
            return end, epoch.train_accuracy
    return float("nan"), float("nan")


def source_task_accuracy(source: Net, run_net: Net, n: int, recipe: str, source_test: tuple[torch.Tensor, torch.Tensor],
                         source_codes: torch.Tensor) -> float:
    """The source net's held-out accuracy with its bottom n layers taken from a trained run: how much of the source
    task a run that trains its copied layers forgets. NaN for a run whose copied layers stay as they were copied."""
    if n == 0 or not recipe_of(recipe).trains:
        return float("nan")
    hybrid = copy.deepcopy(source)
    for name in LAYERS[:n]:
        setattr(hybrid, name, getattr(run_net, name))
    return evaluate(hybrid, *source_test, source_codes)[0]


def on_curve(before: int, after: int) -> bool:
    """Whether a run's test accuracy is read after an epoch that took it from `before` to `after` optimiser steps:
    when the epoch passes a power of two (1, 2, 4, ...). The curve then has a constant resolution in log steps, and
    costs a forward pass of the test images per doubling, a few per cent of a run. The test images only measure the
    curve (how fast a run learns): nothing is chosen on it."""
    return after.bit_length() > before.bit_length()


def curve_text(points: list[tuple[int, float]]) -> str:
    """A run's test accuracy curve as its results column holds it: 'steps:accuracy' pairs, by steps."""
    return " ".join(f"{steps}:{accuracy:.6g}" for steps, accuracy in points)


def curve_points(text: str) -> list[tuple[int, float]]:
    """The (optimiser steps, test accuracy) pairs of a test_curve column (curve_text); a ValueError if it is not one."""
    points = [(int(a), float(b)) for a, b in (p.split(":") for p in str(text).split())]
    if not points or any(b <= a for (a, _), (b, _) in zip(points, points[1:])):
        raise ValueError(f"not a test curve: {str(text)[:40]!r}")
    return points


# A run's row, in the order of the results file's columns; `row` fills them, all but the commit (ktlib.record.sweep's),
# and ktlib.record.files.read_results reads them back. validation_accuracy: on the validation images, which every
# choice reads; test_curve: the test accuracy as the run trained (on_curve).
COLUMNS = ["n", "retained", "recipe", "k", "trial", "seed", "test_accuracy", "validation_accuracy", "train_accuracy",
           "train_loss", "epochs", "stopped_by", "seconds", "trainable_parameters", "source_task_accuracy",
           "epoch_rule_epochs", "epoch_rule_train_accuracy", "test_curve", "git_commit"]
# The fields of a run's row that its key and the experiment fix before it trains (Experiment.determined).
DETERMINED = ("retained", "seed", "trainable_parameters")


def retained(n: int) -> str:
    """Which layers n retained levels are: 'none', 'C1', 'C1-S2', ..."""
    return "none" if n == 0 else f"{LAYERS[0]}-{LAYERS[n - 1]}" if n > 1 else LAYERS[0]


def row(cfg: Config, key, seed: int, history: list[Epoch], stopped_by: str, test_accuracy: float,
        predicted: torch.Tensor, source_task_accuracy: float, validation_accuracy: float,
        curve: list[tuple[int, float]], trainable: int) -> dict:
    """A finished run's row of COLUMNS (all but the commit, which the sweep adds), with the first record's rule
    replayed on its history (`epoch_rule`); its test predictions under "predictions", kept apart from the file's
    columns. `key`: the run's ktlib.compute.experiment.RunKey; `curve`: its test accuracy at the steps on_curve
    names, which ends with its last step; `trainable`: the free parameters it trained (transfer.updated_parameters)."""
    last, replayed = history[-1], epoch_rule(cfg, history)
    return {**key._asdict(), "retained": retained(key.n), "seed": seed, "test_accuracy": test_accuracy,
            "validation_accuracy": validation_accuracy, "train_accuracy": last.train_accuracy,
            "train_loss": last.train_loss, "epochs": len(history), "stopped_by": stopped_by, "seconds": last.seconds,
            "trainable_parameters": trainable,
            "source_task_accuracy": source_task_accuracy, "epoch_rule_epochs": replayed[0],
            "epoch_rule_train_accuracy": replayed[1], "test_curve": curve_text(curve),
            "predictions": predicted.numpy().astype("uint8")}
