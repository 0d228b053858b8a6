import math

import pytest
import torch

from ktlib.compute.model import build, target_codes
from ktlib.compute.train import CAP, Converged, Epoch, ReachAccuracy, epoch_rule, evaluate, stopping_rule, train
from ktlib.compute.transfer import transfer


def toy(n=60, classes=6, seed=0):
    """Separable toy images: one bright block per class."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    x = torch.full((n, 1, 32, 32), -0.1) + 0.05 * torch.randn(n, 1, 32, 32, generator=g)
    for i, c in enumerate(y.tolist()):
        x[i, 0, 4 + 4 * c: 8 + 4 * c, 8:24] = 1.175
    return x, y, target_codes(classes, 20, seed=0)


def test_training_is_deterministic_for_a_seed():
    x, y, codes = toy()
    runs = []
    for _ in range(2):
        net = build(0)
        h = train(net, x, y, codes, seed=1, stop=ReachAccuracy(1.01), max_epochs=3).history
        runs.append(([r.train_loss for r in h], net.state_dict()))
    assert runs[0][0] == runs[1][0]
    assert all(torch.equal(runs[0][1][k], runs[1][1][k]) for k in runs[0][1])


def test_training_fits_a_separable_set_and_stops_on_the_fit():
    x, y, codes = toy()
    net = build(0)
    fit = train(net, x, y, codes, seed=0, stop=Converged(20, 0.01, 1e-3), max_epochs=500, lr=3e-3)
    h = fit.history
    assert fit.stopped_by == "fit" and h[-1].train_accuracy == 1.0 and h[-1].train_loss < 1e-3 and len(h) < 500
    assert evaluate(net, x, y, codes) == (h[-1].train_accuracy, pytest.approx(h[-1].train_loss))


def test_reach_accuracy_stops_at_the_first_epoch_at_or_above_it():
    x, y, codes = toy()
    fit = train(build(0), x, y, codes, seed=0, stop=ReachAccuracy(0.5), max_epochs=200)
    h = fit.history
    assert fit.stopped_by == "reached"
    assert h[-1].train_accuracy >= 0.5 and all(r.train_accuracy < 0.5 for r in h[:-1])


def test_the_convergence_rule_names_why_it_stops():
    rule = Converged(patience=3, min_improvement=0.01, loss_floor=1e-3)
    row = lambda loss, acc=0.5: Epoch(0, acc, loss, 0.0)
    assert rule([row(1.0), row(0.9), row(0.8), row(0.7)]) is None
    assert rule([row(1.0), row(0.9), row(0.895), row(0.899), row(0.92)]) == "plateau"  # < 1% better for 3 epochs
    assert rule([row(1.0), row(0.9), row(0.95), row(0.95), row(0.85)]) is None
    assert rule([row(0.0009, acc=1.0)]) == "fit"
    assert rule([row(0.0009, acc=0.99)]) is None


def test_max_epochs_caps_training():
    x, y, codes = toy()
    fit = train(transfer(build(0), 5, seed=0), x, y, codes, seed=0, stop=ReachAccuracy(1.01), max_epochs=4)
    assert [r.epoch for r in fit.history] == [1, 2, 3, 4] and fit.stopped_by == CAP


def test_a_net_with_nothing_to_train_is_refused():
    net = build(0)
    for p in net.parameters():
        p.requires_grad_(False)
    x, y, codes = toy()
    with pytest.raises(ValueError, match="no trainable parameters"):
        train(net, x, y, codes, seed=0, stop=ReachAccuracy(1.0), max_epochs=1)


@pytest.mark.parametrize("images, epochs", [(20, 500), (100, 125), (200, 72), (400, 39), (800, 20)])
def test_every_training_set_size_gets_the_same_optimiser_steps_before_a_plateau_may_stop_it(images, epochs):
    """500 steps of 32 images: 500 epochs of one batch at k=1 (20 images), 20 epochs of 25 batches at k=40; the
    patience stays 20 epochs, or becomes 500 steps when counted in steps."""
    from ktlib.config import Config

    rule = stopping_rule(Config(), images)
    assert (rule.min_epochs, rule.patience) == (epochs, 20)
    assert stopping_rule(Config(patience=500, patience_unit="steps"), images).patience == epochs


def test_a_plateau_does_not_stop_a_run_before_its_minimum_but_a_fit_does():
    flat = [Epoch(e + 1, 0.05, 1.0, 0.0) for e in range(30)]
    assert Converged(3, 0.01, 1e-3)(flat) == "plateau"
    assert Converged(3, 0.01, 1e-3, min_epochs=31)(flat) is None
    assert Converged(3, 0.01, 1e-3, min_epochs=30)(flat) == "plateau"
    assert Converged(3, 0.01, 1e-3, min_epochs=100)([Epoch(1, 1.0, 0.0005, 0.0)]) == "fit"


def test_the_first_records_rule_replayed_on_a_history_stops_where_it_would_have():
    from ktlib.config import Config

    flat = [Epoch(e + 1, 0.05, 1.0, 0.0) for e in range(60)]  # a run that has not begun to learn
    assert epoch_rule(Config(), flat) == (Config().patience + 1, 0.05)
    learning = [Epoch(e + 1, 0.05, 1.0 / (e + 1), 0.0) for e in range(60)]  # better by > 1% every epoch
    assert all(math.isnan(v) for v in epoch_rule(Config(), learning))  # it would not have stopped it
    assert all(math.isnan(v) for v in epoch_rule(Config(stopping="budget"), flat))  # no rule to replay


def _plateau_as_defined(rule: Converged, history: list[Epoch]) -> str | None:
    """Converged's rule read straight from its definition, on the whole history at once."""
    last = history[-1]
    if last.train_accuracy == 1.0 and last.train_loss < rule.loss_floor:
        return "fit"
    losses = [h.train_loss for h in history]
    if len(losses) <= rule.patience or len(losses) < rule.min_epochs or any(math.isnan(v) for v in losses):
        return None
    return "plateau" if min(losses[-rule.patience:]) > min(losses[:-rule.patience]) * (1 - rule.min_improvement) else None


@pytest.mark.parametrize("seed", range(6))
def test_the_rule_read_epoch_by_epoch_answers_as_its_definition_does_at_every_epoch(seed):
    """What the training loops read after each epoch (Converged.follow, which keeps the minima as they go) against the
    rule read from the whole history: losses that fall, stall, repeat exactly, jump, and (one seed) turn NaN."""
    g = torch.Generator().manual_seed(seed)
    losses = (torch.rand(300, generator=g) * 0.2 + torch.linspace(1, 0.01, 300)).tolist()
    losses[100:160] = [losses[99]] * 60  # a stretch of equal losses
    if seed == 5:
        losses[120] = float("nan")
    history = [Epoch(e + 1, 1.0 if e % 37 == 36 else 0.9, loss, 0.0) for e, loss in enumerate(losses)]
    for rule in (Converged(7, 0.01, 0.02), Converged(20, 0.001, 1e-3, min_epochs=50), Converged(1, 0.0, 0.5)):
        see = rule.follow()
        for end in range(1, len(history) + 1):
            assert see(history[end - 1]) == _plateau_as_defined(rule, history[:end]), (rule, end)
        assert rule(history) == _plateau_as_defined(rule, history)
