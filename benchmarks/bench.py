"""Plain path against engine, on the same runs in one process; prints seconds, ratios and GFLOP/s.

    python benchmarks/bench.py                    # the paper's 150 runs (the plain path takes ~16 min)
    python benchmarks/bench.py --sizes 1 5 10     # a slice: every n and trial, the three smallest k

Both paths train the same runs (same source net, data, seeds and stopping rule). The engine runs n by n
(all k and trials of one n, over the worker threads), then once more on the whole grid at once, as the
sweep does. FLOPs are the useful arithmetic of each run, counted from its epochs: LeCun's connections
(one multiply-add each) of the layers it trains, for the training steps and for the per-epoch
evaluation that the stopping rule needs (`ktlib.model.training_flops`, `forward_flops`). Neither the
plain path's recomputation of frozen layers nor the engine's own extra arithmetic (C1's 6x6 kernels,
C3's masked weights) counts. The peak is a large fp32 matmul timed here, with torch's default threads.
"""
from __future__ import annotations

import argparse
import tempfile
import time

import torch

import ktlib
from ktlib import sweep
from ktlib.model import build, connections, forward_flops, training_flops


def matmul_peak(size: int = 4096, repeats: int = 5) -> float:
    """Best GFLOP/s of a size x size fp32 matmul."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * size ** 3 / best / 1e9


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def useful_flops(rows: list[dict], cfg: ktlib.Config) -> float:
    """Training steps and per-epoch evaluations on each run's training set, and its final test."""
    conn = connections(build(0))
    total = 0.0
    for r in rows:
        images = r["k"] * cfg.n_classes
        total += r["epochs"] * images * (training_flops(conn, r["n"]) + forward_flops(conn, r["n"]))
        total += cfg.n_classes * cfg.test_per_class * forward_flops(conn, r["n"])
    return total


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", default=None, help="EMNIST ByClass (default $KTLIB_DATA_DIR)")
    p.add_argument("--levels", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5])
    p.add_argument("--sizes", type=int, nargs="+", default=[1, 5, 10, 20, 40])
    p.add_argument("--trials", type=int, default=5)
    p.add_argument("--workers", type=int, default=None, help="engine threads (default: the usable cores)")
    p.add_argument("--skip-plain", action="store_true", help="time the engine alone")
    a = p.parse_args()

    peak = matmul_peak()
    print(f"matmul peak: {peak:.1f} GFLOP/s (4096x4096 fp32, {torch.get_num_threads()} threads)")
    with tempfile.TemporaryDirectory() as tmp:
        cfg = ktlib.Config(data_dir=a.data_dir, results_dir=tmp, levels=a.levels, sizes=a.sizes, trials=a.trials,
                           workers=a.workers)
        exp, source, info = sweep.prepare(cfg, progress=False)
    test, codes = sweep.tensors(exp.test_set()), exp.codes("target")
    grid = [(k, t, n) for k in cfg.sizes for t in range(cfg.trials) for n in cfg.levels]
    print(f"{len(grid)} runs: n in {cfg.levels}, k in {cfg.sizes}, {cfg.trials} trials; "
          f"engine workers: {cfg.worker_count()}")

    def plain(todo):
        rows = []
        for k, t, n in todo:
            train_set, seed = exp.trial_set(k, t)
            rows.append({"n": n, "k": k, **sweep.run_one(source, n, train_set, test, codes, seed, cfg)})
        return rows

    def batched(todo):
        rows = []
        sweep.run_groups(exp, source, todo, test, codes, lambda n, k, t, seed, r: rows.append({"n": n, "k": k, **r}))
        return rows

    paths = {"engine": batched} if a.skip_plain else {"plain": plain, "engine": batched}
    per_n = {name: {} for name in paths}
    for name, fn in paths.items():
        for n in cfg.levels:
            todo = [g for g in grid if g[2] == n]
            start = time.perf_counter()
            rows = fn(todo)
            per_n[name][n] = (time.perf_counter() - start, useful_flops(rows, cfg))
            print(f"  {name:6} n={n}: {per_n[name][n][0]:7.1f} s", flush=True)
    start = time.perf_counter()
    whole_rows = batched(grid)
    whole = (time.perf_counter() - start, useful_flops(whole_rows, cfg))

    def rate(s_f):
        return s_f[1] / s_f[0] / 1e9

    header = "".join(f"{name + ' s':>11}{'GFLOP/s':>9}{'% peak':>8}" for name in paths)
    print(f"\n{'':13}{header}{'plain/engine':>14}")
    rows = [(f"n={n}", {name: per_n[name][n] for name in paths}) for n in cfg.levels]
    rows.append(("all, n by n", {name: (sum(v[0] for v in per_n[name].values()),
                                        sum(v[1] for v in per_n[name].values())) for name in paths}))
    for label, cells in rows:
        line = "".join(f"{c[0]:11.1f}{rate(c):9.1f}{100 * rate(c) / peak:7.1f}%" for c in cells.values())
        ratio = f"{cells['plain'][0] / cells['engine'][0]:13.1f}x" if "plain" in cells else ""
        print(f"{label:13}{line}{ratio}")
    ratio = f"{rows[-1][1]['plain'][0] / whole[0]:13.1f}x" if "plain" in paths else ""
    pad = " " * 28 if "plain" in paths else ""
    print(f"{'all at once':13}{pad}{whole[0]:11.1f}{rate(whole):9.1f}{100 * rate(whole) / peak:7.1f}%{ratio}")


if __name__ == "__main__":
    main()
