"""Where things are in a results directory: the record's directory of a profile, a study's sweeps and their
directories."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ktlib import paths
from ktlib.record import download as DL
from ktlib.record.files import RESULTS_FILE

STUDY_DIR = "study"  # the studies' sweeps, under their profile's results directory: study/<part>/<axis>-<i>/
# What a study's replicates are (ktlib.record.plans.Design.axis), by the name its directories and its tables' column
# take: class splits, nesting orders of the source classes, or draws of the target classes (each with its own seeds,
# as a split has: the selection study); and the Config field each replicate sets.
AXES = {"split": "split", "order": "source_order", "draw": "split"}


def data_tag(checksums: dict | None) -> str:
    """How a record's name says which data made it: nothing for the record's subset (its published sums), else
    "data-" and 8 hex digits of the data's sha256 sums, such as the full official set's: another experiment."""
    if checksums is None or checksums == DL.SUBSET_SHA256:
        return ""
    return "data-" + hashlib.sha256(json.dumps(checksums, sort_keys=True).encode()).hexdigest()[:8]


def record_path(profile: str, engine: str = "native", root: str | os.PathLike = paths.REPO,
                checksums: dict | None = None) -> Path:
    """The committed results file of a profile's grid: results/<profile>/, with -<engine> for an engine other
    than the default and -<data_tag> for data other than the record's subset (`checksums`: the data's sha256 sums),
    in the checkout `root` (by default the one ktlib runs from)."""
    name = "-".join([profile] + [engine] * (engine != "native") + [t for t in [data_tag(checksums)] if t])
    return Path(root) / "results" / name / RESULTS_FILE


# ---------------------------------------------------------------- a study's sweeps

def study_root(results_dir: str | os.PathLike) -> Path:
    """Where a profile's study keeps its sweeps, in the results directory of its paper sweep."""
    return Path(results_dir) / STUDY_DIR


def sweep_dir(root: str | os.PathLike, part: str, index: int, axis: str = "split") -> Path:
    """The directory of one sweep of a study: <root>/<part>/<axis>-<index>, such as baseline/split-3 (class split 3)
    or classes-5/order-2 (the breadth study's nesting order 2)."""
    if axis not in AXES:
        raise ValueError(f"a study's replicates are one of {list(AXES)}, not {axis!r}")
    return Path(root) / part / f"{axis}-{index}"


def study_sweeps(root: str | os.PathLike, parts: list[str] = ()) -> list[tuple[str, int, Path]]:
    """(part, split or order, directory) of every finished-or-started sweep under a study's root, found without its
    plan (as publish finds them): in the order of `parts` (others after them), then by split or order."""
    out = []
    for path in sorted(Path(root).glob(f"*/*-*/{RESULTS_FILE}")):
        part, (axis, _, number) = path.parent.parent.name, path.parent.name.rpartition("-")
        if number.isdigit() and axis in AXES and path.parent == sweep_dir(root, part, int(number), axis):
            out.append((part, int(number), path.parent))
    order = list(parts)
    return sorted(out, key=lambda v: (order.index(v[0]) if v[0] in order else len(order), v[1]))
