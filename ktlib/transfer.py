"""Knowledge transfer: the recipes that make a target net's bottom n layers, and the nets they copy from."""
from __future__ import annotations

import copy
from dataclasses import dataclass
from numbers import Integral

import torch
from torch import nn

from .model import LAYERS, Net, build


def is_integer(value) -> bool:
    """True for Python and numpy integers (a DataFrame's n is numpy's), False for bools and floats."""
    return isinstance(value, Integral) and not isinstance(value, bool)


def check_levels(n: int) -> int:
    """n itself as a Python int, or a clear error when it is not a level count 0..5."""
    if not is_integer(n) or not 0 <= n <= len(LAYERS) - 1:
        why = f"; n={len(LAYERS)} would leave nothing to train" if n == len(LAYERS) else ""
        raise ValueError(f"n (retained levels) must be an integer in 0..{len(LAYERS) - 1}, got {n!r}{why}")
    return int(n)


# ---------------------------------------------------------------- the nets a recipe copies from

# trained: the source net. The others keep its architecture and take the knowledge out:
# random-lecun: a fresh initialisation at LeCun's scale, U(-2.4/F, 2.4/F); it shrinks the signal layer by layer;
# random-normal: LeCun-normal, N(0, 1/F) weights and zero biases, which keeps the signal's variance;
# random-matched: the random-lecun draw, each tensor rescaled to the trained tensor's standard deviation;
# shuffled: the trained net's values, permuted within each tensor (C3's within its connection table).
COPIES = ("trained", "random-lecun", "random-normal", "random-matched", "shuffled")


def _real(layer: nn.Module, name: str, t: torch.Tensor) -> torch.Tensor:
    """Where a tensor's entries are real parameters: C3's connection table removes some of its weights."""
    mask = getattr(layer, "mask", None)
    return mask.bool() if name == "weight" and mask is not None else torch.ones_like(t, dtype=torch.bool)


def copy_source(kind: str, trained: Net, seed: int) -> Net:
    """The net a recipe copying `kind` copies from, drawn from seed (trained: the source net itself)."""
    if kind not in COPIES:
        raise ValueError(f"a recipe copies one of {COPIES}, got {kind!r}")
    if kind == "trained":
        return trained
    net = build(seed, trained.F6.weight.shape[0])
    if kind == "random-lecun":  # as a fresh initialisation is drawn
        return net
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


# ---------------------------------------------------------------- the recipes

@dataclass(frozen=True)
class Recipe:
    """How a target net's bottom n layers are made: copied from which net, and whether they train (and at what
    share of the configured learning rate)."""
    copies: str
    trains: bool = False
    lr_factor: float = 1.0
    about: str = ""


# Every recipe the study knows, in the order of its tables. n=0 copies nothing: its runs are stored once,
# under BASELINE, and serve every recipe.
RECIPES = {
    "frozen": Recipe("trained", about="copied from the trained source net and frozen: the paper's recipe"),
    "fine-tuned": Recipe("trained", True, 1.0, "copied from the trained source net, then trained with the rest"),
    "fine-tuned-lr0.1": Recipe("trained", True, 0.1, "as fine-tuned, the copied layers at a tenth of the rate"),
    "fine-tuned-lr0.01": Recipe("trained", True, 0.01, "as fine-tuned, the copied layers at a hundredth"),
    "random-matched": Recipe("random-matched", about="random weights at the trained net's scale, frozen"),
    "random-normal": Recipe("random-normal", about="LeCun-normal random weights, frozen"),
    "shuffled": Recipe("shuffled", about="the trained weights shuffled within each layer, frozen"),
    "random-lecun": Recipe("random-lecun", about="random weights at LeCun's initial scale, frozen"),
}
BASELINE = "frozen"  # the recipe under which the shared n=0 runs are stored
# The study's choices among them, each made by a rule (ktlib.controls.chosen_rate, chosen_control) applied to a
# trial run on splits 0 and 1 before the study ran; the controls notebook applies it again to the record:
TUNED = "fine-tuned"                 # fine-tuning, at the copied layers' rate with the best mean accuracy
MATCHED_CONTROL = "random-matched"    # the random control that keeps the signal's scale best


def check_recipe(recipe: str) -> str:
    if recipe not in RECIPES:
        raise ValueError(f"recipe must be one of {tuple(RECIPES)}, got {recipe!r}")
    return recipe


def first_trained(recipe: str, n: int) -> int:
    """The lowest layer a run of this recipe trains: n when the copied layers are frozen, else 0."""
    return 0 if RECIPES[check_recipe(recipe)].trains else n


def freeze(module: nn.Module) -> None:
    for p in module.parameters():
        p.requires_grad_(False)


def transfer(source: Net, n: int, seed: int, recipe: str = "frozen") -> Net:
    """A new net: layers C1.. up to the n-th copied from source (the net the recipe copies, `copy_source`),
    frozen unless the recipe trains them; the rest initialised from seed, alike in every recipe."""
    n = check_levels(n)
    net = build(seed, code_bits=source.F6.weight.shape[0])
    for name in LAYERS[:n]:
        layer = copy.deepcopy(getattr(source, name))
        if first_trained(recipe, n) > 0:
            freeze(layer)
        setattr(net, name, layer)
    return net


def layer_lrs(recipe: str, n: int, lr: float) -> list[float]:
    """The learning rate of each layer a run of this recipe trains, from its first trained layer up."""
    r = RECIPES[check_recipe(recipe)]
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
