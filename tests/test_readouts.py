"""Readouts that need no training: nearest class mean, nearest neighbour, and a level's spread."""
import pytest
import torch

from ktlib.compute import readouts, stacked
from ktlib.compute.model import build


def clusters(per_class: int, seed: int, spread: float = 0.3):
    """Three classes around the corners of a triangle, in 2 dimensions."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]])
    y = torch.arange(3).repeat_interleave(per_class)
    return centres[y] + spread * torch.randn(len(y), 2, generator=g), y


@pytest.mark.parametrize("rule", list(readouts.READOUTS.values()))
def test_each_readout_classifies_well_separated_classes_without_error(rule):
    train_x, train_y = clusters(5, seed=0)
    test_x, test_y = clusters(20, seed=1)
    assert torch.equal(rule(train_x, train_y, test_x), test_y)


def test_the_nearest_mean_and_the_nearest_neighbour_differ_where_a_class_has_an_outlier():
    train_x = torch.tensor([[0.0], [0.2], [10.0], [5.5]])  # class 0 at 0.1 on average, class 1 at 7.75
    train_y = torch.tensor([0, 0, 1, 1])
    test_x = torch.tensor([[3.5]])  # nearer class 0's mean, but nearest to class 1's point at 5.5
    assert readouts.nearest_mean(train_x, train_y, test_x).item() == 0
    assert readouts.nearest_neighbour(train_x, train_y, test_x).item() == 1


def test_the_spread_is_the_std_over_images_averaged_over_units():
    features = torch.tensor([[0.0, 1.0], [2.0, 1.0]])  # unit 0 varies (std sqrt 2), unit 1 does not
    assert readouts.spread(features) == pytest.approx(2 ** 0.5 / 2)


def test_a_lecun_scale_random_net_passes_on_less_signal_at_every_level_than_the_trained_scale():
    from ktlib.compute.transfer import copy_source

    images = torch.rand(64, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 1.275 - 0.1
    trained = build(3)
    with torch.no_grad():
        for p in trained.parameters():
            p.mul_(4.0)  # larger weights than an initialisation, as training leaves them
    lecun = stacked.frozen_inputs(copy_source("random-lecun", trained, 5), images)
    matched = stacked.frozen_inputs(copy_source("random-matched", trained, 5), images)
    assert all(readouts.spread(a) < readouts.spread(b) for a, b in zip(lecun[1:], matched[1:]))
