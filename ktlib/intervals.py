"""Intervals over class splits and trials: each run's numbers as an array, resampled splits first, then trials."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from .transfer import BASELINE

VALUES = ("test_accuracy", "train_accuracy", "epochs")  # a run's values the claims read
LEVEL = 0.95  # the intervals' coverage


@dataclass
class Tables:
    """One recipe's cell means (rows n, columns k) of each value, over splits and trials; `std`: the spread of
    the first value (test accuracy) over the trials of a split, averaged over splits."""
    means: dict[str, pd.DataFrame]
    std: pd.DataFrame

    @property
    def test(self) -> pd.DataFrame:
        return self.means["test_accuracy"]

    @property
    def train(self) -> pd.DataFrame:
        return self.means["train_accuracy"]

    @property
    def epochs(self) -> pd.DataFrame:
        return self.means["epochs"]


def curve(rows: pd.DataFrame, recipe: str) -> pd.DataFrame:
    """A recipe's runs with the shared n=0 runs, which are stored once, under the baseline recipe."""
    return rows[(rows.recipe == recipe) | ((rows.n == 0) & (rows.recipe == BASELINE))].assign(recipe=recipe)


@dataclass
class Cube:
    """The runs of each recipe as arrays (split, trial, n, k), one per value; the trials of a split share
    their training sets across n and recipe, so resampling the same indices keeps every difference paired."""
    arrays: dict[str, dict[str, np.ndarray]]  # recipe -> value -> (S, T, N, K)
    levels: list[int]
    sizes: list[int]

    @classmethod
    def of(cls, rows: pd.DataFrame, recipes: list[str] | None = None, values: tuple[str, ...] = VALUES) -> "Cube":
        """The rows' recipes (by default every one with runs above n=0) and values as arrays; a recipe that
        does not fill every split, trial, n and k is an error."""
        rows = rows if "split" in rows else rows.assign(split=0)
        recipes = recipes or [r for r in rows.recipe.unique() if (rows[rows.recipe == r].n > 0).any()]
        levels, sizes = sorted(rows.n.unique()), sorted(rows.k.unique())
        splits, trials = sorted(rows.split.unique()), sorted(rows.trial.unique())
        index = pd.MultiIndex.from_product([splits, trials, levels, sizes], names=["split", "trial", "n", "k"])
        shape = (len(splits), len(trials), len(levels), len(sizes))
        arrays = {}
        for recipe in recipes:
            table = curve(rows, recipe).set_index(["split", "trial", "n", "k"])[list(values)].reindex(index)
            if table.isna().any().any():
                raise ValueError(f"the {recipe} runs do not fill every split, trial, n and k")
            arrays[recipe] = {v: table[v].to_numpy(float).reshape(shape) for v in values}
        return cls(arrays, [int(n) for n in levels], [int(k) for k in sizes])

    def tables(self, splits: np.ndarray | None = None, trials: np.ndarray | None = None) -> dict[str, Tables]:
        """Each recipe's Tables, over all splits and trials, or over the resampled ones: splits (S',) and, for
        each of them, trials (S', T')."""
        def pick(a: np.ndarray) -> np.ndarray:
            return a if splits is None else a[splits[:, None], trials]

        def frame(a: np.ndarray) -> pd.DataFrame:
            return pd.DataFrame(a, index=pd.Index(self.levels, name="n"), columns=pd.Index(self.sizes, name="k"))

        out = {}
        for recipe, values in self.arrays.items():
            picked = {name: pick(a) for name, a in values.items()}
            first = next(iter(picked.values()))
            std = first.std(1, ddof=1).mean(0) if first.shape[1] > 1 else np.full(first.shape[2:], np.nan)
            out[recipe] = Tables({name: frame(a.mean((0, 1))) for name, a in picked.items()}, frame(std))
        return out


def bootstrap(cube: Cube, statistics: dict[str, Callable[[dict[str, Tables]], float]], draws: int,
              seed: int) -> pd.DataFrame:
    """Each statistic on all runs, and its 95% percentile interval from `draws` hierarchical resamples:
    splits with replacement, then, within each drawn split, its trials with replacement. With one split,
    only trials are resampled."""
    rng = np.random.default_rng(seed)
    S, T = next(iter(next(iter(cube.arrays.values())).values())).shape[:2]
    full = cube.tables()
    samples = {name: np.empty(draws) for name in statistics}
    for d in range(draws):
        splits = rng.integers(0, S, S)
        trials = rng.integers(0, T, (S, T))
        tables = cube.tables(splits, trials)
        for name, statistic in statistics.items():
            samples[name][d] = statistic(tables)
    tail = (1 - LEVEL) / 2

    def quantile(a: np.ndarray, q: float) -> float:
        return float(np.quantile(a[np.isfinite(a)], q)) if np.isfinite(a).any() else np.nan

    return pd.DataFrame([{"estimate": statistic(full), "low": quantile(samples[name], tail),
                          "high": quantile(samples[name], 1 - tail)} for name, statistic in statistics.items()],
                        index=pd.Index(list(statistics), tupleize_cols=False))


def interval_text(row: pd.Series, fmt: str = "+.3f") -> str:
    """'+0.120 [+0.080, +0.160]': an estimate and its interval."""
    return f"{row.estimate:{fmt}} [{row.low:{fmt}}, {row.high:{fmt}}]"
