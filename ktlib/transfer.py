"""Knowledge transfer: copy the bottom n layers of a source net into a fresh net, by one of three recipes."""
from __future__ import annotations

import copy
from numbers import Integral

from torch import nn

from .model import LAYERS, Net, build


def is_integer(value) -> bool:
    """True for Python and numpy integers (a DataFrame's n is numpy's), False for bools and floats."""
    return isinstance(value, Integral) and not isinstance(value, bool)


def check_levels(n: int) -> int:
    """n itself as a Python int, or a clear error when it is not a level count 0..5."""
    if not is_integer(n) or not 0 <= n <= len(LAYERS) - 1:
        raise ValueError(f"n (retained levels) must be an integer in 0..{len(LAYERS) - 1}, got {n!r}; "
                         f"n={len(LAYERS)} would leave nothing to train")
    return int(n)


# How the bottom n layers of a target net are made (n=0 copies nothing: one baseline, stored as "frozen"):
# frozen: copied from the trained source net and frozen, the paper's recipe;
# random-frozen: copied from an untrained net (the split's random source) and frozen: the same free
#   parameters as frozen, without the knowledge (Jarrett et al. 2009; Yosinski et al. 2014);
# fine-tuned: copied from the trained source net, then trained with the rest.
RECIPES = ("frozen", "random-frozen", "fine-tuned")
BASELINE = "frozen"  # the recipe under which the shared n=0 runs are stored


def check_recipe(recipe: str) -> str:
    if recipe not in RECIPES:
        raise ValueError(f"recipe must be one of {RECIPES}, got {recipe!r}")
    return recipe


def first_trained(recipe: str, n: int) -> int:
    """The lowest layer a run of this recipe trains: n when the copied layers are frozen, else 0."""
    return 0 if check_recipe(recipe) == "fine-tuned" else n


def freeze(module: nn.Module) -> None:
    for p in module.parameters():
        p.requires_grad_(False)


def transfer(source: Net, n: int, seed: int, recipe: str = "frozen") -> Net:
    """A new net: layers C1.. up to the n-th copied from source (for random-frozen, pass the random net),
    frozen unless the recipe fine-tunes them; the rest initialised from seed, alike in every recipe."""
    n = check_levels(n)
    net = build(seed, code_bits=source.F6.weight.shape[0])
    for name in LAYERS[:n]:
        layer = copy.deepcopy(getattr(source, name))
        if first_trained(recipe, n) > 0:
            freeze(layer)
        setattr(net, name, layer)
    return net


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
