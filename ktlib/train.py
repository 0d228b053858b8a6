"""Training and evaluation: MSE to the class codes, Adam, and explicit stopping rules."""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .model import Net, predict
from .transfer import frozen_levels, trainable


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


@dataclass(frozen=True)
class Never:
    """No early stop: a fixed budget of epochs (the run goes on to max_epochs, stopped by CAP)."""

    def __call__(self, history: list[Epoch]) -> None:
        return None


@dataclass(frozen=True)
class Converged:
    """Stop on a fitted training set (100% accuracy and loss below `loss_floor`) or a loss plateau:
    no relative improvement of `min_improvement` over the best loss for `patience` epochs, and not before
    `min_epochs` epochs."""
    patience: int
    min_improvement: float
    loss_floor: float
    min_epochs: int = 0

    def __call__(self, history: list[Epoch]) -> str | None:
        last = history[-1]
        if last.train_accuracy == 1.0 and last.train_loss < self.loss_floor:
            return "fit"
        losses = np.array([h.train_loss for h in history])
        if len(losses) <= self.patience or len(losses) < self.min_epochs:
            return None
        best_before = losses[: -self.patience].min()
        return "plateau" if losses[-self.patience:].min() > best_before * (1 - self.min_improvement) else None


def stop_reason(rule, history: list[Epoch], max_epochs: int) -> str | None:
    """Why a run stops after its latest epoch (its rule's reason, else CAP at max_epochs), or None to go on."""
    return rule(history) or (CAP if len(history) >= max_epochs else None)


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
    history, start = [], time.perf_counter()
    while True:
        net.train()
        for idx in torch.randperm(len(x), generator=gen).split(batch_size):
            with torch.no_grad():  # frozen layers need no autograd graph
                h = net.features(x[idx], n)
            loss = F.mse_loss(net(h, start=n), target[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        acc, loss = evaluate(net, x, y, codes)
        history.append(Epoch(len(history) + 1, acc, loss, time.perf_counter() - start))
        if on_epoch:
            on_epoch(history[-1])
        reason = stop_reason(stop, history, max_epochs)
        if reason:
            return Fit(history, reason)
