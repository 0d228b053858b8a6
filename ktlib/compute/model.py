"""The LeNet-5 style net of the paper's Figure 1, its free-parameter count, and the class target codes."""
from __future__ import annotations

import functools
import hashlib
import io

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ktlib.config import LAYERS  # the layers by name, bottom up: what n counts

PAPER_FREE_PARAMETERS = {"C1": 156, "S2": 12, "C3": 1516, "S4": 32, "C5": 48120, "F6": 2420}

# LeCun et al. (1998), Table I: which of the 6 S2 maps feed each of the 16 C3 maps.
C3_TABLE = (
    (0, 1, 2), (1, 2, 3), (2, 3, 4), (3, 4, 5), (4, 5, 0), (5, 0, 1),
    (0, 1, 2, 3), (1, 2, 3, 4), (2, 3, 4, 5), (3, 4, 5, 0), (4, 5, 0, 1), (5, 0, 1, 2),
    (0, 1, 3, 4), (1, 2, 4, 5), (0, 2, 3, 5),
    (0, 1, 2, 3, 4, 5),
)


# LeCun's squashing function A tanh(S a): f(+-1) = +-1, so +-1 targets sit in its linear range.
TANH_A, TANH_S = 1.7159, 2.0 / 3.0


def scaled_tanh(a: torch.Tensor) -> torch.Tensor:
    """LeCun's squashing function 1.7159 tanh(2a/3)."""
    return TANH_A * torch.tanh(a * TANH_S)


def c3_mask() -> torch.Tensor:
    mask = torch.zeros(16, 6, 5, 5)
    for out, ins in enumerate(C3_TABLE):
        mask[out, list(ins)] = 1.0
    return mask


class Conv(nn.Module):
    """A convolution layer whose kernel may be masked by a connection table."""

    def __init__(self, c_in: int, c_out: int, k: int, mask: torch.Tensor | None = None):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(c_out, c_in, k, k))
        self.bias = nn.Parameter(torch.empty(c_out))
        self.register_buffer("mask", torch.ones(c_out, c_in, k, k) if mask is None else mask)

    def forward(self, x):
        return scaled_tanh(F.conv2d(x, self.weight * self.mask, self.bias))

    def free_parameters(self) -> int:
        return int(self.mask.sum()) + self.bias.numel()

    def reset_parameters(self, gen: torch.Generator):
        fan_in = self.mask.flatten(1).sum(1)  # per output map: masked-out inputs don't count
        bound = (2.4 / fan_in).view(-1, 1, 1, 1)
        w = (torch.rand(self.weight.shape, generator=gen) * 2 - 1) * bound
        b = (torch.rand(self.bias.shape, generator=gen) * 2 - 1) * bound.flatten()
        with torch.no_grad():
            self.weight.copy_(w * self.mask)
            self.bias.copy_(b)


class Subsample(nn.Module):
    """Trainable 2x2 sub-sampling: per map, coefficient * (sum of the tile) + bias, then squash."""

    def __init__(self, maps: int):
        super().__init__()
        self.coef = nn.Parameter(torch.empty(maps))
        self.bias = nn.Parameter(torch.empty(maps))

    def forward(self, x):
        tile_sum = F.avg_pool2d(x, 2) * 4.0
        return scaled_tanh(tile_sum * self.coef.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1))

    def free_parameters(self) -> int:
        return self.coef.numel() + self.bias.numel()

    def reset_parameters(self, gen: torch.Generator):
        bound = 2.4 / 4  # fan-in of a unit is its 2x2 tile
        with torch.no_grad():
            self.coef.copy_((torch.rand(self.coef.shape, generator=gen) * 2 - 1) * bound)
            self.bias.copy_((torch.rand(self.bias.shape, generator=gen) * 2 - 1) * bound)


class Net(nn.Module):
    """C1-S2-C3-S4-C5-F6 on 32x32 inputs; F6 has one unit per code bit (20)."""

    def __init__(self, code_bits: int = 20):
        super().__init__()
        self.C1 = Conv(1, 6, 5)
        self.S2 = Subsample(6)
        self.C3 = Conv(6, 16, 5, mask=c3_mask())
        self.S4 = Subsample(16)
        self.C5 = Conv(16, 120, 5)
        self.F6 = Conv(120, code_bits, 1)  # a 1x1 "feature map" is a fully connected unit

    def layers(self) -> list[nn.Module]:
        return [getattr(self, name) for name in LAYERS]

    def forward(self, x, start: int = 0):
        """Run layers start.. on x (x is the output of layer start-1, or the image when start=0)."""
        for layer in self.layers()[start:]:
            x = layer(x)
        return x.flatten(1)

    def features(self, x, stop: int):
        """Output of the bottom `stop` layers."""
        for layer in self.layers()[:stop]:
            x = layer(x)
        return x

    def reset_layers(self, start: int, gen: torch.Generator):
        """Re-initialise layers start.. with LeCun's fan-in rule: U(-2.4/F, 2.4/F)."""
        for layer in self.layers()[start:]:
            layer.reset_parameters(gen)


