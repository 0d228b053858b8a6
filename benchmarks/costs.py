"""What the studies cost: each recipe's rate on one split and the committed study projected from it, the breadth
study's time from its record, and the study on Dask workers (measured on a LocalCluster, projected onto more)."""
from __future__ import annotations

import dataclasses
import heapq
import math
import re
import statistics
import tempfile
import time

from distributed import get_task_stream
from peak import ceiling  # this directory

import ktlib
from ktlib.compute import cluster, data, executors, experiment, model, readouts, stacked
from ktlib.compute.model import connections
from ktlib.compute.train import on_curve
from ktlib.recipes import RECIPES, first_trained
from ktlib.record import files, layout, studies, sweep
from ktlib.record.files import RESULTS_FILE, read_results


def run_flops(r: dict, cfg: ktlib.Config, conn=None) -> float:
    """One run's useful FLOPs: its training steps and per-epoch evaluations on its training set, and its final
    test (ktlib.compute.model.run_flops)."""
    return model.run_flops(first_trained(r["recipe"], r["n"]), r["epochs"], r["k"] * cfg.n_classes,
                           cfg.n_classes * cfg.test_per_class, conn)


def reading_flops(r: dict, cfg: ktlib.Config, conn=None) -> float:
    """One run's forward passes that its row records beside those run_flops counts: the test images at each reading
    of its test curve during training (train.on_curve: an epoch that passes a power of two of steps), and the
    validation images once. The runs have made them since the record holds each run's curve and validation accuracy;
    run_flops, the engine issue's measure, leaves them out."""
    readings = curve_readings(r["epochs"], math.ceil(r["k"] * cfg.n_classes / cfg.batch_size))
    images = cfg.n_classes * cfg.test_per_class  # as many validation images as test images
    return (readings + 1) * images * model.forward_flops(conn or connections(), first_trained(r["recipe"], r["n"]))


def curve_readings(epochs: int, per_epoch: int) -> int:
    """The forward passes of the test images a run of `epochs` epochs of `per_epoch` steps makes for its curve."""
    return sum(on_curve((e - 1) * per_epoch, e * per_epoch) for e in range(1, epochs + 1))


def useful_flops(rows: list[dict], cfg: ktlib.Config, readings: bool = False) -> float:
    """The runs' useful FLOPs (run_flops), summed; with readings, also their curves' and validation passes."""
    conn = connections()
    return sum(run_flops(r, cfg, conn) + (reading_flops(r, cfg, conn) if readings else 0) for r in rows)


