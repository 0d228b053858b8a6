"""The plain path against the engine, on the same runs in one process; prints seconds, ratios, GFLOP/s.

    python benchmarks/bench.py                    # the paper's 150 runs (the plain path takes ~15 min)
    python benchmarks/bench.py --sizes 1 5 10     # a slice: every n and trial, the three smallest k
    python benchmarks/bench.py --engines plain batched native   # also the engine without its C kernels
    python benchmarks/bench.py --study            # each recipe's share of the peak; the study's time from them
    python benchmarks/bench.py --cluster          # one split's runs on a Dask LocalCluster of 1, then 2 workers

Every path trains the same runs (same source net, data, seeds and stopping rule). Each runs n by n
(the engines: all k and trials of one n over the worker threads), then the engines once more on the
whole grid at once, as the sweep does. FLOPs are the useful arithmetic of each run, counted from its epochs: LeCun's connections
(one multiply-add each) of the layers it trains, for the training steps and for the per-epoch
evaluation that the stopping rule needs (`ktlib.model.run_flops`). Neither the
plain path's recomputation of frozen layers nor the engine's own extra arithmetic (C1's 6x6 kernels,
C3's masked weights) counts. The peak is a large fp32 matmul timed here, with torch's default threads.
"""
from __future__ import annotations

import argparse
import dataclasses
import heapq
import re
import statistics
import tempfile
import time
from pathlib import Path

import torch
from distributed import get_task_stream

import ktlib
from ktlib import cluster, engine, model, readouts, runs, study, sweep
from ktlib.results import RESULTS_FILE, read_results
from ktlib.config import ENGINES
from ktlib.model import connections
from ktlib.transfer import BASELINE, RECIPES, first_trained


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


def run_flops(r: dict, cfg: ktlib.Config, conn=None) -> float:
    """One run's useful FLOPs: its training steps and per-epoch evaluations on its training set, and its final
    test (ktlib.model.run_flops)."""
    return model.run_flops(first_trained(r["recipe"], r["n"]), r["epochs"], r["k"] * cfg.n_classes,
                           cfg.n_classes * cfg.test_per_class, conn)


def useful_flops(rows: list[dict], cfg: ktlib.Config) -> float:
    """The runs' useful FLOPs (run_flops), summed."""
    conn = connections()
    return sum(run_flops(r, cfg, conn) for r in rows)


