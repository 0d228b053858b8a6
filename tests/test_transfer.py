import numpy as np
import pytest
import torch

from ktlib.compute.model import LAYERS, build
from ktlib.compute.train import Converged, train
from ktlib.compute.transfer import copy_source, frozen_levels, trainable, transfer


@pytest.fixture(scope="module")
def source():
    return build(123)


@pytest.mark.parametrize("n", range(6))
def test_bottom_n_layers_are_copied_and_frozen_the_rest_fresh_from_the_seed(source, n):
    net, fresh = transfer(source, n, seed=9), build(9)
    assert frozen_levels(net) == n
    for i, name in enumerate(LAYERS):
        mine, src, new = (getattr(m, name).state_dict() for m in (net, source, fresh))
        expected = src if i < n else new
        assert all(torch.equal(mine[k], expected[k]) for k in mine), name
        assert all(p.requires_grad == (i >= n) for p in getattr(net, name).parameters())


def test_transfer_does_not_alias_the_source(source):
    net = transfer(source, 5, seed=0)
    assert net.C1.weight.data_ptr() != source.C1.weight.data_ptr()


@pytest.mark.parametrize("n", [1, 3, 5])
def test_frozen_layers_are_bit_identical_after_training_and_not_in_the_optimiser(source, n):
    net = transfer(source, n, seed=1)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    frozen_ids = {id(p) for name in LAYERS[:n] for p in getattr(net, name).parameters()}
    assert not frozen_ids & {id(p) for p in trainable(net)}
    x = torch.randn(40, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    y = torch.arange(40) % 4
    codes = torch.tensor([[1.0] * 20, [-1.0] * 20, [1.0, -1.0] * 10, [-1.0, 1.0] * 10])
    train(net, x, y, codes, seed=0, stop=Converged(5, 0.01, 1e-3), max_epochs=5, lr=0.05, batch_size=8)
    after = net.state_dict()
    for key, value in before.items():
        layer = key.split(".")[0]
        if LAYERS.index(layer) < n:
            assert torch.equal(after[key], value), key           # bit-identical
            assert all(p.grad is None for p in getattr(net, layer).parameters())
        elif not key.endswith("mask"):
            assert not torch.equal(after[key], value), key       # the rest did learn


@pytest.mark.parametrize("n", [-1, 6, 2.5, True, "3"])
def test_levels_outside_0_to_5_are_a_clear_error(source, n):
    with pytest.raises(ValueError, match=r"n \(retained levels\) must be an integer in 0\.\.5"):
        transfer(source, n, seed=0)


def test_numpy_integers_are_valid_levels(source):
    """A results row's n is a numpy integer; it must work wherever an int does."""
    assert frozen_levels(transfer(source, np.int64(3), seed=0)) == 3


@pytest.mark.parametrize("n", [1, 4])
def test_fine_tuned_copies_the_bottom_layers_and_trains_them_with_the_rest(source, n):
    net, frozen = transfer(source, n, seed=9, recipe="fine-tuned"), transfer(source, n, seed=9)
    assert frozen_levels(net) == 0 and len(trainable(net)) == len(list(net.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), frozen.state_dict().values()))


def test_an_unknown_recipe_is_refused(source):
    with pytest.raises(ValueError, match="recipe must be one of"):
        transfer(source, 2, seed=0, recipe="thawed")


@pytest.fixture(scope="module")
def trained():
    """A net whose weights are not those of an initialisation: every tensor scaled and shifted by its own amount."""
    net = build(7)
    with torch.no_grad():
        for i, p in enumerate(net.parameters()):
            p.mul_(1.5 + 0.7 * i).add_(0.01 * i)
        net.C3.weight.mul_(net.C3.mask)
    return net


def real(net, layer, name):
    """A layer's tensor's real entries: C3's connection table leaves some of its weights out."""
    t = getattr(net, layer).get_parameter(name).detach()
    return t[net.C3.mask.bool()] if (layer, name) == ("C3", "weight") else t.flatten()


@pytest.mark.parametrize("layer", LAYERS)
def test_the_shuffled_control_holds_each_trained_tensors_values_exactly_in_other_places(trained, layer):
    shuffled = copy_source("shuffled", trained, seed=5)
    for name, _ in getattr(trained, layer).named_parameters():
        mine, theirs = real(shuffled, layer, name), real(trained, layer, name)
        assert torch.equal(mine.sort().values, theirs.sort().values)  # the same multiset
        if mine.numel() > 10:
            assert not torch.equal(mine, theirs)                      # in other places
    assert torch.equal(shuffled.C3.weight * (1 - shuffled.C3.mask), torch.zeros_like(shuffled.C3.weight))


@pytest.mark.parametrize("layer", LAYERS)
def test_the_scale_matched_control_has_each_layers_spread_within_five_percent_of_the_trained_nets(trained, layer):
    matched, lecun = copy_source("random-matched", trained, seed=5), copy_source("random-lecun", trained, seed=5)
    for name, _ in getattr(trained, layer).named_parameters():
        mine, theirs = real(matched, layer, name), real(trained, layer, name)
        assert abs(mine.std() / theirs.std() - 1) < 0.05, name
        ratio = mine / real(lecun, layer, name)  # the random-lecun draw, rescaled: only the scale is the trained net's
        assert torch.allclose(ratio, ratio[0].expand_as(ratio))


def test_lecun_normal_weights_have_variance_one_over_the_fan_in_and_no_bias(trained):
    net = copy_source("random-normal", trained, seed=5)
    assert net.C5.weight.std().item() == pytest.approx((16 * 25) ** -0.5, rel=0.05)
    assert net.C1.weight.std().item() == pytest.approx(25 ** -0.5, rel=0.15)
    assert all(torch.equal(getattr(net, layer).bias, torch.zeros_like(getattr(net, layer).bias)) for layer in LAYERS)


def test_the_lecun_scale_control_is_a_fresh_initialisation_and_trained_is_the_net_itself(trained):
    assert all(torch.equal(a, b) for a, b in zip(copy_source("random-lecun", trained, 5).state_dict().values(),
                                                 build(5).state_dict().values()))
    assert copy_source("trained", trained, 5) is trained
    with pytest.raises(ValueError, match="a recipe copies one of"):
        copy_source("thawed", trained, 5)


def test_the_spread_control_is_the_lecun_draw_rescaled_layer_by_layer_on_the_images_it_is_given(trained):
    images = torch.randn(64, 1, 32, 32)
    spread, lecun = copy_source("random-spread", trained, 5, images), copy_source("random-lecun", trained, 5)
    for layer in LAYERS[:-1]:  # one factor per layer, weights and biases alike
        ratios = torch.cat([(p / q).flatten() for p, q in zip(getattr(spread, layer).parameters(),
                                                               getattr(lecun, layer).parameters())])
        ratios = ratios[ratios.isfinite()]
        assert torch.allclose(ratios, ratios[0].expand_as(ratios), rtol=1e-4)
    assert torch.equal(spread.F6.weight, lecun.F6.weight)  # no recipe copies F6
    with pytest.raises(ValueError, match="held-out images"):
        copy_source("random-spread", trained, 5)
