"""The plain path against the engine, on the same runs in one process; prints seconds, ratios, GFLOP/s.

    python benchmarks/bench.py                    # the paper's 150 runs (the plain path takes ~15 min)
    python benchmarks/bench.py --sizes 1 5 10     # a slice: every n and trial, the three smallest k
    python benchmarks/bench.py --engines plain batched native   # also the engine without its C kernels
    python benchmarks/bench.py --study            # the study's cost per recipe and variant, on one split

Every path trains the same runs (same source net, data, seeds and stopping rule). Each runs n by n
(the engines: all k and trials of one n over the worker threads), then the engines once more on the
whole grid at once, as the sweep does. FLOPs are the useful arithmetic of each run, counted from its epochs: LeCun's connections
(one multiply-add each) of the layers it trains, for the training steps and for the per-epoch
evaluation that the stopping rule needs (`ktlib.model.training_flops`, `forward_flops`). Neither the
plain path's recomputation of frozen layers nor the engine's own extra arithmetic (C1's 6x6 kernels,
C3's masked weights) counts. The peak is a large fp32 matmul timed here, with torch's default threads.
"""
from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time

import torch

import ktlib
from ktlib import runs, study, sweep
from ktlib.config import ENGINES
from ktlib.model import connections, forward_flops, training_flops
from ktlib.transfer import first_trained


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
    conn = connections()
    total = 0.0
    for r in rows:
        images = r["k"] * cfg.n_classes
        start = first_trained(r["recipe"], r["n"])
        total += r["epochs"] * images * (training_flops(conn, start) + forward_flops(conn, start))
        total += cfg.n_classes * cfg.test_per_class * forward_flops(conn, start)
    return total


def study_cost(data_dir: str | None, workers: int | None) -> None:
    """The study's cost on one class split, part by part, with the native engine: each sweep of split 0 (a
    fresh source net, then its runs by recipe), and from these the whole study's time."""
    plan = study.Study.of(ktlib.Config(data_dir=data_dir, workers=workers))
    cost = {}
    with tempfile.TemporaryDirectory() as tmp:
        for variant, cfg in plan.configs():
            if cfg.split != 0:
                continue
            cfg = dataclasses.replace(cfg, results_dir=f"{tmp}/{variant}")
            start = time.perf_counter()
            exp, source, info = sweep.prepare(cfg, progress=False)
            cost[(variant, "source net")] = time.perf_counter() - start
            task, grid = exp.task(source), runs.grid(cfg)
            parts = {"n=0 (shared)": [g for g in grid if g.n == 0]}
            parts.update({r: [g for g in grid if g.n > 0 and g.recipe == r] for r in cfg.recipes})
            for part, keys in parts.items():
                start = time.perf_counter()
                runs.train_runs(task, keys)
                cost[(variant, part)] = time.perf_counter() - start
                print(f"  {variant:9} {part:14} {len(keys):4} runs {cost[(variant, part)]:7.1f} s", flush=True)
    per_split = {v: sum(s for (w, _), s in cost.items() if w == v) for v in study.VARIANTS}
    total = plan.splits * per_split["baseline"] + plan.variant_splits * (per_split["budget"] + per_split["one-of-n"])
    print(f"\none split, all recipes: {per_split['baseline']:.0f} s; the budget variant {per_split['budget']:.0f} s, "
          f"one-of-N {per_split['one-of-n']:.0f} s")
    print(f"the study ({plan.splits} splits, variants on {plan.variant_splits}), projected from split 0: "
          f"{total / 60:.1f} min on {plan.cfg.worker_count()} workers")
    shares = {part: sum(s for (v, p), s in cost.items() if p == part and v == "baseline") for part in
              ["source net", "n=0 (shared)", *plan.cfg.recipes]}
    print("share of a baseline split: " + ", ".join(f"{p} {100 * s / per_split['baseline']:.0f}%"
                                                     for p, s in shares.items()))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", default=None, help="EMNIST ByClass (default $KTLIB_DATA_DIR)")
    p.add_argument("--levels", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5])
    p.add_argument("--sizes", type=int, nargs="+", default=[1, 5, 10, 20, 40])
    p.add_argument("--trials", type=int, default=5)
    p.add_argument("--workers", type=int, default=None, help="engine threads (default: the usable cores)")
    p.add_argument("--engines", nargs="+", default=["plain", "native"], choices=ENGINES,
                   help="the paths to time; the first is the baseline of the ratios (default: plain native)")
    p.add_argument("--study", action="store_true", help="the study's cost per recipe and variant, on one split")
    a = p.parse_args()
    if a.study:
        return study_cost(a.data_dir, a.workers)

    peak = matmul_peak()
    print(f"matmul peak: {peak:.1f} GFLOP/s (4096x4096 fp32, {torch.get_num_threads()} threads)")
    with tempfile.TemporaryDirectory() as tmp:
        cfg = ktlib.Config(data_dir=a.data_dir, results_dir=tmp, levels=a.levels, sizes=a.sizes, trials=a.trials,
                           workers=a.workers)
        exp, source, info = sweep.prepare(cfg, progress=False)
    task, grid = exp.task(source), runs.grid(cfg)
    print(f"{len(grid)} runs: n in {cfg.levels}, k in {cfg.sizes}, {cfg.trials} trials; "
          f"engine workers: {cfg.worker_count()}")

    def timed(engine: str, keys: list) -> tuple[float, float]:
        """(seconds, useful FLOPs) of these runs by this path."""
        start = time.perf_counter()
        rows = runs.train_runs(dataclasses.replace(task, cfg=dataclasses.replace(cfg, engine=engine)), keys)
        return time.perf_counter() - start, useful_flops(rows, cfg)

    per_n = {e: {} for e in a.engines}
    for e in a.engines:
        for n in cfg.levels:
            per_n[e][n] = timed(e, [key for key in grid if key.n == n])
            print(f"  {e:7} n={n}: {per_n[e][n][0]:7.1f} s", flush=True)
    rows = [(f"n={n}", {e: per_n[e][n] for e in a.engines}) for n in cfg.levels]
    rows.append(("all, n by n", {e: tuple(map(sum, zip(*per_n[e].values()))) for e in a.engines}))
    fast = [e for e in a.engines if e != "plain"]
    rows.append(("all at once", {e: timed(e, grid) for e in fast}))  # the sweep's own schedule

    base = a.engines[0]
    print(f"\n{'':13}" + "".join(f"{e + ' s':>11}{'GFLOP/s':>9}{'% peak':>8}" for e in a.engines)
          + "".join(f"{base + '/' + e:>16}" for e in a.engines[1:]))
    for label, cells in rows:
        line = "".join(f"{cells[e][0]:11.1f}{cells[e][1] / cells[e][0] / 1e9:9.1f}"
                       f"{100 * cells[e][1] / cells[e][0] / 1e9 / peak:7.1f}%" if e in cells else " " * 28
                       for e in a.engines)
        ratios = "".join(f"{cells[base][0] / cells[e][0]:15.1f}x" if base in cells and e in cells else " " * 16
                         for e in a.engines[1:])
        if label == "all at once" and base in per_n:  # against the baseline's whole grid
            total = rows[-2][1][base][0]
            ratios = "".join(f"{total / cells[e][0]:15.1f}x" if e in cells else " " * 16 for e in a.engines[1:])
        print(f"{label:13}{line}{ratios}")


if __name__ == "__main__":
    main()
