"""The `ktlib` command: run the sweep or the study, fetch the data, publish a build's record."""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import pandas as pd

from . import data as D
from . import paths
from .breadth import Breadth
from .claims import run_agreement
from .config import ENGINES, PROFILES, Config
from .experiment import grid
from .recipes import RECIPES
from .records import RECORD_FILES, RESULTS_FILE, older_commit, read_results, record_path, study_root, study_sweeps
from .study import Study
from .sweep import run
from .tables import mean_table


def _sweeps(results_dir: Path) -> list[tuple[str, Path]]:
    """(name, directory) of each sweep of a results directory: its own, named by its results file, then its study's,
    by their paths in it."""
    return [(RESULTS_FILE, results_dir)] + [(str(d.relative_to(results_dir)), d)
                                            for _, _, d in study_sweeps(study_root(results_dir))]


def _copy_record(source: Path, dest: Path) -> None:
    """Every record file of a results directory and its study's sweeps, from source to the same places in dest."""
    for _, where in _sweeps(source):
        target = dest / where.relative_to(source)
        target.mkdir(parents=True, exist_ok=True)
        for name in RECORD_FILES:
            if (where / name).exists():
                shutil.copyfile(where / name, target / name)


def seed(results_dir: str, profile: str, engine: str, root: str | Path = ".", seed_value: int = 0,
         data_dir: str | None = None) -> str:
    """Start a build's results directory from the committed record of its profile and engine, so that its sweeps
    resume from the record's runs (each checks that they are its own experiment) and train only what it lacks.
    A directory that already holds results is left as it is. A record made with another seed or other data is
    refused, naming what differs, before anything is copied: the two are never mixed."""
    dest, ours = Path(results_dir), D.checksums(D.resolve_data_dir(data_dir))  # sums only: no image is parsed
    if (dest / RESULTS_FILE).exists():
        return f"{dest} already holds results: resuming them"
    # the record of this data if one was made (make record), else the subset's, which the checks below refuse
    mine, subsets = (record_path(profile, engine, root, sums).parent for sums in (ours, None))
    record = next((r for r in (mine, subsets) if (r / RESULTS_FILE).exists()), None)
    if record is None:
        return f"no committed record for {profile}-{engine}: every run is computed"
    meta, _ = read_results(record / RESULTS_FILE)
    differ = [f"data file {name}" for name, digest in meta["data_checksums"].items() if ours.get(name) != digest]
    if meta["config"]["seed"] != seed_value:
        differ.append(f"seed ({meta['config']['seed']} there, {seed_value} here)")
    if differ:
        raise ValueError(f"the committed record {record} was made with another {', '.join(differ)}; make book builds "
                         f"from it only for the same data and seed. `make reproduce` computes every run on yours.")
    _copy_record(record, dest)
    return f"{dest} starts from the committed record {record}"


def compare(results_dir: str, root: str | Path = ".") -> pd.DataFrame:
    """Per results file of a build (its sweep and its study's): how many of its runs equal the committed record's
    (same epochs and test accuracy), how many differ by no more than the tolerance, how many by more, and how many
    only one side has (all of them when there is no record of this build's data)."""
    source = Path(results_dir)
    meta, _ = read_results(source / RESULTS_FILE)
    record = record_path(meta["config"]["profile"], meta["config"]["engine"], root, meta["data_checksums"]).parent
    out = {}
    for name, where in _sweeps(source):
        _, rows = read_results(where / RESULTS_FILE)
        theirs = record / where.relative_to(source) / RESULTS_FILE
        out[name] = run_agreement(rows, read_results(theirs)[1] if theirs.exists() else rows.iloc[:0])
    table = pd.DataFrame(out).T.astype(int).rename_axis("results file")
    table.attrs["record"] = str(record)
    return table


def run_counts(results_dir: Path) -> dict[str, tuple[int, int]]:
    """Each results file of a results directory (its sweep and its study's): (runs it holds, runs of its grid)."""
    out = {}
    for name, where in _sweeps(results_dir):
        meta, rows = read_results(where / RESULTS_FILE)
        out[name] = (len(rows), len(grid(Config.of_experiment(meta["config"]))))
    return out


