"""The source net: trained on the source classes until it reaches the paper's training accuracy, and measured on
held-out images of them."""
from __future__ import annotations

import dataclasses
import math

import torch
from tqdm import tqdm  # plain text bars: they also read well in executed notebooks

from ktlib.compute import engine, stacked
from ktlib.compute.experiment import Experiment, source_trainer
from ktlib.compute.model import Net, build, state_hash
from ktlib.compute.train import Fit, Never, ReachAccuracy, evaluate, train
from ktlib.config import Purpose


def held_out(exp: Experiment, net: Net) -> dict:
    """The source net's accuracy on held-out images of its own classes (its stopping rule reads only its
    training accuracy, so this is the number that says what it learned)."""
    s = exp.source_test_set()
    accuracy, _ = evaluate(net, torch.from_numpy(s.x), torch.from_numpy(s.y), exp.codes("source"))
    return {"held_out_accuracy": accuracy, "held_out_images": len(s.y)}


def source_epochs(cfg, images: int) -> int:
    """The epochs the source net may train: source_max_epochs under the paper's rule; with source_steps, the whole
    epochs nearest that many optimiser steps (at least one), so that nets on more or fewer images train as long to
    within half an epoch."""
    if cfg.source_steps is None:
        return cfg.source_max_epochs
    return max(1, round(cfg.source_steps / math.ceil(images / cfg.batch_size)))


def by_engine(exp: Experiment, net: Net, x: torch.Tensor, y: torch.Tensor, seed: int, stop, epochs: int) -> Fit:
    """train.train's steps for the whole net, by the engine's kernels (one run, on one thread as the engine's
    groups are); the net is left trained."""
    cfg, held = exp.cfg, exp.source_test_set()
    with stacked.torch_threads():
        run = engine.train_runs([net], 0, x[None], y[None], exp.codes("source"), [seed], stop, epochs,
                                (torch.from_numpy(held.x), torch.from_numpy(held.y)), cfg.lr,
                                cfg.batch_size, kernels=cfg.engine)[0]
    stacked.load(net, 0, run.weights)
    return Fit(run.history, run.stopped_by)


def train_source(exp: Experiment, progress: bool = True) -> tuple[Net, dict]:
    """A source net trained now, and its record: classes, seed, epochs, accuracies, the state's sha256, history."""
    cfg = exp.cfg
    seed = exp.source_seed(Purpose.SOURCE_INIT)
    net = build(seed, cfg.code_bits)
    s = exp.source_set()
    x, y, codes = torch.from_numpy(s.x), torch.from_numpy(s.y), exp.codes("source")
    stop = ReachAccuracy(cfg.source_accuracy) if cfg.source_steps is None else Never()
    epochs = source_epochs(cfg, len(y))
    if source_trainer(cfg) != "plain":
        fit = by_engine(exp, net, x, y, seed, stop, epochs)
    else:
        with tqdm(total=epochs, desc=f"source net ({exp.chars('source')})", unit="epoch",
                  disable=not progress) as bar:
            def show(epoch):
                bar.set_postfix(train_accuracy=f"{epoch.train_accuracy:.4f}", goal=cfg.source_accuracy)
                bar.update()
            fit = train(net, x, y, codes, seed=seed, stop=stop, max_epochs=epochs, lr=cfg.lr,
                        batch_size=cfg.batch_size, on_epoch=show)
    last = fit.history[-1]
    info = {"classes": exp.chars("source"), "seed": seed, "epochs": len(fit.history),
            "steps": len(fit.history) * math.ceil(len(y) / cfg.batch_size),
            "train_accuracy": last.train_accuracy, "seconds": last.seconds,
            "reached_target": last.train_accuracy >= cfg.source_accuracy,
            "state_sha256": state_hash(net), **held_out(exp, net),
            "history": [dataclasses.asdict(e) for e in fit.history]}
    return net, info