def build(seed: int, code_bits: int = 20) -> Net:
    net = Net(code_bits)
    net.reset_layers(0, torch.Generator().manual_seed(seed))
    return net


def free_parameters(net: Net) -> dict[str, int]:
    """Free parameters per layer, counted from the modules (masked-out C3 weights excluded)."""
    return {name: layer.free_parameters() for name, layer in zip(LAYERS, net.layers())}


def layer_shapes(net: Net) -> dict[str, tuple[int, ...]]:
    """Output shape (maps, height, width) of each layer for one 32x32 input."""
    x, shapes = torch.zeros(1, 1, 32, 32), {}
    with torch.no_grad():
        for name, layer in zip(LAYERS, net.layers()):
            x = layer(x)
            shapes[name] = tuple(x.shape[1:])
    return shapes


@functools.lru_cache(maxsize=1)
def reference() -> Net:
    """A net to count from: counts and shapes do not depend on the weights."""
    return build(0)


@functools.lru_cache(maxsize=None)
def trainable_parameters(n: int) -> int:
    """Free parameters left to train when the bottom n layers are frozen (counted once per n: every row asks)."""
    return sum(list(free_parameters(reference()).values())[n:])


def connections(net: Net | None = None) -> dict[str, int]:
    """Connections per layer for one image, LeCun et al.'s cost measure: one multiply-add each (biases
    included). A convolution uses each free parameter once per output position; a sub-sampling unit
    has its 4 inputs and a bias."""
    net = net or reference()
    out = {}
    for (name, (maps, h, w)), layer in zip(layer_shapes(net).items(), net.layers()):
        out[name] = layer.free_parameters() * h * w if isinstance(layer, Conv) else 5 * maps * h * w
    return out


def forward_flops(conn: dict[str, int], n: int) -> int:
    """FLOPs of layers n.. on one image (2 per connection)."""
    return 2 * sum(list(conn.values())[n:])


def training_flops(conn: dict[str, int], n: int) -> int:
    """FLOPs of one training step on one image with the bottom n layers frozen: the forward pass, the
    weight gradients of layers n.., and the input gradients of layers n+1.. (layer n's input is fixed)."""
    return 2 * forward_flops(conn, n) + forward_flops(conn, n + 1)


def run_flops(start: int, epochs, images, test_images: int = 0, conn: dict[str, int] | None = None):
    """A run's useful FLOPs, from its lowest trained layer `start` up: each epoch, one training step and one
    evaluation (for the stopping rule) on each of its training images; then its test images, once."""
    conn = conn or connections()
    return (epochs * images * (training_flops(conn, start) + forward_flops(conn, start))
            + test_images * forward_flops(conn, start))


def state_hash(net: nn.Module) -> str:
    """sha256 of every tensor in the net's state: two nets with the same hash compute the same function."""
    buf = io.BytesIO()
    for name, t in sorted(net.state_dict().items()):
        buf.write(name.encode())
        buf.write(t.detach().contiguous().numpy().tobytes())
    return hashlib.sha256(buf.getvalue()).hexdigest()


# ---------------------------------------------------------------- target codes

def target_codes(n_classes: int, bits: int = 20, seed: int = 0, scheme: str = "random") -> torch.Tensor:
    """One +-1 target vector per class: distinct random codes (the paper), or one-of-N."""
    if scheme == "one-of-n":
        if bits != n_classes:
            raise ValueError(f"one-of-N codes need bits == classes, got {bits} bits for {n_classes} classes")
        return torch.eye(n_classes) * 2 - 1
    if scheme != "random":
        raise ValueError(f"unknown code scheme {scheme!r}; use 'random' or 'one-of-n'")
    if n_classes > 2 ** bits:
        raise ValueError(f"{bits} bits cannot give {n_classes} distinct codes")
    rng = np.random.default_rng(seed)
    while True:
        codes = rng.integers(0, 2, size=(n_classes, bits))
        if len(np.unique(codes, axis=0)) == n_classes:
            return torch.tensor(codes * 2 - 1, dtype=torch.float32)


def predict(outputs: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """Index of the nearest code (Euclidean) for each output row; outputs (M, bits), or (R, M, bits) for R runs."""
    return torch.cdist(outputs, codes.expand(*outputs.shape[:-2], -1, -1)).argmin(-1)
