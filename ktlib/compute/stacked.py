"""The nets of a group as one stack: their parameters in one flat (R, P) tensor (the layout of its columns), and
LeNet-5's forward and backward passes written out by hand on it, from any level up; the frozen layers' features.
ktlib.compute.engine trains on it; book/method.md ("How the runs are computed") says why it computes what the plain
path computes."""
from __future__ import annotations

import contextlib
import hashlib
import math
import threading
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ktlib.compute.model import LAYERS, Net, state_hash
from ktlib.compute.model import TANH_A as A
from ktlib.compute.model import TANH_S as S


@contextlib.contextmanager
def torch_threads(n: int = 1):
    """Compute the block on n threads, one unless told otherwise, and leave the process's thread count as it was:
    the one place ktlib saves and restores it. torch splits a long sum by its thread count, so what is computed on
    one thread gives the same numbers on any machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


ZS = 2 * S                                           # z = 2S a: the scale the parameters are kept in
_sigmoid_backward = torch.ops.aten.sigmoid_backward  # grad * sigma * (1 - sigma), in one pass
_conv_backward = torch.ops.aten.convolution_backward
_UP = torch.tensor([(i // 2) * 5 + j // 2 for i in range(10) for j in range(10)])  # S4's 5x5 -> C3's 10x10
PHASES = [(i, j) for i in (0, 1) for j in (0, 1)]
_C1_SHAPE = torch.empty(24, 1, 6, 6)


# ---------------------------------------------------------------- stacked parameters

@dataclass(frozen=True)
class Slot:
    name: str          # "C3.weight"
    shape: tuple       # per run
    offset: int


def slots(net: Net, start: int) -> list[Slot]:
    """Where each parameter of layers start.. sits in a run's row of the (R, P) stack."""
    out, offset = [], 0
    for layer in LAYERS[start:]:
        for pname, p in getattr(net, layer).named_parameters():
            out.append(Slot(f"{layer}.{pname}", tuple(p.shape), offset))
            offset += p.numel()
    return out


def views(flat: torch.Tensor, layout: list[Slot]) -> dict[str, torch.Tensor]:
    """Named (R, *shape) views into a stacked (R, P) tensor."""
    return {s.name: flat[:, s.offset:s.offset + math.prod(s.shape)].view(len(flat), *s.shape) for s in layout}


def stack(nets: list[Net], start: int) -> torch.Tensor:
    """Layers start.. of each net as one row, times 2S (the engine's parameters)."""
    return ZS * torch.stack([torch.cat([net.get_parameter(s.name).detach().flatten() for s in slots(net, start)])
                             for net in nets])


def load(net: Net, start: int, flat: torch.Tensor) -> Net:
    """Put one run's trained parameters of layers start.. (a `Run`'s weights) into the net."""
    with torch.no_grad():
        for s in slots(net, start):
            net.get_parameter(s.name).copy_(flat[s.offset:s.offset + math.prod(s.shape)].view(s.shape))
    return net


def keep_mask(net: Net, start: int) -> torch.Tensor:
    """Per parameter of layers start..: 1, or 0 for a weight the model's connection table removes (C3's).
    The one form in which both kernel sets receive the table."""
    layout = slots(net, start)
    masks = {f"{name}.weight": getattr(net, name).mask for name in LAYERS if hasattr(getattr(net, name), "mask")}
    return torch.cat([masks.get(s.name, torch.ones(s.shape)).flatten() for s in layout])


def grad_scale(layout: list[Slot], keep: torch.Tensor) -> torch.Tensor:
    """Per parameter: the factors 2A that `backward` leaves out (one per layer above), times `keep`."""
    factors = [torch.full((math.prod(s.shape),), (2 * A) ** (len(LAYERS) - 1 - LAYERS.index(s.name.split(".")[0])))
               for s in layout]
    return torch.cat(factors) * keep


