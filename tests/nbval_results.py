"""The results directory nbval re-executes the notebooks on: the committed study, with the runs to recompute
taken out of it, so that the study notebook trains them again and the checks compare them with the record.

    python tests/nbval_results.py DEST baseline:0:1,5 budget:0 classes-5:0:1:source

Each argument names one sweep of a study by its part and its split or nesting order (ktlib.record.layout.sweep_dir
says where it is); after a second colon, the training-set sizes k whose runs are taken out (without, the whole sweep);
after a third, `source`: its source net is taken out too, and trained again (the runs kept were made from the
record's, which the same seed and data give again). Its training-free readouts and its maps' scores are taken out
too: they are measured again.
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

from ktlib.record.files import (
    READOUTS_FILE,
    RESULTS_FILE,
    SCORES_FILE,
    SOURCE_FILE,
    SOURCE_RECORD,
    read_results,
    write_results,
)
from ktlib.record.layout import record_path, study_root, study_sweeps


def prepare(dest: Path, recomputed: list[str]) -> None:
    """dest's study: a copy of the committed study without the runs named in `recomputed`."""
    record = study_root(record_path("paper").parent)
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(record, study_root(dest))
    for item in recomputed:
        part, split, sizes, source = (item.split(":") + ["", "", ""])[:4]
        if not split.isdigit() or source not in ("", "source") or (source and not sizes):
            raise SystemExit(f"{item}: name a sweep as PART:SPLIT-OR-ORDER[:K,K...[:source]], such as baseline:0:1,40")
        found = [where for p, i, where in study_sweeps(study_root(dest)) if (p, i) == (part, int(split))]
        if not found:
            raise SystemExit(f"{item}: the committed studies have no sweep {part}/<split or order>-{split} in {record}")
        where = found[0]
        if not sizes:
            shutil.rmtree(where)
            continue
        meta, rows = read_results(where / RESULTS_FILE)
        ks = {int(k) for k in sizes.split(",")}
        if not ks <= set(rows.k):
            raise SystemExit(f"{item}: k must be among {sorted(set(rows.k))}")
        write_results(where / RESULTS_FILE, meta, rows[~rows.k.isin(ks)])
        (where / READOUTS_FILE).unlink(missing_ok=True)
        (where / SCORES_FILE).unlink(missing_ok=True)
        if source:
            for name in (SOURCE_FILE, SOURCE_RECORD):
                (where / name).unlink()


if __name__ == "__main__":
    prepare(Path(sys.argv[1]), sys.argv[2:])
