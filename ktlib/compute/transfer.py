"""Knowledge transfer: the nets a recipe copies from, and a target net made from one (ktlib.recipes says how)."""
from __future__ import annotations

import copy
import math

import torch
from torch import nn

from ktlib.compute.model import LAYERS, Net, build
from ktlib.compute.stacked import frozen_inputs, spread
from ktlib.config import check_levels
from ktlib.recipes import BASELINE, COPIES, first_trained
from ktlib.recipes import recipe as recipe_of

# ---------------------------------------------------------------- the nets a recipe copies from

def _real(layer: nn.Module, name: str, t: torch.Tensor) -> torch.Tensor:
    """Where a tensor's entries are real parameters: C3's connection table removes some of its weights."""
    mask = getattr(layer, "mask", None)
    return mask.bool() if name == "weight" and mask is not None else torch.ones_like(t, dtype=torch.bool)


SPREAD_TOLERANCE = 1e-3  # random-spread: each level's spread within this share of the trained net's
SPREAD_ROUNDS = 50       # rescalings per layer at most (a squashed output's spread is not linear in the scale)
SPREAD_IMAGES = 512      # the images a random-spread net is scaled on, at most
SATURATED = 0.02         # d log spread / d log scale under which a level's spread has stopped growing


def copy_source(kind: str, trained: Net, seed: int, images: torch.Tensor | None = None) -> Net:
    """The net a recipe copying `kind` copies from, drawn from seed (trained: the source net itself). random-spread
    needs `images`: those its levels' spreads are matched on (the source classes' held-out images)."""
    if kind not in COPIES:
        raise ValueError(f"a recipe copies one of {COPIES}, got {kind!r}")
    if kind == "trained":
        return trained
    net = build(seed, trained.F6.weight.shape[0])
    if kind == "random-lecun":  # as a fresh initialisation is drawn
        return net
    if kind == "random-spread":
        if images is None:
            raise ValueError("a random-spread net is scaled on images: give the source classes' held-out images")
        return spread_matched(net, trained, images)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name in LAYERS:
            layer, theirs = getattr(net, name), getattr(trained, name)
            for pname, p in layer.named_parameters():
                real, t = _real(layer, pname, p), theirs.get_parameter(pname)
                if kind == "random-normal":
                    fan_in = layer.mask.flatten(1).sum(1).view(-1, *[1] * (p.dim() - 1)) \
                        if hasattr(layer, "mask") and pname == "weight" else 4.0  # sub-sampling: a 2x2 tile
                    p.copy_(torch.randn(p.shape, generator=gen) / fan_in ** 0.5 if pname != "bias"
                            else torch.zeros_like(p))
                elif kind == "random-matched":
                    p.mul_(t[real].std() / p[real].std())
                else:  # shuffled
                    values = t[real]
                    p.copy_(torch.zeros_like(p))
                    p[real] = values[torch.randperm(len(values), generator=gen)]
                p.mul_(real)
    return net


