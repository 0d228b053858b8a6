"""Whether a results directory holds this experiment's runs (a sweep resumes it, a publish checks it), and how
two experiments' headers differ."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ktlib.compute.experiment import Experiment, grid
from ktlib.compute.train import DETERMINED
from ktlib.config import Config
from ktlib.record.files import (
    DAMAGED_ROW,
    HEADER,
    PREDICTIONS_FILE,
    READOUTS_FILE,
    RESULTS_FILE,
    SCORES_FILE,
    SOURCE_FILE,
    SOURCE_RECORD,
    ResultsError,
    load_source,
    parse_results,
    plain,
    read_predictions,
    read_readouts,
    read_scores,
    read_source_record,
    row_line,
    run_keys,
)

# ---------------------------------------------------------------- the same experiment?

EXPERIMENT = ("config", "data_checksums", "source_classes", "target_classes")  # what a header says of it


def differences(theirs: dict, mine: dict, prefix: str = "") -> list[str]:
    """Each field whose value differs, as 'name (X there, Y now)'; nested dicts by their dotted names."""
    out = []
    for key in sorted(set(theirs) | set(mine), key=str):
        a, b = theirs.get(key), mine.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key} ({a!r} there, {b!r} now)")
    return out


def experiment_differences(theirs: dict, mine: dict, ignore: tuple[str, ...] = ()) -> list[str]:
    """What makes two results files' headers different experiments; `ignore`: config fields allowed to differ."""
    def experiment(meta: dict) -> dict:
        out = {key: meta.get(key) for key in EXPERIMENT}
        out["config"] = {k: v for k, v in (out["config"] or {}).items() if k not in ignore}
        return out
    return differences(experiment(theirs), experiment(mine))


def whole_header(path: Path, meta: dict) -> dict:
    """meta, when it holds every field a sweep writes in a header (HEADER); else one error naming what it lacks."""
    missing = [name for name in HEADER if name not in meta]
    if missing:
        raise ResultsError(f"{path}: its header has no {', '.join(missing)}; a sweep writes them all, so the file "
                           f"is damaged: restore it from a copy")
    return meta


def header_config(path: Path, meta: dict, **where) -> Config:
    """The configuration a results file's header records (with `where`: data_dir, results_dir), or one error
    naming the file."""
    try:
        return Config.of_experiment({**meta["config"], **where})
    except (TypeError, ValueError) as e:
        raise ResultsError(f"{path}: its header's config is not one this ktlib can run ({e})") from None


def check_directory(exp: Experiment) -> tuple[dict, pd.DataFrame, bool] | None:
    """Refuse a results directory that holds another experiment's files, naming the fields that differ.

    Reads only: a refused run leaves the directory as it was. Returns the results file's (metadata, rows,
    whether its last row was cut short), or None when there is none yet."""
    where, images = Path(exp.cfg.results_dir), exp.cfg.n_classes * exp.cfg.test_per_class
    mine, planned, source_config, source_key = exp.record(), set(grid(exp.cfg)), exp.source_config(), exp.source_key()
    found = None
    path = where / RESULTS_FILE
    if path.exists():
        found = parse_results(path)
        whole_header(path, found[0])
        diff = experiment_differences(found[0], mine)
        if diff:
            raise RuntimeError(f"{path} holds runs of another experiment: {'; '.join(diff)}. "
                               f"Choose another results_dir, or delete it.")
        found_keys = run_keys(found[1])
        outside = pd.Series([key not in planned for key in found_keys], dtype=bool)
        if outside.any():
            raise ResultsError(f"{path}:{row_line(outside)}: a run outside this configuration's grid "
                               f"({found_keys[int(outside.idxmax())]}); the file is damaged: {DAMAGED_ROW}")
        fixed = pd.DataFrame([exp.determined(key) for key in found_keys], columns=list(DETERMINED), dtype=object)
        for column in DETERMINED:
            known = fixed[column].notna().to_numpy()  # None: known only from the run's net (a partial recipe at C3)
            other = pd.Series((found[1][column].to_numpy() != fixed[column].to_numpy()) & known, dtype=bool)
            if other.any():
                i = int(other.idxmax())
                there, here = plain(found[1][column].iloc[i]), fixed[column].iloc[i]
                raise ResultsError(f"{path}:{row_line(other)}: {column}={there!r}, where this experiment's run "
                                   f"{found_keys[i]} has {here!r}: the row is another experiment's, or damaged: "
                                   f"{DAMAGED_ROW}")
    if (where / PREDICTIONS_FILE).exists():
        read_predictions(where, images, exp.cfg.n_classes)
    if (where / READOUTS_FILE).exists():
        diff = experiment_differences(whole_header(where / READOUTS_FILE, read_readouts(where)[0]), mine)
        if diff:
            raise RuntimeError(f"{where / READOUTS_FILE} holds readouts of another experiment: {'; '.join(diff)}. "
                               f"Choose another results_dir, or delete it.")
    if (where / SCORES_FILE).exists():
        diff = experiment_differences(whole_header(where / SCORES_FILE, read_scores(where)[0]), mine)
        if diff:
            raise RuntimeError(f"{where / SCORES_FILE} holds map scores of another experiment: {'; '.join(diff)}. "
                               f"Choose another results_dir, or delete it.")
    record = where / SOURCE_RECORD
    if record.exists():
        diff = differences(read_source_record(where)["source_config"], source_config)
        if diff:
            raise RuntimeError(f"{record} is the record of a source net trained under another configuration: "
                               f"{'; '.join(diff)}. Choose another results_dir, or delete it.")
    net = where / SOURCE_FILE
    if net.exists() and load_source(net).get("key") != source_key:
        raise RuntimeError(f"{net} was trained under another configuration or data; "
                           f"choose another results_dir, or delete it")
    return found
