"""The committed record and a build beside it: a build started from the record (`seed`), a build's runs counted
against the record's (`compare`), and a finished build made the record (`publish`): checked whole first, then
switched in at once, so that a refusal, a failure or a kill leaves the old record as it was."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np
import pandas as pd

from ktlib.compute import data as D
from ktlib.compute.experiment import Experiment, grid
from ktlib.compute.model import state_hash
from ktlib.config import Config
from ktlib.record import checks, files, layout, provenance, store
from ktlib.record.compare import run_agreement
from ktlib.recipes import recipe
from ktlib.record.files import (
    PREDICTIONS_FILE,
    READOUTS_FILE,
    RECORD_FILES,
    RESULTS_FILE,
    SCORES_FILE,
    SOURCE_FILE,
    SOURCE_RECORD,
    ResultsError,
)

# A row keeps 6 significant digits of its test accuracy (files.write_results): its predictions give it to that.
ROUNDING = 1e-6


def sweeps(results_dir: Path) -> list[tuple[str, Path]]:
    """(name, directory) of each sweep of a results directory: its own, named by its results file, then its study's,
    by their paths in it."""
    return [(RESULTS_FILE, results_dir)] + [(str(d.relative_to(results_dir)), d)
                                            for _, _, d in layout.study_sweeps(layout.study_root(results_dir))]


def _copy_record(source: Path, dest: Path) -> None:
    """Every record file of a results directory and its study's sweeps, from source to the same places in dest, a
    directory being filled (store.new_directory)."""
    for _, where in sweeps(source):
        target = dest / where.relative_to(source)
        target.mkdir(parents=True, exist_ok=True)
        for name in (*RECORD_FILES, SCORES_FILE):
            if (where / name).exists():
                store.copy_file(where / name, target / name)


def _header(path: Path) -> tuple[dict, pd.DataFrame]:
    """(header, rows) of a results file whose header holds every field a sweep writes."""
    meta, rows = files.read_results(path)
    return checks.whole_header(path, meta), rows


def differences_text(differ: dict[str, list[str]]) -> str:
    """Per sweep, the fields in which two experiments differ, said once: the first sweep's, and how many more."""
    name, diff = next(iter(differ.items()))
    return f"{name}: {'; '.join(diff)}" + (f" (and {len(differ) - 1} more of its sweeps)" if len(differ) > 1 else "")


def _record_of(path: Path, meta: dict, root: str | os.PathLike) -> Path:
    """The committed record that a build (its results file's header) would replace or be compared with."""
    cfg = checks.header_config(path, meta)
    return layout.record_path(cfg.profile, cfg.engine, root, meta["data_checksums"]).parent


# ---------------------------------------------------------------- a finished build, opened

def open_finished(where: Path, data_dir: Path, sums: dict) -> tuple[dict, Config, pd.DataFrame]:
    """(header, configuration, rows) of one finished sweep of a build, opened with every check a sweep applies when
    it resumes (checks.check_directory: each file's form and values, and the experiment its header records against
    the one its configuration makes of this data), and with those only a finished sweep passes: every record file
    there, no row cut short, every file naming one source net (source.pt's own weights included), and the test
    predictions those of its rows (the same runs, the labels of this experiment's test images, and each row's test
    accuracy). The first failure is one error naming the file."""
    missing = [name for name in RECORD_FILES if not (where / name).is_file()]
    if missing:
        raise ResultsError(f"{where}: no {', '.join(missing)}; a finished sweep has all of {', '.join(RECORD_FILES)}")
    path = where / RESULTS_FILE
    meta, _ = _header(path)  # a last row cut short is an error here
    other = D.differing(sums, meta["data_checksums"])
    if other:
        raise ResultsError(f"{path} was made on other data than the data at {data_dir} ({', '.join(other)} differ); "
                           f"give the data it was made on (--data-dir)")
    cfg = checks.header_config(path, meta, data_dir=str(data_dir), results_dir=str(where))
    exp = Experiment.load(cfg)
    _, rows, _ = checks.check_directory(exp)
    sha = meta["source"]["state_sha256"]
    named = {SOURCE_FILE: state_hash(files.source_state(where / SOURCE_FILE, cfg.code_bits)[0]),
             SOURCE_RECORD: files.read_source_record(where)["state_sha256"],
             READOUTS_FILE: files.read_readouts(where)[0]["source"]["state_sha256"]}
    if any(recipe(r).level is not None for r in cfg.recipes):  # a sweep of partial recipes keeps its maps' scores
        if not (where / SCORES_FILE).is_file():
            raise ResultsError(f"{where}: no {SCORES_FILE}; a finished sweep of partial recipes has its maps' scores")
        named[SCORES_FILE] = files.read_scores(where)[0]["source"]["state_sha256"]
    differ = [name for name, theirs in named.items() if theirs != sha]
    if differ:
        raise ResultsError(f"{where}: {' and '.join(differ)} hold another source net than the one {RESULTS_FILE} was "
                           f"made with ({sha[:12]}): the files are not of one sweep")
    _check_predictions(where, exp, rows)
    return meta, cfg, rows


