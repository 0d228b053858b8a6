"""A build against the published record: run by run and cell by cell, in numbers and in words."""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from ktlib.compute.experiment import KEY
from ktlib.config import TOLERANCE
from ktlib.record.checks import experiment_differences
from ktlib.record.files import ResultsError, read_results
from ktlib.record.tables import mean_table


def _matched(rows: pd.DataFrame, record: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series, pd.Series]:
    """The runs both have, each one's change in test accuracy, and whether it is the same run: the same epochs
    and test accuracy (the file keeps 6 digits; an image is 1e-3)."""
    both = rows.merge(record, on=KEY, suffixes=("", "_record"))
    moved = (both.test_accuracy - both.test_accuracy_record).abs()
    return both, moved, (both.epochs == both.epochs_record) & (moved < 1e-6)


def compare_with_record(rows: pd.DataFrame, meta: dict, record: str | os.PathLike, tolerance: float = TOLERANCE,
                        ignore: tuple[str, ...] = ()) -> dict:
    """How far this sweep is from a results file of the same experiment (its cell means, run by run).

    ignore: configuration fields that may differ, such as "engine" to compare the engine with the plain path."""
    record = Path(record)
    if not record.exists():
        return {"comparable": False, "reason": f"no record at {record}"}
    try:
        old_meta, old = read_results(record)
    except ResultsError as e:  # a record in an older format, or damaged: it says nothing about this build
        return {"comparable": False, "reason": str(e)}
    diff = experiment_differences(old_meta, meta, ignore)
    if diff:
        return {"comparable": False, "reason": f"the record is another experiment: {'; '.join(diff)}"}
    both, moved, same = _matched(rows, old)
    if len(both) != len(rows) or len(both) != len(old):
        return {"comparable": False, "reason": f"the record has {len(old)} runs, this sweep {len(rows)}"}
    largest = float((mean_table(rows) - mean_table(old)).abs().max().max())
    return {"comparable": True, "largest_change": largest, "tolerance": tolerance, "within": largest <= tolerance,
            "runs": len(both), "identical_runs": int(same.sum()),
            "largest_run_change": float(moved.max())}


def run_agreement(rows: pd.DataFrame, record: pd.DataFrame, tolerance: float = TOLERANCE) -> dict[str, int]:
    """Run by run against a record: equal (same epochs and test accuracy), within `tolerance` in test accuracy,
    different by more, and runs that only one side has."""
    both, moved, equal = _matched(rows, record)
    return {"runs": len(rows), "equal": int(equal.sum()),
            "within tolerance": int((~equal & (moved <= tolerance)).sum()), "different": int((moved > tolerance).sum()),
            "unmatched": len(rows) + len(record) - 2 * len(both)}


def comparison_text(check: dict, other: str) -> str:
    """How this sweep compares with `other`'s record (a `compare_with_record` result), in one or two sentences."""
    if not check["comparable"]:
        return f"This build has no record of {other} to compare with: {check['reason']}."
    return (f"Of the {check['runs']} runs, {check['identical_runs']} end at the same epoch with the same test "
            f"accuracy as {other}'s. The largest change in one run's test accuracy is "
            f"{check['largest_run_change']:.3f}, and in a cell mean {check['largest_change']:.4f}.")


def checks_table(checks: dict[str, dict]) -> pd.DataFrame:
    """Per sweep, its `compare_with_record` result, one row each."""
    return pd.DataFrame(checks).T


def within_text(checks: dict[str, dict]) -> str:
    """Per sweep, one line: whether every cell mean is within the tolerance of the record's."""
    return "\n".join(f"{name}: every cell mean within {TOLERANCE} of the record: {check.get('within', 'no record')}"
                     for name, check in checks.items())
