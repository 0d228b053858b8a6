"""The plain path against the engine, on the same runs in one process; prints seconds, ratios, GFLOP/s.

    python benchmarks/bench.py                    # the paper's 150 runs (the plain path takes ~15 min)
    python benchmarks/bench.py --sizes 1 5 10     # a slice: every n and trial, the three smallest k
    python benchmarks/bench.py --engines plain batched native   # also the engine without its C kernels
    python benchmarks/bench.py --study            # each recipe's share of the peak; the study's time from them
    python benchmarks/bench.py --cluster          # one split's runs on a Dask LocalCluster of 1, then 2 workers
    python benchmarks/bench.py --breadth          # the breadth study's time from its record, here and on Dask
    python benchmarks/bench.py --partial          # a partly transferred level's step against the whole level's
    python benchmarks/bench.py --selection        # the selection study's time, priced from the breadth record

Every path trains the same runs (same source net, data, seeds and stopping rule). Each runs n by n
(the engines: all k and trials of one n over the worker threads), then the engines once more on the
whole grid at once, as the sweep does. FLOPs are the useful arithmetic of each run, counted from its epochs: LeCun's connections
(one multiply-add each) of the layers it trains, for the training steps and for the per-epoch
evaluation that the stopping rule needs (`ktlib.compute.model.run_flops`); a second column counts also the forward
passes of the test curve and of the validation images that each run's row records (`costs.reading_flops`). Neither the
plain path's recomputation of frozen layers nor the engine's own extra arithmetic (C1's 6x6 kernels,
C3's masked weights) counts. The peak is the cores' own: fused multiply-adds alone (peak.c), timed here on
as many threads as the engine uses, with large blocked matmuls and a convolution printed beside it.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import tempfile
import time

import torch
from costs import breadth_cost, on_cluster, selection_cost, study_cost, useful_flops  # this directory
from peak import ceiling, seconds_of

import ktlib
from ktlib.compute import engine, executors, experiment, model, native, stacked, transfer
from ktlib.compute.model import connections
from ktlib.config import ENGINES
from ktlib.record import sweep


def layer_profile(trials: int = 5, images: int = 800, steps: int = 50) -> None:
    """Where a training step and an evaluation pass of the native kernels spend their time, layer by layer, on
    one thread: kt_gradients and kt_outputs timed with n = 0..5 frozen layers (a group of `trials` runs, batches
    of 32, `images` per run: k=40), each layer's cost the difference between starting below and above it.
    Weights and images are random: the time does not depend on their values."""
    peak = ceiling(1)
    torch.set_num_threads(1)  # for the rest of this process, which ends with this profile
    conn, net = connections(), model.build(0)
    gen = torch.Generator().manual_seed(0)
    feats = stacked.frozen_inputs(net, torch.rand(images, 1, 32, 32, generator=gen))
    step, evaluation = {6: 0.0}, {6: 0.0}
    for n in range(6):
        kernels = engine.NativeKernels(net, n)
        theta = stacked.stack([model.build(s) for s in range(trials)], n)
        grad, x = torch.empty_like(theta), feats[n].expand(trials, *feats[n].shape).contiguous()
        target = torch.rand(trials, images, native.CODE_BITS, generator=gen)
        idx = torch.stack([torch.randperm(images, generator=gen)[:32] for _ in range(trials)])
        kernels.gradients(theta, x, target, idx, grad)
        step[n] = min(seconds_of(lambda: [kernels.gradients(theta, x, target, idx, grad) for _ in range(steps)])
                      for _ in range(3)) / steps
        evaluation[n] = min(seconds_of(lambda: kernels.outputs(theta, x)) for _ in range(3))
    print(f"\nthe native kernels layer by layer, one thread, {trials} runs: a training step of 32 images each, "
          f"and an evaluation pass over {images} images each; % of one core's FMA peak ({peak:.1f} GFLOP/s)")
    print(f"  {'layer':6}{'step us':>9}{'share':>7}{'GFLOP/s':>9}{'% peak':>8}{'eval ms':>10}{'share':>7}"
          f"{'GFLOP/s':>9}{'% peak':>8}")
    for n, layer in enumerate(model.LAYERS):
        ds, de = step[n] - step[n + 1], evaluation[n] - evaluation[n + 1]
        fs = trials * 32 * (model.training_flops(conn, n) - model.training_flops(conn, n + 1))
        fe = trials * images * 2 * conn[layer]
        print(f"  {layer:6}{1e6 * ds:9.0f}{100 * ds / step[0]:6.0f}%{fs / ds / 1e9:9.1f}{100 * fs / ds / 1e9 / peak:7.1f}%"
              f"{1e3 * de:10.2f}{100 * de / evaluation[0]:6.0f}%{fe / de / 1e9:9.1f}{100 * fe / de / 1e9 / peak:7.1f}%")
    fs, fe = trials * 32 * model.training_flops(conn, 0), trials * images * model.forward_flops(conn, 0)
    units = sum(math.prod(shape) for shape in model.layer_shapes(net).values())  # one activation each
    z = torch.randn(16 * units, generator=gen) * 4  # one vector of images through every layer: in cache, as there
    per_value = min(seconds_of(lambda: [native.sigmoid(z) for _ in range(100)]) for _ in range(5)) / 100 / z.numel()
    print(f"  {'all':6}{1e6 * step[0]:9.0f}{'':7}{fs / step[0] / 1e9:9.1f}{100 * fs / step[0] / 1e9 / peak:7.1f}%"
          f"{1e3 * evaluation[0]:10.2f}{'':7}{fe / evaluation[0] / 1e9:9.1f}"
          f"{100 * fe / evaluation[0] / 1e9 / peak:7.1f}%")
    print(f"  of which the activation (kt_sigmoid: an exp and a division per unit, {units:,} units per image): "
          f"{16e9 * per_value:.1f} ns per vector of 16, {100 * per_value * units * 32 * trials / step[0]:.0f}% of "
          f"the step, {100 * per_value * units * images * trials / evaluation[0]:.0f}% of the evaluation pass")


def partial_step(runs: int = 90, images: int = 800, steps: int = 30) -> None:
    """What a partly transferred level costs the engine: a training step (the native kernels' gradients and Adam's
    update) of `runs` runs side by side from the partial level up, on one thread, with the frozen maps' gradients held
    at zero by the kernels and without (the level trained whole, as n-1 trains it).
    `runs`: one bundle of the partial study (its choosers times its trials); `images`: k=40."""
    peak = ceiling(1)
    torch.set_num_threads(1)  # for the rest of this process, which ends with this measurement
    conn, source, gen = connections(), model.build(0), torch.Generator().manual_seed(0)
    feats = stacked.frozen_inputs(source, torch.rand(images, 1, 32, 32, generator=gen))
    print(f"\na partly transferred level against the whole level, one thread, {runs} runs, batches of 32; "
          f"% of one core's FMA peak ({peak:.1f} GFLOP/s)")
    for level, n in (("C5", 5), ("C3", 3)):
        maps = getattr(source, level).bias.numel()
        kept = [torch.randperm(maps, generator=gen)[:maps // 4] for _ in range(runs)]
        masks = [torch.zeros(maps, dtype=torch.bool).index_fill_(0, k, True) for k in kept]
        nets = [transfer.transfer(source, n, s, f"{level}-keep{maps // 4}-random0", m) for s, m in enumerate(masks)]
        frozen = torch.stack(masks)
        kernels, x = engine.NativeKernels(source, n - 1), feats[n - 1].expand(runs, *feats[n - 1].shape).contiguous()
        target = torch.rand(runs, images, native.CODE_BITS, generator=gen)
        idx = torch.stack([torch.randperm(images, generator=gen)[:32] for _ in range(runs)])
        flops = runs * 32 * model.training_flops(conn, n - 1)
        steppers = {}
        for name, held in (("whole level", None), ("partial, held", frozen)):
            theta = stacked.stack(nets, n - 1)
            opt, grad = engine.Adam(theta, [(theta.shape[1], 1e-3)], native=True), torch.empty_like(theta)

            def step(theta=theta, opt=opt, grad=grad, held=held):
                opt.step(kernels.gradients(theta, x, target, idx, grad, held))
            step()
            steppers[name] = step
        best = dict.fromkeys(steppers, float("inf"))
        for _ in range(7):  # the two alternately, so that a slow spell of the machine does not fall on one
            for name, step in steppers.items():
                best[name] = min(best[name], seconds_of(lambda: [step() for _ in range(steps)]) / steps)
        for name, t in best.items():
            print(f"  {level} {name:14} {1e3 * t:8.2f} ms a step  {flops / t / 1e9:7.1f} GFLOP/s  "
                  f"{100 * flops / t / 1e9 / peak:5.1f}%")
        print(f"  {level} partial / whole: {best['partial, held'] / best['whole level']:.3f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", default=None, help="EMNIST ByClass (default $KTLIB_DATA_DIR)")
    p.add_argument("--levels", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5])
    p.add_argument("--sizes", type=int, nargs="+", default=[1, 5, 10, 20, 40])
    p.add_argument("--trials", type=int, default=5)
    p.add_argument("--workers", type=int, default=None, help="engine threads (default: the usable cores)")
    p.add_argument("--engines", nargs="+", default=["plain", "native"], choices=ENGINES,
                   help="the paths to time; the first is the baseline of the ratios (default: plain native)")
    p.add_argument("--study", action="store_true",
                   help="each recipe's share of the peak, and the committed study's time at those rates")
    p.add_argument("--epochs", type=int, default=20, help="--study: the epochs each timed run trains")
    p.add_argument("--cluster", action="store_true", help="one split on a Dask LocalCluster of 1, then 2 workers")
    p.add_argument("--layers", action="store_true", help="the native kernels' time layer by layer (no data needed)")
    p.add_argument("--record", default="results/paper", help="the committed record --study and --cluster project from")
    p.add_argument("--breadth", action="store_true", help="the breadth study's time, from its record, here and on "
                                                          "16 and 64 Dask workers (seconds, no training)")
    p.add_argument("--selection", action="store_true", help="the selection study's time, priced from the breadth "
                                                            "record's 20-class sweeps")
    p.add_argument("--measured", type=float, help="--breadth, --selection: the minutes a run from scratch took, to print beside")
    p.add_argument("--partial", action="store_true", help="a partly transferred level's training step against the "
                                                          "whole level's (no data needed)")
    a = p.parse_args()
    if a.partial:
        return partial_step()
    if a.breadth:
        return breadth_cost(a.data_dir, a.record, a.measured)
    if a.selection:
        return selection_cost(a.data_dir, a.record, a.measured)
    if a.study:
        return study_cost(a.data_dir, a.workers, a.record, a.epochs)
    if a.cluster:
        return on_cluster(a.data_dir, a.record)
    if a.layers:
        return layer_profile()

    with tempfile.TemporaryDirectory() as tmp:
        cfg = ktlib.Config(data_dir=a.data_dir, results_dir=tmp, levels=a.levels, sizes=a.sizes, trials=a.trials,
                           workers=a.workers)
        exp, source, info = sweep.train_or_load_source(cfg, progress=False)
    peak = ceiling(cfg.worker_count())  # the engine's groups run one per worker thread
    task, grid = exp.task(source), experiment.grid(cfg)
    print(f"{len(grid)} runs: n in {cfg.levels}, k in {cfg.sizes}, {cfg.trials} trials; "
          f"engine workers: {cfg.worker_count()}")

    def timed(engine: str, keys: list) -> tuple[float, float, float]:
        """(seconds, useful FLOPs, useful FLOPs with the readings) of these runs by this path."""
        start = time.perf_counter()
        rows = executors.compute(dataclasses.replace(task, cfg=dataclasses.replace(cfg, engine=engine)), keys)
        return time.perf_counter() - start, useful_flops(rows, cfg), useful_flops(rows, cfg, readings=True)

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
    print(f"\n% peak: of the FMA peak on {cfg.worker_count()} cores, {peak:.1f} GFLOP/s; '+ reads': the same, with the "
          f"runs' test-curve and validation passes counted too (costs.reading_flops)")
    print(f"{'':13}" + "".join(f"{e + ' s':>11}{'GFLOP/s':>9}{'% peak':>8}{'+ reads':>9}" for e in a.engines)
          + "".join(f"{base + '/' + e:>16}" for e in a.engines[1:]))
    for label, cells in rows:
        line = "".join(f"{cells[e][0]:11.1f}{cells[e][1] / cells[e][0] / 1e9:9.1f}"
                       f"{100 * cells[e][1] / cells[e][0] / 1e9 / peak:7.1f}%"
                       f"{100 * cells[e][2] / cells[e][0] / 1e9 / peak:8.1f}%" if e in cells else " " * 37
                       for e in a.engines)
        ratios = "".join(f"{cells[base][0] / cells[e][0]:15.1f}x" if base in cells and e in cells else " " * 16
                         for e in a.engines[1:])
        if label == "all at once" and base in per_n:  # against the baseline's whole grid
            total = rows[-2][1][base][0]
            ratios = "".join(f"{total / cells[e][0]:15.1f}x" if e in cells else " " * 16 for e in a.engines[1:])
        print(f"{label:13}{line}{ratios}")


if __name__ == "__main__":
    main()
