"""The `ktlib` command: run the sweep or a study, fetch the data, start a build from the record, compare a build with
it, publish a build as the record. One small function per command (COMMANDS)."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ktlib import paths
from ktlib.compute import data as D
from ktlib.config import ENGINES, PROFILES, Config
from ktlib.recipes import RECIPES
from ktlib.record import download as DL
from ktlib.record import reproduce, studies
from ktlib.record.files import RESULTS_FILE
from ktlib.record.studies import STUDIES
from ktlib.record.sweep import run
from ktlib.record.tables import mean_table


def parser() -> argparse.ArgumentParser:
    """Every command and its options; the studies' commands from the table of studies (ktlib.record.studies)."""
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
    for design in STUDIES.values():
        st = sub.add_parser(design.name, parents=[common], help=f"{design.about} (resumable)")
        default = "the profile's" if design.default is None else ", ".join(
            f"{design.default(profile)} in the {name} profile" for name, profile in PROFILES.items())
        st.add_argument(f"--{design.count}", type=int, dest="count", help=f"{design.count} (default: {default})")
    d = sub.add_parser("download", help="fetch the official EMNIST archive and derive the record's subset from it "
                                        f"(into {paths.DEFAULT_DATA_DIR}), checking its published sha256 sums")
    d.add_argument("--dest", default=None, help=f"default {paths.DEFAULT_DATA_DIR}, or {DL.FULL_DATA_DIR} with --full")
    d.add_argument("--full", action="store_true",
                   help="the official ByClass files as they are (about 700,000 training images): a different "
                        "experiment from the record's, whose numbers will not match results/paper")
    d.add_argument("--url", default=DL.EMNIST_URL)
    d.add_argument("--md5", default=None, help="the archive's md5 sum (default: the official archive's, unless "
                                               "--sha256 is given)")
    d.add_argument("--sha256", default=None, help="the archive's sha256 sum")
    d.add_argument("--deadline", type=float, default=DL.DOWNLOAD_SECONDS,
                   help="seconds the download may take in all (default %(default)g)")
    d.add_argument("--keep-archive", action="store_true")
    r = sub.add_parser("publish", help="make a finished build the record of its profile and engine, "
                                       "results/<profile>[-<engine>][-data-<8 hex>]/ under the current directory: the "
                                       "record files of every sweep, its study's included, checked, then the record "
                                       "replaced in one step")
    r.add_argument("results_dir")
    r.add_argument("--partial", action="store_true",
                   help="publish a build with fewer runs than its grid or than the record, or without a sweep the "
                        "record holds (refused without it)")
    r.add_argument("--new-experiment", action="store_true",
                   help="publish a build of another experiment (seed, classes, protocol) over the record (refused "
                        "without it)")
    r.add_argument("--data-dir", default=None, help=f"the EMNIST directory the build was made on, against which each "
                                                    f"of its sweeps is checked (default ${paths.DATA_DIR_ENV}, else "
                                                    f"{paths.DEFAULT_DATA_DIR})")
    cp = sub.add_parser("compare", help="a build's runs against the committed record: equal, within tolerance, "
                                        "different, or unmatched (on one side only, or of another experiment), per "
                                        "results file")
    cp.add_argument("results_dir")
    sd = sub.add_parser("seed", help="start a build's results directory from the committed record of its profile "
                                     "and engine (nothing is copied into a directory that holds results)")
    sd.add_argument("results_dir")
    sd.add_argument("--profile", choices=list(PROFILES), default="paper")
    sd.add_argument("--engine", choices=ENGINES, default="native")
    sd.add_argument("--seed", type=int, default=0)
    sd.add_argument("--data-dir", default=None, help=f"EMNIST directory (default ${paths.DATA_DIR_ENV})")
    return p


def download_command(a) -> int:
    md5 = DL.EMNIST_MD5 if a.md5 is None and a.sha256 is None else a.md5  # the sums given, else the official
    dest = DL.download(a.dest, a.url, md5, a.sha256, keep_archive=a.keep_archive, full=a.full, deadline=a.deadline)
    print(f"EMNIST ByClass files are in {dest}; set {paths.DATA_DIR_ENV}={dest.resolve()}")
    return 0


def compare_command(a) -> int:
    table = reproduce.compare_build(a.results_dir)
    differ = table.attrs["differ"]
    if not table.attrs["exists"]:  # said first: every run is unmatched
        print(f"there is no record in {table.attrs['record']}: no run of {a.results_dir} is paired")
    elif differ:  # said first: no run of those sweeps is paired with the record's
        print(f"{a.results_dir} is another experiment than the record in {table.attrs['record']}: "
              f"{reproduce.differences_text(differ)}; those runs are not paired with the record's")
    print(f"{a.results_dir} against the record in {table.attrs['record']}, run by run:\n{table.to_string()}")
    return 0


def seed_command(a) -> int:
    print(reproduce.seed(a.results_dir, a.profile, a.engine, seed_value=a.seed, data_dir=a.data_dir))
    return 0


def publish_command(a) -> int:
    dest, short = reproduce.publish(a.results_dir, partial=a.partial, new_experiment=a.new_experiment,
                                    data_dir=a.data_dir)
    print(f"the record is in {dest}" + "".join(f"\n  note: {s}" for s in short))
    return 0


def configuration(a) -> Config:
    """The configuration the run options give (a sweep's or a study's)."""
    overrides = {k: v for k, v in vars(a).items()
                 if k in ("levels", "sizes", "trials", "recipes", "split") and v is not None}
    cfg = Config.for_profile("smoke" if a.dry_run else a.profile, seed=a.seed, data_dir=a.data_dir,
                             results_dir=a.results_dir, engine=a.engine, workers=a.workers,
                             cluster=a.cluster or a.scheduler, **overrides)
    for flag, value, kind in (("--cluster", a.cluster, "local"), ("--scheduler", a.scheduler, "address")):
        if value is not None and cfg.where[0] != kind:
            raise ValueError(f"{flag} takes {'local:N' if kind == 'local' else 'tcp://HOST:PORT'}, got {value!r}")
    return cfg


def study_command(a) -> int:
    """Run (or resume) the study the command names, by its entry in the table of studies."""
    start, plan = time.perf_counter(), studies.plan(a.command, configuration(a), a.count)
    plan.run(progress=not a.no_progress)
    print(f"{len(plan.stored())} runs in {len(plan.configs())} sweeps in {plan.root} "
          f"({time.perf_counter() - start:.0f} s this invocation)")
    return 0


def sweep_command(a) -> int:
    start, cfg = time.perf_counter(), configuration(a)
    rows = run(cfg, progress=not a.no_progress, wait=a.wait)
    print(f"{len(rows)} runs in {Path(cfg.results_dir) / RESULTS_FILE} "
          f"({time.perf_counter() - start:.0f} s this invocation)")
    for value, title in (("test_accuracy", "mean test accuracy"), ("train_accuracy", "mean final training accuracy")):
        print(f"{title} (rows: n retained levels, columns: k samples per class)")
        print(mean_table(rows, value).to_string(float_format="%.3f"))
    print("how runs stopped:", rows["stopped_by"].value_counts().to_dict())
    return 0


# Every other command is a study's: one per entry of the table of studies.
COMMANDS = {"sweep": sweep_command, "download": download_command, "publish": publish_command,
            "compare": compare_command, "seed": seed_command}


def main(argv: list[str] | None = None) -> int:
    a = parser().parse_args(argv)
    try:
        return COMMANDS.get(a.command, study_command)(a)
    except (D.DataError, ValueError, RuntimeError, OSError) as e:
        print(f"ktlib: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
