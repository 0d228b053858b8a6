"""The results directory nbval re-executes the notebooks on: the committed study, with the runs to recompute
taken out of it, so that the study notebook trains them again and the checks compare them with the record.

    python tests/nbval_results.py DEST baseline/split-0:1,5 budget/split-0

Each argument names one sweep of the study (part/split-s); after a colon, the training-set sizes k whose runs are
taken out (without, the whole sweep). Its training-free readouts are taken out too: they are measured again.
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

from ktlib import study
from ktlib.results import READOUTS_FILE, RESULTS_FILE, read_results, record_path, write_results


def prepare(dest: Path, recomputed: list[str]) -> None:
    """dest/study: a copy of the committed study without the runs named in `recomputed`."""
    record = record_path("paper").parent / study.STUDY_DIR
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(record, dest / study.STUDY_DIR)
    for item in recomputed:
        name, _, sizes = item.partition(":")
        where = dest / study.STUDY_DIR / name
        if not (where / RESULTS_FILE).exists():
            raise SystemExit(f"{item}: the committed study has no sweep {record / name}")
        if not sizes:
            shutil.rmtree(where)
            continue
        meta, rows = read_results(where / RESULTS_FILE)
        ks = {int(k) for k in sizes.split(",")}
        if not ks <= set(rows.k):
            raise SystemExit(f"{item}: k must be among {sorted(set(rows.k))}")
        write_results(where / RESULTS_FILE, meta, rows[~rows.k.isin(ks)])
        (where / READOUTS_FILE).unlink(missing_ok=True)


if __name__ == "__main__":
    prepare(Path(sys.argv[1]), sys.argv[2:])
