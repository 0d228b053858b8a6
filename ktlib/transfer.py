"""Knowledge transfer: copy the bottom n layers of a source net into a fresh net and freeze them."""
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


def freeze(module: nn.Module) -> None:
    for p in module.parameters():
        p.requires_grad_(False)


def transfer(source: Net, n: int, seed: int) -> Net:
    """A new net: layers C1.. up to the n-th copied from source and frozen, the rest initialised from seed."""
    n = check_levels(n)
    net = build(seed, code_bits=source.F6.weight.shape[0])
    for name in LAYERS[:n]:
        layer = copy.deepcopy(getattr(source, name))
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