def phase_kernels(w: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """C1's (R, 6, 1, 5, 5) kernels as (R, 24, 1, 6, 6) stride-2 ones: map 6p + c is map c at phase p."""
    return torch.cat([F.pad(w, (j, 1 - j, i, 1 - i)) for i, j in PHASES], 1), b.repeat(1, 4)


def phase_kernel_grads(gw: torch.Tensor, gb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The adjoint of `phase_kernels`: gradients of the 24 shifted kernels summed back onto the 6."""
    R = len(gw)
    gw = gw.view(R, 4, 6, 1, 6, 6)
    return sum(gw[:, p, ..., i:i + 5, j:j + 5] for p, (i, j) in enumerate(PHASES)), gb.view(R, 4, 6).sum(1)


# ---------------------------------------------------------------- forward and backward

def _stack(parts: list[torch.Tensor]) -> torch.Tensor:
    return parts[0].unsqueeze(0) if len(parts) == 1 else torch.stack(parts)  # one run: no copy


def _y(sigma: torch.Tensor) -> torch.Tensor:
    """A layer's output y = A tanh(S a) = 2A sigma - A."""
    return sigma * (2 * A) - A


def _tile_sums(sigma: torch.Tensor, phase_dim: int | None = None) -> torch.Tensor:
    """The sum of y over each 2x2 tile, from sigma: 2A (sum of sigma) - 4A."""
    if phase_dim is not None:  # C1's phases
        p = sigma.sum(phase_dim)
    else:
        p = (sigma[..., ::2, ::2] + sigma[..., 1::2, ::2]) + (sigma[..., ::2, 1::2] + sigma[..., 1::2, 1::2])
    return p.mul_(2 * A).sub_(4 * A)


def forward(p: dict[str, torch.Tensor], x: torch.Tensor, start: int, stop: int = 6) -> tuple[list, list]:
    """Layers start..stop-1 for R stacked runs (p: `views` of the parameters). x: (R, B, ...), the input of
    layer `start` (see `frozen_inputs`). Returns each layer's input and output sigma, indexed by layer."""
    R, B = x.shape[:2]
    ins, sig = [None] * 6, [None] * 6
    h = x
    for i in range(start, stop):
        layer = LAYERS[i]
        w, b = p.get(f"{layer}.weight", p.get(f"{layer}.coef")), p[f"{layer}.bias"]
        ins[i] = h
        if layer == "C1":    # sigma: (R, B, 4 phases, 6, 14, 14)
            w, b = phase_kernels(w, b)
            z = _stack([F.conv2d(h[r], w[r], b[r], stride=2) for r in range(R)])
            sig[i] = z.view(R, B, 4, 6, 14, 14).sigmoid_()
            h = _tile_sums(sig[i], phase_dim=2)
        elif layer in ("S2", "S4"):
            sig[i] = torch.addcmul(b[:, None, :, None, None], h, w[:, None, :, None, None]).sigmoid_()
            h = _y(sig[i])
        elif layer == "C3":
            sig[i] = _stack([F.conv2d(h[r], w[r], b[r]) for r in range(R)]).sigmoid_()
            h = _tile_sums(sig[i])
        else:                # C5, F6: fully connected
            sig[i] = torch.baddbmm(b[:, None, :], h.reshape(R, B, -1), w.flatten(2).transpose(1, 2)).sigmoid_()
            h = _y(sig[i])
    return ins, sig


def backward(p: dict[str, torch.Tensor], ins: list, sig: list, g: torch.Tensor, start: int,
             out: dict[str, torch.Tensor]) -> None:
    """Parameter gradients of layers start..5 into `out`, from g = dL/dz of F6, each layer's short by the
    factors 2A of the layers above it (see `grad_scale`)."""
    R, B = g.shape[:2]
    for i in range(5, start - 1, -1):
        layer = LAYERS[i]
        w = p.get(f"{layer}.weight", p.get(f"{layer}.coef"))
        gw, gb = out.get(f"{layer}.weight", out.get(f"{layer}.coef")), out[f"{layer}.bias"]
        need_input = i > start
        if layer in ("C5", "F6"):
            torch.bmm(g.transpose(1, 2), ins[i].reshape(R, B, -1), out=gw.view(R, gw.shape[1], -1))
            torch.sum(g, 1, out=gb)
            if need_input:
                g = _sigmoid_backward(torch.bmm(g, w.flatten(2)).view_as(sig[i - 1]), sig[i - 1])
        elif layer in ("S2", "S4"):
            torch.sum(g * ins[i], (1, 3, 4), out=gw)
            torch.sum(g, (1, 3, 4), out=gb)
            if need_input:
                dp = g * w[:, None, :, None, None]             # gradient of the tile sums
                if layer == "S4":                              # every cell of a tile gets its tile's gradient
                    up = dp.reshape(-1, 25).index_select(1, _UP).view_as(sig[i - 1])
                else:                                          # C1's four phases: a broadcast
                    up = dp.unsqueeze(2).expand_as(sig[i - 1])
                g = _sigmoid_backward(up, sig[i - 1])
        elif layer == "C3":
            # weights: the inputs convolved by the output gradients, batch as channels (faster in oneDNN
            # than its backward-weights kernel); inputs: oneDNN's backward-data kernel
            gw.copy_(_stack([F.conv2d(ins[i][r].transpose(0, 1), g[r].transpose(0, 1)).transpose(0, 1)
                             for r in range(R)]))
            torch.sum(g, (1, 3, 4), out=gb)
            if need_input:
                dx = _stack([_conv_backward(g[r], ins[i][r], w[r], None, [1, 1], [0, 0], [1, 1], False, [0, 0], 1,
                                            [True, False, False])[0] for r in range(R)])
                g = _sigmoid_backward(dx, sig[i - 1])
        else:  # C1: its input is data, so only the weights' gradients (which need only the kernels' shape)
            parts = [_conv_backward(g[r].view(B, 24, 14, 14), ins[i][r], _C1_SHAPE, [24], [2, 2], [0, 0], [1, 1],
                                    False, [0, 0], 1, [False, True, True]) for r in range(R)]
            w6, b6 = phase_kernel_grads(_stack([q[1] for q in parts]), _stack([q[2] for q in parts]))
            gw.copy_(w6)
            gb.copy_(b6)


def gradients(theta: torch.Tensor, x: torch.Tensor, target: torch.Tensor, start: int, layout: list[Slot],
              scale: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """Into grad (R, P): each run's gradient, for the engine's parameters theta (R, P), of its batch's
    mean squared error to the codes (over batch and bits). x: the batch's layer-`start` inputs (R, B, ...),
    target: its codes (R, B, bits); scale: `grad_scale`."""
    p = views(theta, layout)
    ins, sig = forward(p, x, start)
    # dL/dz of F6 = 2 (y - t) / (batch * bits) * 2A sigma (1 - sigma)
    top = _sigmoid_backward((_y(sig[5]) - target).mul_(4 * A / target[0].numel()), sig[5])
    backward(p, ins, sig, top, start, views(grad, layout))
    return grad.mul_(scale)


# Images a frozen-layer forward pass takes at a time. A set is always cut at the same places, so its numbers do not
# depend on which thread computes which chunk; PyTorch does not promise that another chunk size gives the same numbers
# (the tests find so for chunks of 4 and 20 images), so a change of CHUNK is to be checked against the record.
CHUNK = 512


def frozen_inputs(source: Net, images: torch.Tensor, chunk: int = CHUNK) -> list[torch.Tensor]:
    """For n = 0..5, the input of layer n on these images (what a run with n frozen layers starts from):
    the image, C1's tile sums, S2's output, C3's tile sums, S4's output, C5's output."""
    parts = [_chunk_levels(source, images[i:i + chunk]) for i in range(0, len(images), chunk)]
    return [torch.cat(level) for level in zip(*parts)]


def _chunk_levels(source: Net, images: torch.Tensor) -> list[torch.Tensor]:
    """frozen_inputs' six levels on one chunk of images."""
    p = views(stack([source], 0), slots(source, 0))
    with torch_threads(), torch.no_grad():  # as a group trains: on more threads, oneDNN's sums may round differently
        ins, sig = forward(p, images[None], 0, stop=5)
    return [t[0] for t in ins[:5] + [_y(sig[4])]]  # F6's input is C5's output


class _Levels:
    """One image set's frozen_inputs, each level joined when first asked for: a group reads one level, and joining
    all six had cost about a fifth of computing them (4,000 images on one core of the Zen 4, a script outside the
    repository)."""

    def __init__(self, chunks: list[list[torch.Tensor]]):
        self.chunks, self.joined, self.lock = chunks, {}, threading.Lock()

    def __getitem__(self, n: int) -> torch.Tensor:
        with self.lock:
            if n not in self.joined:
                self.joined[n] = torch.cat(self.chunks[n])
                self.chunks[n] = None  # joined: the chunks' memory goes once nothing else holds it
            return self.joined[n]


class _Shared:
    """One image set's frozen inputs while threads compute them: chunk by chunk (frozen_inputs' chunks, so the same
    numbers whichever thread computes which), each chunk taken by the first thread free to. A thread that asks for a
    set another has begun takes the chunks still untaken rather than waiting: in bench.py's n=5 cell one worker had
    computed the shared test and validation images alone while the other, its own images done, waited for them (a
    timeline by a script outside the repository; the cell's time did not measurably change from this alone,
    benchmarks/README.md). `levels` holds the _Levels once every chunk is in, or the error of the first chunk that
    failed; the images and the net are let go then."""

    def __init__(self, source: Net, images: torch.Tensor, chunk: int):
        if len(images) == 0:
            raise ValueError("an empty image set has no frozen-layer inputs")
        self.source, self.images, self.chunk = source, images, chunk
        self.parts: list = [None] * math.ceil(len(images) / chunk)
        self.taken, self.left = 0, len(self.parts)  # chunks taken by a thread; chunks not yet computed
        self.lock, self.levels = threading.Lock(), Future()

    def help(self) -> None:
        """Compute untaken chunks until none is left (or one has failed: its thread raises, the others stop)."""
        while True:
            with self.lock:
                if self.levels.done() or self.taken == len(self.parts):
                    return
                i, self.taken = self.taken, self.taken + 1
                source, images = self.source, self.images[i * self.chunk:(i + 1) * self.chunk]
            try:
                part = _chunk_levels(source, images)
            except BaseException as e:
                with self.lock:
                    if not self.levels.done():
                        self.levels.set_exception(e)
                        self._let_go()
                raise
            with self.lock:
                if self.levels.done():  # another chunk failed meanwhile
                    return
                self.parts[i], self.left = part, self.left - 1
                if self.left == 0:
                    self.levels.set_result(_Levels([list(level) for level in zip(*self.parts)]))
                    self._let_go()

    def _let_go(self) -> None:
        """Nothing more is computed from the images and the net: the cache need not keep them."""
        self.parts, self.images, self.source = [], None, None


def spread(features: torch.Tensor) -> float:
    """How much a level's output varies from image to image: the std over images, averaged over units."""
    return float(features.flatten(1).std(0).mean())


class FeatureCache:
    """Frozen-layer inputs, keyed by the source net's weights and the images' bytes: a changed source net
    or image set is a different key, so stale features can never be served. With maxsize, the least
    recently used image sets are dropped. Threads may share it: every thread that asks for a set not yet computed
    computes its untaken chunks (_Shared), and a set is computed again only if that failed or it was dropped."""

    def __init__(self, maxsize: int | None = None, chunk: int = CHUNK):
        self._store: OrderedDict[tuple[str, str], _Shared] = OrderedDict()
        self._lock = threading.Lock()
        self.maxsize, self.chunk = maxsize, chunk
        self.hits = self.misses = 0

    @staticmethod
    def key(source: Net, images: torch.Tensor) -> tuple[str, str]:
        return state_hash(source), hashlib.sha256(memoryview(images.contiguous().numpy()).cast("B")).hexdigest()

    def get(self, source: Net, images: torch.Tensor, n: int) -> torch.Tensor:
        return self.get_many(source, [images], n)[0]

    def get_many(self, source: Net, image_sets: list[torch.Tensor], n: int) -> list[torch.Tensor]:
        """The layer-n inputs of each image set, in order: this thread computes what no thread has yet taken of each
        set, then waits for the chunks others are computing. Threads that ask for the same sets share the work."""
        entries = []
        for images in image_sets:
            key = self.key(source, images)
            with self._lock:
                entry = self._store.get(key)
                if entry is None:
                    self.misses += 1
                    entry = self._store[key] = _Shared(source, images, self.chunk)
                else:
                    self.hits += 1
                    self._store.move_to_end(key)
                while self.maxsize is not None and len(self._store) > self.maxsize:
                    self._store.popitem(last=False)  # held by its callers until they have read it
            entries.append((key, entry))
            try:
                entry.help()
            except BaseException:  # the next thread to ask tries again; this one, and any waiting, see why
                self._forget(key, entry)
                raise
        out = []
        for key, entry in entries:
            try:
                out.append(entry.levels.result()[n])
            except BaseException:
                self._forget(key, entry)
                raise
        return out

    def _forget(self, key, entry: _Shared) -> None:
        with self._lock:
            if self._store.get(key) is entry:
                del self._store[key]