def _check_predictions(where: Path, exp: Experiment, rows: pd.DataFrame) -> None:
    """The predictions file holds the predictions of exactly these rows' runs, on this experiment's test images,
    and they give each row's test accuracy."""
    path, labels = where / PREDICTIONS_FILE, exp.test_set().y
    keys, predicted, stored = files.read_predictions(where, len(labels), exp.cfg.n_classes)
    theirs, ours = files.run_keys(keys), files.run_keys(rows)
    if len(theirs) != len(set(theirs)) or set(theirs) != set(ours):
        raise ResultsError(f"{path}: predictions of {len(theirs)} runs, {len(set(theirs) - set(ours))} of them "
                           f"without a row in {RESULTS_FILE}, which holds {len(set(ours) - set(theirs))} runs without "
                           f"predictions: the two files are not of the same runs")
    if not np.array_equal(stored, labels):
        raise ResultsError(f"{path}: its labels are not those of this experiment's test images: the file is another "
                           f"experiment's")
    accuracy = dict(zip(theirs, (predicted == stored).mean(axis=1)))
    for key, recorded in zip(ours, rows.test_accuracy):
        if abs(accuracy[key] - recorded) > ROUNDING:
            raise ResultsError(f"{path}: the predictions of run {key} give a test accuracy of {accuracy[key]:.6g}, its "
                               f"row in {RESULTS_FILE} {recorded:.6g}: the two files are not of the same runs")


def open_build(results_dir: Path, data_dir: str | os.PathLike | None = None) -> dict[str, tuple[dict, Config,
                                                                                               pd.DataFrame]]:
    """Every sweep of a finished build, by name, opened by open_finished on the data it was made on."""
    if not (results_dir / RESULTS_FILE).is_file():
        raise ResultsError(f"{results_dir}: no {RESULTS_FILE}, so not the results directory of a build")
    data_dir = D.resolve_data_dir(data_dir)
    sums = D.opened(data_dir)[1]
    return {name: open_finished(where, data_dir, sums) for name, where in sweeps(results_dir)}


# ---------------------------------------------------------------- seed, compare, publish

def seed(results_dir: str, profile: str, engine: str, root: str | Path = ".", seed_value: int = 0,
         data_dir: str | None = None) -> str:
    """Start a build's results directory from the committed record of its profile and engine, so that its sweeps
    resume from the record's runs (each checks that they are its own experiment) and train only what it lacks.
    A directory that already holds results is left as it is. A record made with another seed or other data is
    refused, naming what differs, before anything is copied: the two are never mixed. The copy is made beside the
    directory and renamed into place, so the directory is the record's whole copy or is not there."""
    dest, ours = Path(results_dir), D.checksums(D.resolve_data_dir(data_dir))  # sums only: no image is parsed
    if (dest / RESULTS_FILE).exists():
        return f"{dest} already holds results: resuming them"
    # the record of this data if one was made (make record), else the subset's, which the checks below refuse
    mine, subsets = (layout.record_path(profile, engine, root, sums).parent for sums in (ours, None))
    record = next((r for r in (mine, subsets) if (r / RESULTS_FILE).exists()), None)
    if record is None:
        return f"no committed record for {profile}-{engine}: every run is computed"
    meta, _ = _header(record / RESULTS_FILE)
    differ = [f"data file {name}" for name in D.differing(meta["data_checksums"], ours)]
    if meta["config"].get("seed") != seed_value:
        differ.append(f"seed ({meta['config'].get('seed')} there, {seed_value} here)")
    if differ:
        raise ValueError(f"the committed record {record} was made with another {', '.join(differ)}; make book builds "
                         f"from it only for the same data and seed. `make reproduce` computes every run on yours.")
    if dest.exists() and any(dest.iterdir()):
        raise ValueError(f"{dest} holds files but no {RESULTS_FILE}; starting it from the record would mix the two: "
                         f"delete it, or choose another directory")
    with store.new_directory(dest) as new:
        _copy_record(record, new)
    return f"{dest} starts from the committed record {record}"


def compare_build(results_dir: str, root: str | Path = ".") -> pd.DataFrame:
    """Per results file of a build and of the record (their sweeps and their studies'): how many of the build's runs
    equal the record's (same epochs and test accuracy), how many differ by no more than the tolerance, how many by
    more, and how many only one side has (all of them when there is no record of this build's data, or for a sweep
    only one side has). Runs of a sweep whose experiment differs from the record's are not paired: all are unmatched,
    and attrs["differ"] names the fields per sweep; attrs["exists"] says whether there is a record at all."""
    source = Path(results_dir)
    meta, _ = _header(source / RESULTS_FILE)
    record = _record_of(source / RESULTS_FILE, meta, root)
    built = {name: _header(where / RESULTS_FILE) for name, where in sweeps(source)}
    theirs = {name: _header(where / RESULTS_FILE) for name, where in sweeps(record)} \
        if (record / RESULTS_FILE).exists() else {}
    out, differ = {}, {}
    for name in dict.fromkeys([*built, *theirs]):  # the build's sweeps, then those only the record has
        (mine, rows), (old_meta, old) = built.get(name, (None, None)), theirs.get(name, (None, None))
        if mine is not None and old_meta is not None:
            differ[name] = checks.experiment_differences(old_meta, mine)
        rows, old = (rows if rows is not None else old.iloc[:0]), (old if old is not None else rows.iloc[:0])
        out[name] = run_agreement(rows, old) if not differ.get(name) else {
            "runs": len(rows), "equal": 0, "within tolerance": 0, "different": 0, "unmatched": len(rows) + len(old)}
    table = pd.DataFrame(out).T.astype(int).rename_axis("results file")
    table.attrs.update(record=str(record), exists=bool(theirs),
                       differ={name: diff for name, diff in differ.items() if diff})
    return table