def publish(results_dir: str, root: str | Path = ".", partial: bool = False) -> tuple[Path, list[str]]:
    """Copy a finished build's record files (RECORD_FILES: results, source nets and their records, predictions,
    readouts), its study's included, to the record of its profile and engine in the checkout `root`
    (results.record_path: the one place that naming lives; data other than the record's subset gets its own).
    A build with fewer runs than its grids, or than the record it would replace, is refused before anything is
    copied, unless `partial`; (the record, what is short) comes back, so that it can be said."""
    source = Path(results_dir)
    meta, _ = read_results(source / RESULTS_FILE)
    dest = record_path(meta["config"]["profile"], meta["config"]["engine"], root, meta["data_checksums"]).parent
    ours = run_counts(source)
    theirs = run_counts(dest) if (dest / RESULTS_FILE).exists() else {}
    older = theirs and older_commit(meta["git_commit"], read_results(dest / RESULTS_FILE)[0]["git_commit"], root)
    short = [f"{name} holds {have} of its grid's {want} runs" for name, (have, want) in ours.items() if have < want]
    short += [f"{name} holds {have} runs, the record {theirs[name][0]}" for name, (have, _) in ours.items()
              if name in theirs and have < theirs[name][0]]
    if short and not partial:
        raise ValueError(f"{source} is not a finished build ({'; '.join(short)}): publishing it would leave the record "
                         f"in {dest} with fewer runs. Finish it (the same command resumes), or pass --partial.")
    _copy_record(source, dest)
    if older:  # allowed, and said: a maintainer may mean to go back
        short.append(f"this build was made at {meta['git_commit'][:12]}, before the record it replaced")
    return dest, short


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="ktlib", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--profile", choices=list(PROFILES), default="paper")
    common.add_argument("--dry-run", action="store_true", help="same as --profile smoke: the pipeline in seconds")
    common.add_argument("--seed", type=int, default=0)
    common.add_argument("--data-dir", default=None, help=f"EMNIST directory (default ${paths.DATA_DIR_ENV})")
    common.add_argument("--results-dir", default=None, help=f"default ${paths.RESULTS_DIR_ENV}, then results/<profile>")
    common.add_argument("--engine", choices=ENGINES, default="native",
                        help="batched: the engine without its C kernels; plain: the reference loop, one run at a time")
    common.add_argument("--workers", type=int, help="engine threads in this process (default: the usable cores)")
    where = common.add_mutually_exclusive_group()
    where.add_argument("--cluster", metavar="local:N", help="run the engine's groups on a Dask LocalCluster of N "
                                                             "worker processes started here")
    where.add_argument("--scheduler", metavar="tcp://HOST:PORT", help="run them on the workers of a running Dask "
                                                                     "scheduler (dask-jobqueue's, on SLURM)")
    common.add_argument("--no-progress", action="store_true")
    s = sub.add_parser("sweep", parents=[common], help="train the source net and run the n x k x trial grid "
                                                       "(resumable)")
    s.add_argument("--levels", type=int, nargs="+")
    s.add_argument("--sizes", type=int, nargs="+")
    s.add_argument("--trials", type=int)
    s.add_argument("--recipes", nargs="+", choices=list(RECIPES), help="transfer recipes (default: frozen, the "
                                                                     "paper's)")
    s.add_argument("--split", type=int, help="class split (default 0, the seed's own)")
    s.add_argument("--wait", action="store_true",
                   help="if another process is writing to the results directory, wait for it instead of refusing")
    st = sub.add_parser("study", parents=[common], help="the study beyond the paper: many class splits, the "
                                                        "recipes and controls, protocol variants (resumable)")
    st.add_argument("--splits", type=int, help="class splits (default: the profile's)")
    b = sub.add_parser("breadth", parents=[common], help="the breadth study: source nets of 5 to 39 nested classes "
                                                         "on fixed targets (resumable)")
    b.add_argument("--orders", type=int, help="nesting orders of the source classes (default: the profile's)")
    d = sub.add_parser("download", help="fetch the official EMNIST archive and derive the record's subset from it "
                                        f"(into {paths.DEFAULT_DATA_DIR}), checking its published sha256 sums")
    d.add_argument("--dest", default=None, help=f"default {paths.DEFAULT_DATA_DIR}, or {D.FULL_DATA_DIR} with --full")
    d.add_argument("--full", action="store_true",
                   help="the official ByClass files as they are (about 700,000 training images): a different "
                        "experiment from the record's, whose numbers will not match results/paper")
    d.add_argument("--url", default=D.EMNIST_URL)
    d.add_argument("--md5", default=D.EMNIST_MD5)
    d.add_argument("--keep-archive", action="store_true")
    r = sub.add_parser("publish", help="copy a finished build's results files (sweep.csv, source.json, source.pt, "
                                       "predictions.npz, readouts.csv, and its study's) to the record of its "
                                       "profile and engine, results/<profile>[-<engine>]/ under the current directory")
    r.add_argument("results_dir")
    r.add_argument("--partial", action="store_true",
                   help="publish a build with fewer runs than its grid or than the record (refused without it)")
    cp = sub.add_parser("compare", help="a build's runs against the committed record: equal, within tolerance, "
                                        "or different, per results file")
    cp.add_argument("results_dir")
    sd = sub.add_parser("seed", help="start a build's results directory from the committed record of its profile "
                                     "and engine (nothing is copied into a directory that holds results)")
    sd.add_argument("results_dir")
    sd.add_argument("--profile", choices=list(PROFILES), default="paper")
    sd.add_argument("--engine", choices=ENGINES, default="native")
    sd.add_argument("--seed", type=int, default=0)
    sd.add_argument("--data-dir", default=None, help=f"EMNIST directory (default ${paths.DATA_DIR_ENV})")
    a = p.parse_args(argv)
    try:
        if a.command == "download":
            dest = D.download(a.dest, a.url, a.md5, keep_archive=a.keep_archive, full=a.full)
            print(f"EMNIST ByClass files are in {dest}; set {paths.DATA_DIR_ENV}={dest.resolve()}")
            return 0
        if a.command == "compare":
            table = compare(a.results_dir)
            print(f"{a.results_dir} against the record in {table.attrs['record']}, run by run:\n{table.to_string()}")
            return 0
        if a.command == "seed":
            print(seed(a.results_dir, a.profile, a.engine, seed_value=a.seed, data_dir=a.data_dir))
            return 0
        if a.command == "publish":
            dest, short = publish(a.results_dir, partial=a.partial)
            print(f"the record is in {dest}" + "".join(f"\n  note: {s}" for s in short))
            return 0
        overrides = {k: v for k, v in vars(a).items()
                     if k in ("levels", "sizes", "trials", "recipes", "split") and v is not None}
        cfg = Config.for_profile("smoke" if a.dry_run else a.profile, seed=a.seed, data_dir=a.data_dir,
                                 results_dir=a.results_dir, engine=a.engine, workers=a.workers,
                                 cluster=a.cluster or a.scheduler, **overrides)
        for flag, value, kind in (("--cluster", a.cluster, "local"), ("--scheduler", a.scheduler, "address")):
            if value is not None and cfg.where[0] != kind:
                raise ValueError(f"{flag} takes {'local:N' if kind == 'local' else 'tcp://HOST:PORT'}, got {value!r}")
        start = time.perf_counter()
        if a.command == "study":
            plan = Study.of(cfg, a.splits)
            rows = plan.run(progress=not a.no_progress)
            print(f"{len(rows)} runs in {plan.root} ({time.perf_counter() - start:.0f} s this invocation); "
                  f"notebooks/06_controls.ipynb and 07_errors.ipynb read them")
            return 0
        if a.command == "breadth":
            plan = Breadth.of(cfg, a.orders)
            plan.run(progress=not a.no_progress)
            print(f"{len(plan.configs())} sweeps in {plan.root} ({time.perf_counter() - start:.0f} s this "
                  f"invocation); notebooks/08_breadth.ipynb reads them")
            return 0
        rows = run(cfg, progress=not a.no_progress, wait=a.wait)
    except (D.DataError, ValueError, RuntimeError, OSError) as e:
        print(f"ktlib: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    print(f"{len(rows)} runs in {Path(cfg.results_dir) / RESULTS_FILE} "
          f"({time.perf_counter() - start:.0f} s this invocation)")
    for value, title in (("test_accuracy", "mean test accuracy"), ("train_accuracy", "mean final training accuracy")):
        print(f"{title} (rows: n retained levels, columns: k samples per class)")
        print(mean_table(rows, value).to_string(float_format="%.3f"))
    print("how runs stopped:", rows["stopped_by"].value_counts().to_dict())
    return 0
