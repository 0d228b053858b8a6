"""The cores' ceiling: the FMA peak (peak.c, built with the engine's compiler and flags) on a number of threads,
with three blocked kernels beside it, and the CPU that was measured."""
from __future__ import annotations

import ctypes
import threading
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ktlib import config
from ktlib.compute import native, stacked

PEAK_SOURCE = Path(__file__).with_name("peak.c")
WIDTHS = (512, 256, 128)


def fma_peak(threads: int, seconds: float = 0.4) -> dict[int, float]:
    """GFLOP/s of fused multiply-adds alone (peak.c) on `threads` cores at once, by vector width in bits: the
    best of three runs of about `seconds` each. Built with the engine's compiler and flags."""
    lib = ctypes.CDLL(str(native.build(PEAK_SOURCE)))
    sink = ctypes.c_float()
    out = {}
    for width in WIDTHS:
        f = getattr(lib, f"kt_fma_peak_{width}")
        f.restype, f.argtypes = ctypes.c_double, [ctypes.c_long, ctypes.c_void_p]
        iters = int(seconds * f(1_000_000, ctypes.byref(sink)) * 1e9 / (2 * width // 32 * lib.kt_fma_chains()))
        rates = [0.0] * threads

        def one(i: int) -> None:  # ctypes lets go of the GIL: the threads run on separate cores
            rates[i] = f(iters, ctypes.byref(sink))
        best = 0.0
        for _ in range(3):
            pool = [threading.Thread(target=one, args=(i,)) for i in range(threads)]
            for t in pool:
                t.start()
            for t in pool:
                t.join()
            best = max(best, sum(rates))
        out[width] = best
    return out


def matmul_peak(size: int = 4096, repeats: int = 5) -> float:
    """Best GFLOP/s of a size x size fp32 matmul by torch (MKL's sgemm), on torch's threads."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = min(seconds_of(lambda: a @ b) for _ in range(repeats))
    return 2 * size ** 3 / best / 1e9


def openblas_peak(size: int = 4096, repeats: int = 5) -> float:
    """Best GFLOP/s of a size x size fp32 matmul by numpy (OpenBLAS's sgemm), on its own threads."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((size, size), np.float32), rng.standard_normal((size, size), np.float32)
    a @ b
    best = min(seconds_of(lambda: a @ b) for _ in range(repeats))
    return 2 * size ** 3 / best / 1e9


def conv_peak(repeats: int = 5) -> float:
    """Best GFLOP/s of torch's (oneDNN's) fp32 conv2d: 32 images of 64 maps at 56x56, 3x3 kernels to 64 maps."""
    x, w = torch.randn(32, 64, 56, 56), torch.randn(64, 64, 3, 3)
    F.conv2d(x, w, padding=1)
    best = min(seconds_of(lambda: F.conv2d(x, w, padding=1)) for _ in range(repeats))
    return 2 * 32 * 64 * 56 * 56 * 64 * 9 / best / 1e9


def cpu() -> str:
    """The CPU as /proc/cpuinfo names it (native.cpu_name), and the cores this process may use."""
    return f"{native.cpu_name()}, {config.cores()} cores"


def ceiling(threads: int) -> float:
    """Print the cores' ceiling on `threads` threads, the FMA peak, with three blocked kernels beside it, and
    return the FMA peak: the figure every % of peak in this script is of."""
    with stacked.torch_threads(threads):
        fma = fma_peak(threads)
        blocked = {"MKL sgemm 4096x4096 (torch)": matmul_peak(),
                   "oneDNN conv2d 64->64 maps, 3x3, 56x56, 32 images (torch)": conv_peak()}
        if threads == config.cores():  # numpy's OpenBLAS runs on every core it finds
            blocked["OpenBLAS sgemm 4096x4096 (numpy)"] = openblas_peak()
    peak = max(fma.values())
    width = max(fma, key=fma.get)
    print(f"CPU: {cpu()}")
    print(f"kernels: {native.kernel()} (built by {native.compiler()})")
    print(f"the ceiling on {threads} thread(s), fp32 GFLOP/s: the FMA peak (benchmarks/peak.c, the engine's "
          f"compiler and flags; {native.vectors()} kernels) "
          + ", ".join(f"{w}-bit vectors {g:.1f}" for w, g in fma.items()) + f" -> {peak:.1f} ({width}-bit)")
    for name, gflops in blocked.items():
        print(f"  {name}: {gflops:.1f} ({100 * gflops / peak:.0f}% of the FMA peak)")
    return peak


def seconds_of(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start