def study_cost(data_dir: str | None, workers: int | None, committed: str, epochs: int) -> None:
    """Each recipe's useful GFLOP/s on one core, by n and k, as a share of one core's FMA peak measured in this
    run, from every group of split 0 trained for a fixed number of epochs; the fixed cost of an epoch where
    the arithmetic is small; and from these rates and the epochs each run of the committed study took, the
    study's time, part by part. A run's time is its FLOPs at its group's rate, plus its share of its group's
    setup (copying nets, features, the final test): the stopping rule decides how many epochs, the kernels how
    fast each goes."""
    peak = ceiling(1)  # per core: the engine runs a group on one thread
    plan = studies.plan("study", ktlib.Config(data_dir=data_dir, workers=workers))
    rate, setup, fixed, flops, seconds = {}, {}, {}, {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for part in ("baseline", "probes"):  # between them, every recipe
            cfg = next(c for p, c in plan.configs() if p == part and c.split == 0)
            cfg = dataclasses.replace(cfg, results_dir=f"{tmp}/{part}", stopping="budget", max_epochs=epochs,
                                      workers=1)
            start = time.perf_counter()
            exp, source, _ = sweep.train_or_load_source(cfg, progress=False)
            fixed[(part, "source net")] = time.perf_counter() - start
            task, grid = exp.task(source), experiment.grid(cfg)
            start = time.perf_counter()
            readouts.measure(task)
            fixed[(part, "readouts")] = time.perf_counter() - start
            for group in sorted({(g.recipe, g.n, g.k) for g in grid},
                                key=lambda g: (list(RECIPES).index(g[0]), g[1], g[2])):
                keys = [g for g in grid if (g.recipe, g.n, g.k) == group]
                start = time.perf_counter()
                rows = executors.compute(task, keys)
                elapsed = time.perf_counter() - start
                seconds[group] = max(r["seconds"] for r in rows)  # the group's training loop, on one thread
                setup[group] = (elapsed - seconds[group]) / len(rows)
                flops[group] = useful_flops(rows, cfg)
                rate[group] = flops[group] / seconds[group]

    def share(groups) -> float:
        """The groups' useful FLOPs over their training seconds, as a share of the FMA peak."""
        groups = list(groups)
        return sum(flops[g] for g in groups) / sum(seconds[g] for g in groups) / 1e9 / peak

    print(f"\n{len(rate)} groups of {cfg.trials} runs x {epochs} epochs on one thread; % of one core's FMA peak "
          f"({peak:.1f} GFLOP/s):")
    print(f"  {'recipe':18} n  {'k >= 10':>16}  {'k <= 5':>16}   fixed cost where the arithmetic is small")
    for recipe, n in dict.fromkeys((g[0], g[1]) for g in rate):
        big = [g for g in rate if g[:2] == (recipe, n) and g[2] >= 10]
        small = [g for g in rate if g[:2] == (recipe, n) and g[2] <= 5]
        line = f"  {recipe:18} {n}  {share(big) * peak:6.1f} {100 * share(big):5.1f}%   " \
               f"{share(small) * peak:6.1f} {100 * share(small):5.1f}%"
        if n >= 4:  # per epoch of a group (its steps and its evaluation), against its arithmetic at the peak
            line += "   " + ", ".join(f"k={g[2]} {1e6 * seconds[g] / epochs:.0f} us per epoch, "
                                      f"{1e6 * flops[g] / epochs / peak / 1e9:.0f} of them arithmetic at the peak"
                                      for g in small)
        print(line, flush=True)
    full = [g for g in rate if first_trained(g[0], g[1]) == 0]
    print(f"\nfull-network groups (every layer trained: n=0 and the fine-tuned recipes): k >= 10 "
          f"{100 * share(g for g in full if g[2] >= 10):.1f}%, k <= 5 {100 * share(g for g in full if g[2] <= 5):.1f}% "
          f"of the FMA peak")
    by_recipe = {r: share(g for g in rate if g[0] == r) for r in dict.fromkeys(g[0] for g in rate)}
    print("per recipe, all n and k: " + ", ".join(f"{r} {100 * x:.1f}%" for r, x in by_recipe.items()))

    record = layout.study_root(committed)
    done = studies.plan("study", ktlib.Config(data_dir=data_dir, results_dir=committed)).stored()
    cfg = plan.cfg
    conn = connections()
    groups = [(r["recipe"], r["n"], r["k"]) for r in done.to_dict("records")]
    done["flops"] = [run_flops(r, cfg, conn) for r in done.to_dict("records")]
    done["seconds_here"] = [f / rate[g] + setup[g] for f, g in zip(done.flops, groups)]
    sweeps = done.groupby(["part", "split"]).ngroups
    per_sweep = sum(fixed.values()) / 2  # a source net and its readouts, the mean of the two timed here
    by_part = done.groupby("part").seconds_here.sum() / cfg.worker_count()
    total = by_part.sum() + sweeps * per_sweep
    print(f"\nthe committed study ({len(done)} runs, {sweeps} sweeps), its runs' epochs at the rates above, on "
          f"{cfg.worker_count()} workers kept busy: {total / 60:.1f} min (of which source nets and readouts "
          f"{sweeps * per_sweep / 60:.1f}); its runs' training at "
          f"{100 * done.flops.sum() / sum(f / rate[g] for f, g in zip(done.flops, groups)) / 1e9 / peak:.1f}% "
          f"of the FMA peak")
    print("  by part: " + ", ".join(f"{v} {s / 60:.1f} min" for v, s in by_part.items()))
    recipes = done[done.part.isin([studies.BASELINE_PART, studies.PROBES_PART])].groupby("recipe").seconds_here.sum()
    print("  baseline and probes by recipe: " + ", ".join(
        f"{r} {s / cfg.worker_count() / 60:.1f} min ({100 * s / cfg.worker_count() / total:.0f}%)"
        for r, s in recipes.sort_values(ascending=False).items()))

    # on a Dask cluster: one task per group of a sweep, at the rates above (scheduling overhead not counted);
    # each sweep's source net takes the seconds its record gives
    sweeps = []
    for name, split, where in layout.study_sweeps(record, [p.name for p in studies.STUDY.parts]):
        part = done[(done.part == name) & (done.split == split)]
        if part.empty:  # another study's sweep: the record's study/ holds every study's
            continue
        sweeps.append((files.read_source_record(where)["seconds"],
                       part.groupby(["recipe", "n", "k"]).seconds_here.sum().tolist()))
    print(f"on a Dask cluster ({sum(len(t) for _, t in sweeps)} tasks; the longest "
          f"{max(max(t) for _, t in sweeps):.0f} s; source nets {sum(s for s, _ in sweeps):.0f} s in all):")
    for workers in (2, 16, 64):
        print(f"  {workers:2} workers: {simulate(sweeps, workers) / 60:5.1f} min with the source nets trained by the "
              f"client one after another, {simulate_sources_as_tasks(sweeps, workers) / 60:5.1f} min with each a "
              f"task of its own; work / workers {sum(sum(t) + s for s, t in sweeps) / workers / 60:5.1f} min")


def breadth_cost(data_dir: str | None, committed: str, measured_minutes: float | None) -> None:
    """The breadth study's time from its committed record: each group's training loop as its runs recorded it (on
    one thread, as the engine runs a group), each source net's recorded seconds; scheduled as this process runs it
    (a sweep's source net, then its groups on the engine's threads, then the next sweep's) and on 16 and 64 Dask
    workers (the source nets trained by the client while the workers train the groups). Setup, the final tests
    and the readouts are not in the records, so this is a lower bound; `measured_minutes`, if given, is the wall
    time of a run from scratch, to set beside it."""
    cfg = ktlib.Config(data_dir=data_dir, results_dir=committed)
    plan = studies.plan("breadth", cfg)
    rows = plan.stored()
    sweeps = []
    for name, sweep_cfg in plan.configs():
        part = rows[(rows.part == name) & (rows.order == sweep_cfg.source_order)]
        source = files.read_source_record(sweep_cfg.results_dir)  # a net another sweep trained (same_as) took no time
        sweeps.append((0.0 if "same_as" in source else source["seconds"],
                       part.groupby(["recipe", "n", "k"]).seconds.max().tolist()))
    groups = sum(sum(t) for _, t in sweeps)
    nets = sum(s for s, _ in sweeps)
    print(f"the breadth study's record: {len(rows)} runs in {sum(len(t) for _, t in sweeps)} groups over "
          f"{len(sweeps)} sweeps; the groups' training loops {groups / 60:.1f} min on one thread, the source nets "
          f"{nets / 60:.1f} min (the largest {max(s for s, _ in sweeps):.0f} s)")
    loops = rows.groupby(["part", "order", "recipe", "n", "k"]).seconds.max().reset_index()
    for by in (["recipe", "n"], ["k"]):
        share = loops.groupby(by).seconds.sum().sort_values(ascending=False) / loops.seconds.sum()
        print(f"  the groups' time by {' and '.join(by)}: " + ", ".join(
            f"{' '.join(map(str, key if isinstance(key, tuple) else (key,)))} {100 * v:.0f}%" for key, v in share.items()))
    workers = cfg.worker_count()
    here = sum(s + simulate([(0.0, t)], workers) for s, t in sweeps)
    print(f"  in this process on {workers} threads (each source net, then its sweep's groups): {here / 60:.1f} min"
          + (f"; a run from scratch took {measured_minutes:.1f} min" if measured_minutes else ""))
    for n in (2, 16, 64):
        print(f"  on {n:2} Dask workers: {simulate(sweeps, n) / 60:5.1f} min with the source nets trained by the "
              f"client one after another, {simulate_sources_as_tasks(sweeps, n) / 60:5.1f} min with each a task of "
              f"its own; work / workers {(groups + nets) / n / 60:5.1f} min")


def selection_cost(data_dir: str | None, committed: str, measured_minutes: float | None) -> None:
    """The selection study's time, priced before it runs from the breadth record's sweeps of the same shape: its
    20-class sources trained by the paper's rule, with their frozen groups at the selection study's k (each order's
    source net and groups as one selection's sweep), and its first sweep's n=0 groups at those k (one draw's).
    Scheduled as this process runs a study, a lower bound like breadth_cost's."""
    cfg = ktlib.Config(data_dir=data_dir, results_dir=committed)
    breadth, selection = studies.plan("breadth", cfg), studies.plan("selection", cfg)
    rows, sizes = breadth.stored(), studies.SELECTION_SIZES
    like = [(c.source_order, c) for name, c in breadth.configs() if name == f"{studies.ORDERED}20"]
    sweeps = []
    for order, c in like:
        mine = rows[(rows.part == f"{studies.ORDERED}20") & (rows.order == order) & (rows.recipe == "frozen")
                    & rows.k.isin(sizes)]
        sweeps.append((files.read_source_record(c.results_dir)["seconds"],
                       mine.groupby(["n", "k"]).seconds.max().tolist()))
    zero = rows[(rows.n == 0) & rows.k.isin(sizes)].groupby(["part", "order", "k"]).seconds.max()
    zero = zero.groupby("k").first().tolist()  # one sweep's n=0 groups at each k
    draws, selections = selection.counts["draws"], len(selection.parts)
    per_sweep = [sum(t) + s for s, t in sweeps]
    print(f"priced from the breadth record's {len(sweeps)} sweeps of 20 rule-trained classes at k in {list(sizes)}: "
          f"a selection's source net and frozen groups {statistics.mean(per_sweep):.0f} s of one core "
          f"({min(per_sweep):.0f}-{max(per_sweep):.0f}), a draw's n=0 groups {sum(zero):.0f} s")
    planned = [sweeps[i % len(sweeps)] for i in range(draws * selections)]
    planned = [(s, t + (zero if i % selections == 0 else [])) for i, (s, t) in enumerate(planned)]
    workers = cfg.worker_count()
    work = sum(s + sum(t) for s, t in planned)
    print(f"  {draws} draws x {selections} selections = {len(planned)} sweeps, {work / 60:.1f} min of one core; in "
          f"this process on {workers} threads: {sum(s + simulate([(0.0, t)], workers) for s, t in planned) / 60:.1f} "
          f"min" + (f"; a run from scratch took {measured_minutes:.1f} min" if measured_minutes else ""))


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


def simulate_sources_as_tasks(sweeps: list[tuple[float, list[float]]], workers: int) -> float:
    """As `simulate`, but each source net is a task: they go out first, one to each free worker, and a sweep's
    tasks become ready when its own source net is done."""
    free = [0.0] * workers
    ready = []
    for source_seconds, _ in sweeps:
        start = heapq.heappop(free)
        heapq.heappush(free, start + source_seconds)
        ready.append(start + source_seconds)
    for at, (_, tasks) in sorted(zip(ready, sweeps), key=lambda pair: pair[0]):
        for seconds in sorted(tasks, reverse=True):
            start = max(heapq.heappop(free), at)
            heapq.heappush(free, start + seconds)
    return max(free)


def on_cluster(data_dir: str | None, committed: str) -> None:
    """The study's split 0 (its baseline sweep: every recipe) on a LocalCluster of 1 and then 2 worker
    processes: speed-up, scheduling overhead per task, the longest task against the makespan, the cost of
    the two ways data can reach a worker, and from these the whole study projected onto 16 and 64 workers."""
    plan = studies.plan("study", ktlib.Config(data_dir=data_dir))
    with tempfile.TemporaryDirectory() as tmp:
        cfg = dataclasses.replace(plan.configs()[0][1], results_dir=tmp)
        exp, source, _ = sweep.train_or_load_source(cfg, progress=False)
    task, grid = exp.task(source), experiment.grid(cfg)
    print(f"study slice: split 0, every recipe: {len(grid)} runs in {len(executors.groups(grid))} tasks")
    start = time.perf_counter()
    here = executors.compute(task, grid)
    threads = time.perf_counter() - start
    print(f"  in this process, {cfg.worker_count()} threads (the default): {threads:6.1f} s", flush=True)
    makespan, times, out = {}, {}, {}
    for workers in (1, 2):
        start = time.perf_counter()
        with cluster.connect(dataclasses.replace(cfg, cluster=f"local:{workers}")) as pool:
            pool.check(cfg.engine)  # workers started, kernels loaded: not part of the makespan
            ready = time.perf_counter() - start
            with get_task_stream(pool.client) as stream:
                start, rows = time.perf_counter(), []
                pool.submit(task, grid, rows.append)
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
    data.load(cfg.data_dir), data.checksums(cfg.data_dir)
    load = time.perf_counter() - start
    groups = executors.groups(grid)
    start = time.perf_counter()
    inputs = [executors.group_inputs(task, stacked.FeatureCache(), g) for g in groups]
    prep = (time.perf_counter() - start) / len(groups)
    size = statistics.mean(sum(t.numel() * t.element_size() for t in (x, y, tx)) for x, y, _, tx in inputs)
    with cluster.connect(dataclasses.replace(cfg, cluster="local:1")) as pool:
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
    parts = [p.name for p in studies.STUDY.parts]
    for name, split, where in layout.study_sweeps(layout.study_root(committed), parts):
        done = read_results(where / RESULTS_FILE)[1].groupby(["recipe", "n", "k"]).epochs.sum()
        sweeps.append((files.read_source_record(where)["seconds"],
                       [per_epoch[g] * e + overhead for g, e in done.items()]))
    work = sum(sum(t) for _, t in sweeps)
    print(f"\nthe whole study ({sum(len(t) for _, t in sweeps)} tasks in {len(sweeps)} sweeps): {work / 60:.0f} "
          f"core-min of tasks, longest {max(max(t) for _, t in sweeps):.0f} s; source nets "
          f"{sum(s for s, _ in sweeps):.0f} s")
    for workers in (2, 16, 64):
        print(f"  {workers:2} workers: {simulate(sweeps, workers) / 60:5.1f} min; with the source nets trained before, "
              f"{simulate([(0, t) for _, t in sweeps], workers) / 60:5.1f} min; work / workers "
              f"{work / workers / 60:5.1f} min")
