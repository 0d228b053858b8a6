"""The partial study's analysis (notebooks/09_partial): its runs as a cube over the kept maps m, each chooser's
accuracy against m, the scores against chance, where the best m lies, how stable the maps' rankings are, and the
verdicts of its committed claims (ktlib.analysis.claims.PARTIAL_CLAIMS)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from ktlib.analysis.contrasts import CLAIM_VALUES
from ktlib.analysis.intervals import Cube
from ktlib.recipes import BASELINE, PARTIAL_LEVELS, PARTIAL_MAPS, recipe
from ktlib.record.studies import CHOOSERS, PARTIAL_PART

# ---------------------------------------------------------------- the runs over m


def over_kept(keys: pd.DataFrame, level: str) -> tuple[pd.DataFrame, np.ndarray]:
    """Rows of one partial part (runs, or their prediction keys) with n read as the kept maps m and recipe as the
    chooser: a partial recipe's runs at its m under its chooser; the level below retained whole as m=0, stored once
    under the baseline recipe, as an n=0 run is (so every chooser reads it); the level retained whole as m = every
    map, under every chooser. Returns the rows and, for each, the index of the row it came from."""
    n, every = PARTIAL_LEVELS[level], PARTIAL_MAPS[level]
    keys = keys.reset_index(drop=True)
    named = keys.recipe != BASELINE
    parts = [keys[named].assign(n=[recipe(r).kept for r in keys.recipe[named]],
                                recipe=[recipe(r).chooser for r in keys.recipe[named]]),
             keys[~named & (keys.n == n - 1)].assign(n=0)]
    whole = keys[~named & (keys.n == n)]
    parts += [whole.assign(n=every, recipe=chooser) for chooser in CHOOSERS]
    out = pd.concat(parts)
    return out.reset_index(drop=True), out.index.to_numpy()


def partial_cube(rows: pd.DataFrame, level: str, predictions: dict | None = None) -> Cube:
    """One part's runs (rows of Plan.runs, of the part `partial-<level>`) as a Cube keyed by chooser over m
    (contrasts.partly_kept); with the part's test predictions (Plan.predictions), its runs' accuracy per class too,
    so that an interval can draw the classes again."""
    mine, _ = over_kept(rows[rows.part == f"{PARTIAL_PART}{level}"], level)
    cube = dataclasses.replace(Cube.of(mine, list(CHOOSERS), CLAIM_VALUES[:1] + ("train_accuracy", "epochs",
                                                                                "validation_accuracy")),
                               keyed_by="chooser")
    if predictions is None:
        return cube
    moved = {}
    for split, (keys, predicted, labels, classes) in predictions.items():
        renamed, source = over_kept(keys, level)
        moved[split] = (renamed, predicted[source], labels, classes)
    return cube.with_classes(moved)