def publish(results_dir: str, root: str | Path = ".", partial: bool = False, new_experiment: bool = False,
            data_dir: str | os.PathLike | None = None) -> tuple[Path, list[str]]:
    """Make a finished build the record of its profile and engine in the checkout `root` (layout.record_path, the
    one place that naming lives; data other than the record's subset gets its own), as one transaction. First, with
    no writer let into the build or the record: every sweep of the build opened by open_finished on its data, and the
    build set against the record it would replace. Then the record's files are written whole beside the old record
    and switched with it in one step (store.new_directory). A refusal, a failure (a full disk, a file that cannot be
    written) or a kill leaves the old record as it was.

    Refused unless told: a build with fewer runs than its grids or than the record, or without a sweep the record
    holds (`partial`; the record then holds only the build's), and a build of another experiment than the record
    (`new_experiment`: another seed, other classes, another protocol). Returns (the record, notes to say)."""
    source = Path(results_dir)
    if not (source / RESULTS_FILE).is_file():
        raise ResultsError(f"{source}: no {RESULTS_FILE}, so not the results directory of a build")
    dest = _record_of(source / RESULTS_FILE, _header(source / RESULTS_FILE)[0], root)
    if dest.resolve() == source.resolve():
        raise ValueError(f"{source} is the record itself: there is nothing to publish")
    with contextlib.ExitStack() as held:
        held.enter_context(_held_record(dest))
        for _, where in sweeps(source):
            held.enter_context(store.held(where))  # no sweep writing into the build
        built = open_build(source, data_dir)
        try:
            record = {name: _header(where / RESULTS_FILE) for name, where in sweeps(dest)} \
                if (dest / RESULTS_FILE).exists() else {}
        except ResultsError as e:
            raise ResultsError(f"the record to be replaced is damaged: {e}. Restore it (git checkout -- {dest}) before "
                               f"publishing over it") from None
        notes = _refusals(source, built, record, dest, partial, new_experiment)
        meta = built[RESULTS_FILE][0]
        if record and provenance.older_commit(meta["git_commit"], record[RESULTS_FILE][0]["git_commit"], root):
            notes.append(f"this build was made at {meta['git_commit'][:12]}, before the record it replaced")
        try:
            with store.new_directory(dest) as new:
                _copy_record(source, new)
        except OSError as e:
            raise store.StoreError(f"cannot write {e.filename or dest}: {e.strerror or e}; nothing was published: the "
                                   f"record in {dest} is as it was") from None
    return dest, notes


@contextlib.contextmanager
def _held_record(dest: Path):
    """The record's directory held against every other writer, a sweep or another publish, for the block: after a
    publish killed mid-switch is settled (store.settle), and made empty if there is none yet, so that there is
    something to lock (removed again if nothing was published into it)."""
    dest = store.settle(dest)
    made = not dest.exists()
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with store.held(dest, exclusive=True):
            yield dest
    finally:
        if made and dest.is_dir() and not any(dest.iterdir()):
            dest.rmdir()


def _refusals(source: Path, built: dict, record: dict, dest: Path, partial: bool, new_experiment: bool) -> list[str]:
    """What stands against publishing the build over the record: an error unless its flag says it is meant; with
    the flag, the notes to say."""
    differ = {name: diff for name in built if name in record
              if (diff := checks.experiment_differences(record[name][0], built[name][0]))}
    if differ:
        which = differences_text(differ)
        if not new_experiment:
            raise ValueError(f"{source} is another experiment than the record in {dest}: {which}. Publishing it would "
                             f"put another experiment's runs in the record's place; pass --new-experiment if that is "
                             f"meant")
    short = [f"{name} holds {len(rows)} of its grid's {len(grid(cfg))} runs" for name, (_, cfg, rows) in built.items()
             if len(rows) < len(grid(cfg))]
    short += [f"{name} holds {len(rows)} runs, the record {len(record[name][1])}"
              for name, (_, _, rows) in built.items() if name in record and len(rows) < len(record[name][1])]
    short += [f"the record's {name} is not in this build" for name in record if name not in built]
    if short and not partial:
        raise ValueError(f"{source} is not a finished build ({'; '.join(short)}): publishing it would leave the record "
                         f"in {dest} with fewer runs. Finish it (the same command resumes), or pass --partial.")
    return short + ([f"the record was another experiment: {which}"] if differ else [])