def spread_matched(net: Net, trained: Net, images: torch.Tensor) -> Net:
    """net, each of its layers C1..C5 rescaled bottom up (weights and biases, or S2's and S4's coefficients and
    biases, by one factor) until the level it makes varies from image to image (stacked.spread) as much as the trained
    net's level does, within SPREAD_TOLERANCE, on SPREAD_IMAGES of `images` (every stride-th: a set ordered by class
    keeps each class's share). A layer's scale moves only its own level and those above, so matching them in order
    leaves each matched level as it was. The factor is found by the secant method on log spread against log scale:
    squashing makes the spread grow more slowly than the scale, so one rescaling by the ratio undershoots; where the
    spread stops growing (SATURATED) before it reaches the trained net's, the layer stays as near as it got, and the
    readouts' record of the spreads shows how near. F6, which no recipe copies, is left."""
    images = images[::-(-len(images) // SPREAD_IMAGES)]  # a ceiling division: at most SPREAD_IMAGES
    want = [spread(f) for f in frozen_inputs(trained, images)]
    with torch.no_grad():
        for n, layer in enumerate(net.layers()[:len(LAYERS) - 1], start=1):
            scale, before = 0.0, None  # log of the factor applied so far; (log scale, log spread) of the last round
            for _ in range(SPREAD_ROUNDS):
                got = math.log(spread(frozen_inputs(net, images)[n]))
                miss = math.log(want[n]) - got
                if abs(math.expm1(miss)) <= SPREAD_TOLERANCE:
                    break
                slope = 1.0 if before is None or scale == before[0] else (got - before[1]) / (scale - before[0])
                if slope < SATURATED:  # the spread no longer grows with the scale: as near as squashing allows
                    break
                step = max(-2.0, min(2.0, miss / slope))  # at most a factor e^2 a round
                before, scale = (scale, got), scale + step
                for p in layer.parameters():
                    p.mul_(math.exp(step))
    return net


# ---------------------------------------------------------------- the target net

def freeze(module: nn.Module) -> None:
    for p in module.parameters():
        p.requires_grad_(False)


def transfer(source: Net, n: int, seed: int, recipe: str = BASELINE, kept: torch.Tensor | None = None) -> Net:
    """A new net: layers C1.. up to the n-th copied from source (the net the recipe copies, `copy_source`),
    frozen unless the recipe trains them; the rest initialised from seed, alike in every recipe. A partial recipe
    copies its level n whole too, then gives the maps not `kept` (a bool per map, ktlib.compute.maps.kept_maps) the
    fresh weights a net from seed has there, and marks the kept ones frozen (`frozen_maps`): they train no more than
    the levels below, and the others train with the levels above."""
    n = check_levels(n)
    net = build(seed, code_bits=source.F6.weight.shape[0])
    start = first_trained(recipe, n)
    fresh = getattr(net, LAYERS[n - 1]) if n else None
    for name in LAYERS[:n]:
        layer = copy.deepcopy(getattr(source, name))
        if LAYERS.index(name) < start:
            freeze(layer)
        setattr(net, name, layer)
    if recipe_of(recipe).level is not None:
        if kept is None or kept.dtype != torch.bool or kept.shape != fresh.bias.shape or not 0 < kept.sum() < len(kept):
            raise ValueError(f"a {recipe} net needs the maps it keeps: a bool per map of {LAYERS[n - 1]}, some of them")
        layer = getattr(net, LAYERS[n - 1])
        with torch.no_grad():
            layer.weight[~kept] = fresh.weight[~kept]
            layer.bias[~kept] = fresh.bias[~kept]
        layer.frozen_maps = kept.clone()
    return net


def frozen_maps(layer: nn.Module) -> torch.Tensor | None:
    """Which output maps of a layer are frozen though the layer trains (a partial recipe's kept maps), or None."""
    return getattr(layer, "frozen_maps", None)


def hold_frozen_maps(net: Net) -> None:
    """Zero the gradients of frozen maps' weights and biases: Adam (with no weight decay) then moves them by exactly
    zero, since its first moment stays zero."""
    for layer in net.layers():
        frozen = frozen_maps(layer)
        if frozen is not None:
            for p in (layer.weight, layer.bias):
                if p.grad is not None:
                    p.grad[frozen] = 0


def updated_parameters(net: Net) -> int:
    """The free parameters training updates: those of every layer that trains, less a partial level's frozen maps'."""
    total = 0
    for layer in net.layers():
        if any(p.requires_grad for p in layer.parameters()):
            total += layer.free_parameters()
            frozen = frozen_maps(layer)
            if frozen is not None:
                mask = getattr(layer, "mask", torch.ones_like(layer.weight))
                total -= int(mask[frozen].sum()) + int(frozen.sum())
    return total


def layer_lrs(recipe: str, n: int, lr: float) -> list[float]:
    """The learning rate of each layer a run of this recipe trains, from its first trained layer up."""
    r = recipe_of(recipe)
    return [lr * (r.lr_factor if i < n else 1.0) for i in range(first_trained(recipe, n), len(LAYERS))]


def trainable(net: nn.Module) -> list[nn.Parameter]:
    return [p for p in net.parameters() if p.requires_grad]


def frozen_levels(net: Net) -> int:
    """How many bottom layers are frozen (the n of the paper)."""
    n = 0
    for layer in net.layers():
        if any(p.requires_grad for p in layer.parameters()):
            break
        n += 1
    return n
