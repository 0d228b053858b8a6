"""Tables of runs, before any interval: a recipe's runs, the mean of each cell, the training time, and where the runs
came from."""
from __future__ import annotations

import pandas as pd

from ktlib.compute.executors import bundle
from ktlib.compute.experiment import RunKey
from ktlib.recipes import BASELINE
from ktlib.record import layout
from ktlib.record.provenance import git_commit


def recipe_runs(rows: pd.DataFrame, recipe: str) -> pd.DataFrame:
    """A recipe's runs with the shared n=0 runs, which are stored once, under the baseline recipe."""
    return rows[(rows.recipe == recipe) | ((rows.n == 0) & (rows.recipe == BASELINE))].assign(recipe=recipe)


def mean_table(rows: pd.DataFrame, value: str = "test_accuracy") -> pd.DataFrame:
    """Mean over trials: one row per n, one column per k."""
    return rows.pivot_table(index="n", columns="k", values=value, aggfunc="mean")


def training_hours(rows: pd.DataFrame, engine: str) -> float:
    """The runs' training time on one core, in hours, as they recorded it when they were computed: the engine
    trains each group of trials side by side on one thread (ktlib.compute.executors.groups), so a group takes its last
    run's time; the plain path trains one run at a time."""
    if engine == "plain":
        return float(rows.seconds.sum()) / 3600
    # a group: one sweep's cell, or its bundle of partial recipes (executors.bundle)
    bundles = [str(bundle(RunKey(n, k, 0, r))) for n, k, r in rows[["n", "k", "recipe"]].itertuples(index=False)]
    group = [c for c in ("part", *layout.AXES) if c in rows]
    return float(rows.assign(group=bundles).groupby([*group, "group"]).seconds.max().sum()) / 3600


def where_computed(rows: pd.DataFrame, commit: str | None = None) -> str:
    """Which of the runs this build computed (they carry its commit) and which it read from the committed record
    (they carry the commit they were computed at), in a sentence."""
    commit = commit or git_commit()
    now = int((rows.git_commit == commit).sum())
    if now == len(rows):
        return f"all {len(rows):,} runs were computed in this build"
    if now == 0:
        return f"all {len(rows):,} runs were read from the committed record"
    return f"{now:,} of the {len(rows):,} runs were computed in this build, the others read from the committed record"