def study_cost(data_dir: str | None, workers: int | None, committed: str, epochs: int) -> None:
    """Each recipe's useful GFLOP/s on one core, as a share of one core's part of the matmul peak timed in this
    run, by n, from every run of split 0 trained for a fixed number of epochs; and from these rates and the
    epochs each run of the committed study took, the study's time, part by part. A run's time is its FLOPs at
    its recipe's rate at its n, plus its share of its group's setup (copying nets, features, the final test):
    the stopping rule decides how many epochs, the kernels how fast each goes."""
    peak = matmul_peak() / torch.get_num_threads()  # per core: the engine runs a group on one thread
    print(f"matmul peak: {peak:.1f} GFLOP/s per core (4096x4096 fp32, {torch.get_num_threads()} threads)")
    plan = study.Study.of(ktlib.Config(data_dir=data_dir, workers=workers))
    rate, setup, fixed, flops, seconds = {}, {}, {}, {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for part in ("baseline", "probes"):  # between them, every recipe
            cfg = next(c for p, c in plan.configs() if p == part and c.split == 0)
            cfg = dataclasses.replace(cfg, results_dir=f"{tmp}/{part}", stopping="budget", max_epochs=epochs,
                                      workers=1)
            start = time.perf_counter()
            exp, source, _ = sweep.prepare(cfg, progress=False)
            fixed[(part, "source net")] = time.perf_counter() - start
            task, grid = exp.task(source), runs.grid(cfg)
            start = time.perf_counter()
            readouts.measure(task)
            fixed[(part, "readouts")] = time.perf_counter() - start
            for recipe, n in sorted({(g.recipe, g.n) for g in grid}, key=lambda g: (list(RECIPES).index(g[0]), g[1])):
                keys = [g for g in grid if (g.recipe, g.n) == (recipe, n)]
                start = time.perf_counter()
                rows = runs.train_runs(task, keys)
                elapsed = time.perf_counter() - start
                # one group per k, one after another on one worker; a run's seconds are its group's training loop's
                seconds[(recipe, n)] = sum(max(r["seconds"] for r in rows if r["k"] == k) for k in cfg.sizes)
                setup[(recipe, n)] = (elapsed - seconds[(recipe, n)]) / len(rows)
                flops[(recipe, n)] = useful_flops(rows, cfg)
                rate[(recipe, n)] = flops[(recipe, n)] / seconds[(recipe, n)]
                gflops = rate[(recipe, n)] / 1e9
                print(f"  {recipe:18} n={n} {len(keys):3} runs x {epochs} epochs: training "
                      f"{seconds[(recipe, n)]:6.1f} s {gflops:6.1f} GFLOP/s {100 * gflops / peak:5.1f}% of the peak; "
                      f"setup and test {elapsed - seconds[(recipe, n)]:5.1f} s", flush=True)
    share = {r: sum(f for (q, _), f in flops.items() if q == r) / sum(s for (q, _), s in seconds.items() if q == r)
             / 1e9 / peak for r in dict.fromkeys(q for q, _ in rate)}
    print("\nper recipe, all n: " + ", ".join(f"{r} {100 * x:.1f}%" for r, x in share.items()) + " of the peak")
    low = [r for r, x in share.items() if x < share[BASELINE] / 2]
    print(f"recipes below half of frozen's share of the peak: {', '.join(low) or 'none'}")

    record = Path(committed) / study.STUDY_DIR
    done = study.read(record)
    cfg = plan.cfg
    conn = connections()
    done["seconds_here"] = [run_flops(r, cfg, conn) / rate[(r["recipe"], r["n"])] + setup[(r["recipe"], r["n"])]
                            for r in done.to_dict("records")]
    sweeps = done.groupby(["variant", "split"]).ngroups
    per_sweep = sum(fixed.values()) / 2  # a source net and its readouts, the mean of the two timed here
    by_part = done.groupby("variant").seconds_here.sum() / cfg.worker_count()
    total = by_part.sum() + sweeps * per_sweep
    print(f"\nthe committed study ({len(done)} runs, {sweeps} sweeps), its runs' epochs at the rates above, on "
          f"{cfg.worker_count()} workers kept busy: {total / 60:.1f} min (of which source nets and readouts "
          f"{sweeps * per_sweep / 60:.1f})")
    print("  by part: " + ", ".join(f"{v} {s / 60:.1f} min" for v, s in by_part.items()))
    recipes = done[done.variant.isin(["baseline", "probes"])].groupby("recipe").seconds_here.sum()
    print("  baseline and probes by recipe: " + ", ".join(
        f"{r} {s / cfg.worker_count() / 60:.1f} min ({100 * s / cfg.worker_count() / total:.0f}%)"
        for r, s in recipes.sort_values(ascending=False).items()))


def task_times(stream: list[dict]) -> dict[tuple, float]:
    """Each group's compute seconds, by (recipe, n, k), from a Dask task stream."""
    out = {}
    for t in stream:
        m = re.match(r"(.+)-n(\d+)-k(\d+)-split", t["key"])
        if m:
            out[(m[1], int(m[2]), int(m[3]))] = sum(p["stop"] - p["start"] for p in t["startstops"]
                                                     if p["action"] == "compute")
    return out


def simulate(sweeps: list[tuple[float, list[float]]], workers: int) -> float:
    """The makespan of greedy list scheduling: each sweep's tasks, longest first, become ready once the client
    has trained the source nets up to that sweep's, one after another; each goes to the first free worker."""
    free = [0.0] * workers
    ready = 0.0
    for source_seconds, tasks in sweeps:
        ready += source_seconds
        for seconds in sorted(tasks, reverse=True):
            start = max(heapq.heappop(free), ready)
            heapq.heappush(free, start + seconds)
    return max(free)


def on_cluster(data_dir: str | None, committed: str) -> None:
    """The study's split 0 (its baseline sweep: every recipe) on a LocalCluster of 1 and then 2 worker
    processes: speed-up, scheduling overhead per task, the longest task against the makespan, the cost of
    the two ways data can reach a worker, and from these the whole study projected onto 16 and 64 workers."""
    plan = study.Study.of(ktlib.Config(data_dir=data_dir))
    with tempfile.TemporaryDirectory() as tmp:
        cfg = dataclasses.replace(plan.configs()[0][1], results_dir=tmp)
        exp, source, _ = sweep.prepare(cfg, progress=False)
    task, grid = exp.task(source), runs.grid(cfg)
    print(f"study slice: split 0, every recipe: {len(grid)} runs in {len(runs.groups(grid))} tasks")
    start = time.perf_counter()
    here = runs.train_runs(task, grid)
    threads = time.perf_counter() - start
    print(f"  in this process, {cfg.worker_count()} threads (the default): {threads:6.1f} s", flush=True)
    makespan, times, out = {}, {}, {}
    for workers in (1, 2):
        start = time.perf_counter()
        with cluster.connect(f"local:{workers}") as pool:
            pool.check(cfg.engine)  # workers started, kernels loaded: not part of the makespan
            ready = time.perf_counter() - start
            with get_task_stream(pool.client) as stream:
                start, rows = time.perf_counter(), []
                pool.submit(task, grid, rows.append, exp.checksums)
                pool.drain()
                makespan[workers] = time.perf_counter() - start
            times[workers] = task_times(stream.data)
            gaps = []  # on each worker, from one task's end to the next one's start, while tasks were waiting
            for worker in {t["worker"] for t in stream.data}:
                spans = sorted((p["start"], p["stop"]) for t in stream.data if t["worker"] == worker
                               for p in t["startstops"] if p["action"] == "compute")
                gaps += [b[0] - a[1] for a, b in zip(spans, spans[1:])]
        out[workers] = sorted((r["recipe"], r["n"], r["k"], r["trial"], r["test_accuracy"], r["epochs"]) for r in rows)
        print(f"  {workers} worker(s): makespan {makespan[workers]:6.1f} s (cluster start and kernel check "
              f"{ready:.1f} s, not counted)", flush=True)
    assert out[1] == out[2] == sorted((r["recipe"], r["n"], r["k"], r["trial"], r["test_accuracy"], r["epochs"])
                                     for r in here), "in this process, 1 and 2 workers gave different runs"
    overhead = statistics.median(gaps)
    longest = max(times[2], key=times[2].get)
    print(f"\nthe same {len(out[2])} runs in all three; 2 workers against 1: {makespan[1] / makespan[2]:.2f}x "
          f"(target 1.8); 2 workers against this process's threads: {threads / makespan[2]:.2f}x")
    print(f"scheduling overhead per task: {1000 * overhead:.1f} ms (median of {len(gaps)} gaps between a worker's "
          f"tasks, 2 workers)")
    print(f"longest task {times[2][longest]:.1f} s {longest} against the makespan {makespan[2]:.1f} s "
          f"({100 * times[2][longest] / makespan[2]:.0f}%); all tasks {sum(times[2].values()):.0f} core-s; "
          f"simulated 2-worker makespan {simulate([(0, [t + overhead for t in times[2].values()])], 2):.1f} s")

    # data to workers: by path (each worker reads the files once, then draws sets and computes features
    # per task) or by scatter (the client computes each task's inputs and sends them)
    start = time.perf_counter()
    cluster._data.cache_clear()
    cluster._data(cfg.data_dir)
    load = time.perf_counter() - start
    groups = runs.groups(grid)
    start = time.perf_counter()
    inputs = [runs.group_inputs(task, engine.FeatureCache(), g) for g in groups]
    prep = (time.perf_counter() - start) / len(groups)
    size = statistics.mean(sum(t.numel() * t.element_size() for t in (x, y, tx)) for x, y, _, tx in inputs)
    with cluster.connect("local:1") as pool:
        pool.client.wait_for_workers(1)
        start = time.perf_counter()
        for x, y, _, tx in inputs:
            pool.client.scatter([x, y, tx], hash=False)
        scatter = (time.perf_counter() - start) / len(groups)
    print(f"data by path: {load:.2f} s once per worker to read the files, then {1000 * prep:.0f} ms per task "
          f"to draw its sets and compute their features (no feature cache)")
    print(f"data by scatter: those {1000 * prep:.0f} ms per task on the client instead, plus {1000 * scatter:.0f} ms "
          f"to send {size / 1e6:.1f} MB per task on loopback")

    # the whole study from its committed record: a task costs its runs' epochs times the seconds per run-epoch
    # measured above for its (recipe, n, k), plus the overhead; source nets as recorded, trained by the client
    epochs = {}
    for r in rows:
        epochs[(r["recipe"], r["n"], r["k"])] = epochs.get((r["recipe"], r["n"], r["k"]), 0) + r["epochs"]
    per_epoch = {g: times[2][g] / epochs[g] for g in times[2]}
    sweeps = []
    for variant, split, where in study.split_dirs(Path(committed) / study.STUDY_DIR):
        done = read_results(where / RESULTS_FILE)[1].groupby(["recipe", "n", "k"]).epochs.sum()
        sweeps.append((sweep.read_source_record(where)["seconds"],
                       [per_epoch[g] * e + overhead for g, e in done.items()]))
    work = sum(sum(t) for _, t in sweeps)
    print(f"\nthe whole study ({sum(len(t) for _, t in sweeps)} tasks in {len(sweeps)} sweeps): {work / 60:.0f} "
          f"core-min of tasks, longest {max(max(t) for _, t in sweeps):.0f} s; source nets "
          f"{sum(s for s, _ in sweeps):.0f} s")
    for workers in (2, 16, 64):
        print(f"  {workers:2} workers: {simulate(sweeps, workers) / 60:5.1f} min; with the source nets trained before, "
              f"{simulate([(0, t) for _, t in sweeps], workers) / 60:5.1f} min; work / workers "
              f"{work / workers / 60:5.1f} min")


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
    p.add_argument("--record", default="results/paper", help="the committed record --study and --cluster project from")
    a = p.parse_args()
    if a.study:
        return study_cost(a.data_dir, a.workers, a.record, a.epochs)
    if a.cluster:
        return on_cluster(a.data_dir, a.record)

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
