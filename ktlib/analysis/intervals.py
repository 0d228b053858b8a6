"""Intervals over class splits and trials: each run's numbers as an array; the interval methods, and the coverage
simulation that chooses among them; tallies with their intervals."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd
from scipy import stats

from ktlib.recipes import BASELINE
from ktlib.record.tables import recipe_runs

VALUES = ("test_accuracy", "train_accuracy", "epochs", "validation_accuracy")  # a run's values the study's tables read
# Values a record made before the validation images and the test curves lacks: a Cube holds them as NaN, and what
# reads them refuses (ktlib.analysis.contrasts.measured_value).
LATER_VALUES = ("validation_accuracy", "log2_steps_to_common", "log2_steps_to_share", "pixel_nearest_mean")
LEVEL = 0.95  # the intervals' coverage


@dataclass
class Cells:
    """A table of cells (rows n, columns k) that a statistic reads one cell at a time, `cells.loc[n, k]`, thousands of
    times over a bootstrap's draws: a numpy array with its labels, which answers that far faster than a DataFrame."""
    values: np.ndarray  # (levels, sizes)
    rows: dict[int, int]  # n -> row
    columns: dict[int, int]  # k -> column

    @property
    def loc(self) -> "Cells":
        return self

    def __getitem__(self, cell: tuple[int, int]) -> float:
        n, k = cell
        return self.values[self.rows[n], self.columns[k]]


@dataclass
class Tables:
    """One recipe's cell means (rows n, columns k) of each value, over splits and trials; `std`: the spread of
    the first value (test accuracy) over the trials of a split, averaged over splits."""
    means: dict[str, Cells]
    std: Cells

    @property
    def test(self) -> Cells:
        return self.means["test_accuracy"]

    @property
    def train(self) -> Cells:
        return self.means["train_accuracy"]

    @property
    def epochs(self) -> Cells:
        return self.means["epochs"]


@dataclass
class Cube:
    """The runs of each recipe as arrays (split, trial, n, k), one per value; the trials of a split share
    their training sets across n and recipe, so resampling the same indices keeps every difference paired. Its axes
    are named: `keyed_by` says what the arrays' keys are (a recipe; in the breadth study, a source size), `replicate`
    what the first axis is (a class split; there, a nesting order)."""
    arrays: dict[str, dict[str, np.ndarray]]  # recipe (or source) -> value -> (S, T, N, K)
    levels: list[int]
    sizes: list[int]
    split_ids: list[int] = field(default=None)  # the runs' class splits, in the order of the first axis
    origin: np.ndarray = field(default=None)  # (S,): which of them each row is, by position (resampled: repeats)
    keyed_by: str = "recipe"
    replicate: str = "split"
    # With the test predictions (`with_classes`): each run's test accuracy on each target class, and each split's
    # target classes as indices into one list of every class the splits drew, so a draw of the classes can reweigh them.
    by_class: dict[str, np.ndarray] | None = None  # recipe -> (S, T, N, K, C)
    class_ids: np.ndarray | None = None  # (S, C)
    class_names: list[str] | None = None  # the list class_ids index

    def __post_init__(self):
        if self.origin is None:
            self.origin = np.arange(self.shape[0])
        if self.split_ids is None:
            self.split_ids = list(range(len(self.origin)))

    def splits_of_rows(self) -> list[int]:
        """The class split each row of the first axis is."""
        return [self.split_ids[i] for i in self.origin]

    @property
    def shape(self) -> tuple[int, int]:
        """(splits, trials)."""
        return next(iter(next(iter(self.arrays.values())).values())).shape[:2]

    def at(self, value: str, n: int, k: int, recipe: str = BASELINE) -> np.ndarray:
        """(S, T): one cell's value in every split and trial."""
        return self.arrays[recipe][value][:, :, self.levels.index(n), self.sizes.index(k)]

    def resampled(self, splits: np.ndarray | None = None, trials: np.ndarray | None = None) -> "Cube":
        """The cube with these splits (S',) and, for each of them, these trials (S', T'); None keeps them all."""
        S, T = self.shape
        splits = np.arange(S) if splits is None else splits
        trials = np.broadcast_to(np.arange(T), (len(splits), T)) if trials is None else trials
        arrays = {r: {v: a[splits[:, None], trials] for v, a in values.items()} for r, values in self.arrays.items()}
        if self.by_class is None:
            return dataclasses.replace(self, arrays=arrays, origin=self.origin[splits])
        return dataclasses.replace(self, arrays=arrays, origin=self.origin[splits], class_ids=self.class_ids[splits],
                                   by_class={r: a[splits[:, None], trials] for r, a in self.by_class.items()})

    def reweighted(self, weights: np.ndarray) -> "Cube":
        """The cube with each split's test accuracy the mean over its target classes weighted by `weights` (one per
        class of `with_classes`' list: how often a draw of the classes, with replacement, drew each). A split none
        of whose classes was drawn has no test accuracy in that draw (NaN)."""
        w = weights[self.class_ids].astype(float)  # (S, C)
        with np.errstate(invalid="ignore", divide="ignore"):
            scale = 1 / w.sum(1)
        arrays = {r: {**values, "test_accuracy": np.einsum("stnkc,sc,s->stnk", self.by_class[r], w, scale)}
                  for r, values in self.arrays.items()}
        return dataclasses.replace(self, arrays=arrays)

    def crossed(self, picks: np.ndarray, rng: np.random.Generator) -> list["Cube"]:
        """One cube per row of `picks` (draws of the splits), each also reweighted by a draw of the classes from rng
        (class_weights): the draws of the crossed bootstrap (CROSSED)."""
        weights = class_weights(rng, len(self.class_names), len(picks))
        return [self.resampled(p).reweighted(w) for p, w in zip(picks, weights)]

    def shared_classes(self) -> float:
        """How many target classes two splits share, on average over pairs (with_classes)."""
        sets = [set(row) for row in self.class_ids.tolist()]
        pairs = [len(a & b) for i, a in enumerate(sets) for b in sets[i + 1:]]
        return float(np.mean(pairs)) if pairs else float("nan")

    def with_classes(self, predictions: dict[int, tuple]) -> "Cube":
        """The cube with every run's test accuracy per target class, from each split's test predictions (keys,
        predictions, labels, target classes, as ktlib.record.plans.Plan.predictions gives them); the n=0 runs are
        stored under the baseline recipe, as in `of`. The classes' mean is each run's test accuracy, as the
        record has it (every class has as many test images)."""
        universe = sorted(set().union(*(set(p[3]) for p in predictions.values())))
        ids, by_class = [], {r: [] for r in self.arrays}
        for split in self.split_ids:
            keys, predicted, labels, classes = predictions[split]
            right = predicted == labels
            accuracy = np.stack([right[:, labels == c].mean(1) for c in range(len(classes))], 1)  # (runs, C)
            where = {(int(n), int(k), int(t), str(r)): i for i, (n, k, t, r) in
                     enumerate(keys[["n", "k", "trial", "recipe"]].itertuples(index=False))}
            ids.append([universe.index(c) for c in classes])
            for recipe in self.arrays:
                by_class[recipe].append(np.array([[[accuracy[where[(n, k, t, recipe if n else BASELINE)]]
                                                    for k in self.sizes] for n in self.levels]
                                                  for t in range(self.shape[1])]))
        return dataclasses.replace(self, by_class={r: np.stack(a) for r, a in by_class.items()},
                                   class_ids=np.array(ids), class_names=universe)

    @classmethod
    def of(cls, rows: pd.DataFrame, recipes: list[str] | None = None, values: tuple[str, ...] = VALUES,
           replicate: str = "split") -> "Cube":
        """The rows' recipes (by default every one with runs above n=0) and values as arrays, the first axis the
        column `replicate` names (a class split, or a nesting order); a recipe that does not fill every replicate,
        trial, n and k is an error."""
        rows = rows.rename(columns={replicate: "split"}) if replicate != "split" else rows
        rows = rows if "split" in rows else rows.assign(split=0)
        rows = rows.assign(**{v: np.nan for v in values if v in LATER_VALUES and v not in rows})
        recipes = recipes or [r for r in rows.recipe.unique() if (rows[rows.recipe == r].n > 0).any()]
        levels, sizes = sorted(rows.n.unique()), sorted(rows.k.unique())
        splits, trials = sorted(rows.split.unique()), sorted(rows.trial.unique())
        index = pd.MultiIndex.from_product([splits, trials, levels, sizes], names=["split", "trial", "n", "k"])
        shape = (len(splits), len(trials), len(levels), len(sizes))
        arrays = {}
        for recipe in recipes:
            table = recipe_runs(rows, recipe).set_index(["split", "trial", "n", "k"])[list(values)].reindex(index)
            absent = [v for v in values if v in LATER_VALUES and table[v].isna().all()]
            if table.drop(columns=absent).isna().any().any():
                raise ValueError(f"the {recipe} runs do not fill every split, trial, n and k")
            arrays[recipe] = {v: table[v].to_numpy(float).reshape(shape) for v in values}
        return cls(arrays, [int(n) for n in levels], [int(k) for k in sizes], [int(s) for s in splits],
                   replicate=replicate)

    def tables(self) -> dict[str, Tables]:
        """Each recipe's Tables over the cube's splits and trials (a resampled cube's: `resampled`)."""
        rows, columns = {n: i for i, n in enumerate(self.levels)}, {k: j for j, k in enumerate(self.sizes)}
        frame = lambda a: Cells(a, rows, columns)  # noqa: E731

        out = {}
        for recipe, values in self.arrays.items():
            first = next(iter(values.values()))
            std = first.std(1, ddof=1).mean(0) if first.shape[1] > 1 else np.full(first.shape[2:], np.nan)
            out[recipe] = Tables({name: frame(a.mean((0, 1))) for name, a in values.items()}, frame(std))
        return out


# ---------------------------------------------------------------- interval methods

# How an interval over splits can be made from each split's value of a statistic (its mean over that split's
# trials, for a mean): Student's t with the splits as units; percentiles of a bootstrap that resamples splits,
# then each drawn split's trials (this book's first method); percentiles of a bootstrap over splits alone; and
# that bootstrap's bias-corrected and accelerated (BCa) percentiles. `coverage` measures each on simulated data of
# the study's shape, and `chosen_method` picks one by a rule fixed before the simulation was first run.
METHODS = ("t", "percentile, splits then trials", "percentile, splits", "BCa, splits")
TRIALS_T = "t over trials"  # one split: Student's t on the trials (the jackknife's, for a statistic not a mean)


def t_interval(values: np.ndarray, level: float = LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """Student's t interval for the mean of `values` along the last axis (the units: splits, or trials)."""
    n = values.shape[-1]
    half = stats.t.ppf(0.5 + level / 2, n - 1) * values.std(-1, ddof=1) / np.sqrt(n)
    centre = values.mean(-1)
    return centre - half, centre + half


def jackknife_t(estimate: np.ndarray, left_out: np.ndarray, level: float = LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """estimate +- t(n-1) x the jackknife's standard error, from the statistic with each unit left out in turn
    (last axis); for a mean this is exactly the t interval."""
    n = left_out.shape[-1]
    se = np.sqrt((n - 1) / n * ((left_out - left_out.mean(-1, keepdims=True)) ** 2).sum(-1))
    half = stats.t.ppf(0.5 + level / 2, n - 1) * se
    return estimate - half, estimate + half


def percentile_interval(draws: np.ndarray, level: float = LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """The middle `level` of bootstrap draws (last axis)."""
    tail = (1 - level) / 2
    return np.nanquantile(draws, tail, axis=-1), np.nanquantile(draws, 1 - tail, axis=-1)


def bca_interval(estimate: np.ndarray, draws: np.ndarray, left_out: np.ndarray,
                 level: float = LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """Efron's BCa interval: bootstrap percentiles moved by the draws' bias (z0) and by the acceleration that
    the jackknife (left_out, last axis) estimates."""
    estimate = np.asarray(estimate, float)[..., None]
    share = (draws < estimate).mean(-1) + 0.5 * (draws == estimate).mean(-1)
    z0 = stats.norm.ppf(np.clip(share, 1e-6, 1 - 1e-6))
    d = left_out.mean(-1, keepdims=True) - left_out
    with np.errstate(invalid="ignore", divide="ignore"):
        a = np.nan_to_num((d ** 3).sum(-1) / (6 * ((d ** 2).sum(-1)) ** 1.5))
    ends = []
    for z in stats.norm.ppf([(1 - level) / 2, (1 + level) / 2]):
        q = stats.norm.cdf(z0 + (z0 + z) / (1 - a * (z0 + z)))
        ends.append(np.array([np.nanquantile(row, qi) for row, qi in
                              zip(draws.reshape(-1, draws.shape[-1]), np.ravel(q))]).reshape(q.shape))
    return ends[0], ends[1]


def over_splits(method: str, estimate, per_split: np.ndarray, draws: np.ndarray | None = None,
                nested: np.ndarray | None = None, level: float = LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """An interval over splits by `method`, from each split's value (per_split, last axis), draws of the mean over
    splits resampled with replacement (draws), and, for the nested bootstrap, draws that also resampled trials."""
    if method == "t":
        return t_interval(per_split, level)
    if method == "percentile, splits then trials":
        return percentile_interval(nested, level)
    if method == "percentile, splits":
        return percentile_interval(draws, level)
    if method == "BCa, splits":
        S = per_split.shape[-1]
        left_out = (per_split.sum(-1, keepdims=True) - per_split) / (S - 1)
        return bca_interval(estimate, draws, left_out, level)
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")


def clopper_pearson(hits: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """The exact (Clopper-Pearson) interval for a share hits/n."""
    tail = (1 - level) / 2
    low = 0.0 if hits == 0 else float(stats.beta.ppf(tail, hits, n - hits + 1))
    high = 1.0 if hits == n else float(stats.beta.ppf(1 - tail, hits + 1, n - hits))
    return low, high


def spearman_interval(x, y, level: float = LEVEL) -> tuple[float, float, float]:
    """Spearman's rank correlation of x and y, and its interval by Fisher's z with the Fieller-Hartley-Pearson
    variance 1.06 / (n - 3)."""
    rho = float(stats.spearmanr(x, y).statistic)
    half = stats.norm.ppf(0.5 + level / 2) * np.sqrt(1.06 / (len(x) - 3))
    z = np.arctanh(np.clip(rho, -0.999999, 0.999999))
    return rho, float(np.tanh(z - half)), float(np.tanh(z + half))


# ---------------------------------------------------------------- which method: a coverage simulation

# Each scenario draws a statistic's per-trial values as split effect + trial noise around a known truth (0), at
# unit scale: intervals are equivariant, so only the shapes of the two distributions and their ratio matter.
SCENARIOS = {
    "normal": (lambda g, n: g.normal(size=n), lambda g, n: g.normal(size=n)),
    "splits vary most": (lambda g, n: g.normal(size=n), lambda g, n: 0.3 * g.normal(size=n)),
    "trials vary most": (lambda g, n: 0.3 * g.normal(size=n), lambda g, n: g.normal(size=n)),
    "skewed splits": (lambda g, n: (g.lognormal(0, 1, n) - np.exp(0.5)) / np.sqrt((np.e - 1) * np.e),
                      lambda g, n: g.normal(size=n)),
    "heavy-tailed trials": (lambda g, n: g.normal(size=n), lambda g, n: g.standard_t(3, n) / np.sqrt(3)),
}


COVERAGE_REPS = 2000  # simulated studies per scenario and shape


def coverage(seed: int, shapes: tuple[tuple[int, int], ...] = ((10, 5), (3, 5), (1, 5)), reps: int = COVERAGE_REPS,
             draws: int = 1000, chunk: int = 50) -> pd.DataFrame:
    """Each method's coverage of the true mean (and the interval's mean width), per scenario and shape (splits,
    trials): `reps` simulated studies, each interval from `draws` bootstrap draws where it needs them. For one
    split, the truth is that split's own mean, and the methods are t and the percentile bootstrap over trials."""
    rng = np.random.default_rng(seed)
    out = []
    for S, T in shapes:
        methods = METHODS if S > 1 else (TRIALS_T, "percentile, trials")
        for name, (split_effect, noise) in SCENARIOS.items():
            hit, width = {m: 0 for m in methods}, {m: 0.0 for m in methods}
            for start in range(0, reps, chunk):
                R = min(chunk, reps - start)
                effect = split_effect(rng, (R, S))
                x = effect[:, :, None] + noise(rng, (R, S, T))
                means = x.mean(2)  # (R, S)
                truth = effect[:, 0] if S == 1 else 0.0  # one split: its own mean, over redraws of its trials
                ends = {}
                if S == 1:
                    ends[TRIALS_T] = t_interval(x[:, 0])
                    idx = rng.integers(0, T, (draws, T))
                    ends["percentile, trials"] = percentile_interval(x[:, 0][:, idx].mean(-1))
                else:
                    s_idx = rng.integers(0, S, (draws, S))
                    t_idx = rng.integers(0, T, (draws, S, T))
                    splits_only = means[:, s_idx].mean(-1)  # (R, draws)
                    nested = x[:, s_idx[:, :, None], t_idx].mean((-1, -2))
                    for m in methods:
                        ends[m] = over_splits(m, means.mean(1), means, splits_only, nested)
                for m, (low, high) in ends.items():
                    hit[m] += int(((low <= truth) & (truth <= high)).sum())
                    width[m] += float((high - low).sum())
            for m in methods:
                out.append({"splits": S, "trials": T, "scenario": name, "method": m,
                            "coverage": hit[m] / reps, "width": width[m] / reps})
    return pd.DataFrame(out)


# ---------------------------------------------------------------- intervals that cover a new draw of the classes

# The splits' target classes are a draw too, and two splits share some of them: an interval over splits alone speaks
# for new splits of these classes, not for new classes. This bootstrap draws the splits and, crossed with them, every
# class the splits drew (with replacement, once per draw, so a class weighs on every split that holds it): Owen's
# (2007) pigeonhole bootstrap for a mean over a crossed design, which errs on the wide side.
CROSSED = "t, splits and classes"
SPLITS_ONLY = "t"  # the interval over splits alone shown beside it: Student's t, the units the splits


def crossed_interval(estimate, draws: np.ndarray, splits: int, level: float = LEVEL) -> tuple:
    """estimate +- t(splits - 1) x the crossed draws' standard deviation (last axis), scaled by sqrt(S / (S - 1)) as
    the t interval's standard error is: with only ten splits, the bootstrap's percentiles are too narrow (they use
    the normal's tails and the biased variance), which the coverage simulation shows."""
    if splits < 2:  # one replicate (a smoke build's one draw): no interval
        nothing = np.full_like(np.asarray(estimate, float), np.nan)
        return nothing, nothing
    half = stats.t.ppf(0.5 + level / 2, splits - 1) * np.nanstd(draws, -1) * np.sqrt(splits / (splits - 1))
    return estimate - half, estimate + half


def class_weights(rng: np.random.Generator, classes: int, draws: int) -> np.ndarray:
    """(draws, classes): how often each class is drawn in each of `draws` draws of as many classes, with replacement."""
    return rng.multinomial(classes, np.full(classes, 1 / classes), size=draws)


# Each scenario draws one simulated study: per split an effect, per class of the pool an effect (each split takes
# `classes` of the pool without replacement, so splits share classes), per trial an effect shared by its classes, and
# per trial and class noise; the truth is 0, every effect being centred. Unit scales: only the shapes and ratios matter.
_skewed = lambda g, n: (g.lognormal(0, 1, n) - np.exp(0.5)) / np.sqrt((np.e - 1) * np.e)  # noqa: E731
CROSSED_SCENARIOS = {
    "classes vary most": (lambda g, n: 0.3 * g.normal(size=n), lambda g, n: g.normal(size=n)),
    "splits and classes vary alike": (lambda g, n: g.normal(size=n), lambda g, n: g.normal(size=n)),
    "skewed splits": (_skewed, lambda g, n: 0.5 * g.normal(size=n)),
    "skewed classes": (lambda g, n: 0.5 * g.normal(size=n), _skewed),
    "no class effect": (lambda g, n: g.normal(size=n), lambda g, n: np.zeros(n)),
}


def crossed_coverage(seed: int, splits: int = 10, trials: int = 5, classes: int = 20, pool: int = 42,
                     reps: int = COVERAGE_REPS, draws: int = 1000) -> pd.DataFrame:
    """The coverage of the truth (and mean width) of the interval over splits alone (SPLITS_ONLY), the nested
    bootstrap over splits then trials, and the crossed one (CROSSED), per CROSSED_SCENARIOS, at the study's shape:
    `splits` splits of `classes` target classes drawn from a pool of `pool`, `trials` trials."""
    rng = np.random.default_rng(seed)
    out = []
    for name, (split_effect, class_effect) in CROSSED_SCENARIOS.items():
        hit = dict.fromkeys((SPLITS_ONLY, "percentile, splits then trials", "percentile, splits and classes",
                             CROSSED), 0)
        width = dict.fromkeys(hit, 0.0)
        for _ in range(reps):
            ids = np.stack([rng.choice(pool, classes, replace=False) for _ in range(splits)])  # (S, C)
            y = (split_effect(rng, splits)[:, None, None] + class_effect(rng, pool)[ids][:, None, :]
                 + 0.5 * rng.normal(size=(splits, trials, 1)) + rng.normal(size=(splits, trials, classes)))
            per_split = y.mean((1, 2))
            picks = rng.integers(0, splits, (draws, splits))
            t_idx = rng.integers(0, trials, (draws, splits, trials))
            nested = y.mean(2)[picks[:, :, None], t_idx].mean((1, 2))
            w = class_weights(rng, pool, draws)[:, ids]  # (draws, S, C)
            cls = y.mean(1)  # (S, C)
            with np.errstate(invalid="ignore", divide="ignore"):
                weighted = (w * cls).sum(2) / w.sum(2)  # (draws, S)
            crossed = np.nanmean(np.take_along_axis(weighted, picks, 1), 1)
            ends = {SPLITS_ONLY: t_interval(per_split), "percentile, splits then trials": percentile_interval(nested),
                    "percentile, splits and classes": percentile_interval(crossed),
                    CROSSED: crossed_interval(per_split.mean(), crossed, splits)}
            for m, (low, high) in ends.items():
                hit[m] += int(low <= 0 <= high)
                width[m] += float(high - low)
        out += [{"scenario": name, "method": m, "coverage": hit[m] / reps, "width": width[m] / reps} for m in hit]
    return pd.DataFrame(out)


def chosen_method(table: pd.DataFrame, level: float = LEVEL) -> str:
    """Of the methods over several splits, the one whose coverage stays nearest `level` in its worst scenario
    and shape (the smallest largest distance); the rule was fixed before the simulation was first run."""
    many = table[table.splits > 1]
    worst = (many.coverage - level).abs().groupby(many.method).max()
    return str(worst.idxmin())


# ---------------------------------------------------------------- the study's tables

def estimate(cube: Cube, statistics: dict[str, Callable[[dict[str, Tables]], float]], method: str, draws: int,
             seed: int) -> pd.DataFrame:
    """Each statistic on all runs, and its 95% interval by `method` (METHODS, or CROSSED, for a cube with its classes)
    over the splits; with one split, by Student's t over its trials (the jackknife's). The statistics must be means,
    or differences of means, of cells: then the mean of the splits' values is the statistic on all runs, and each
    split's value is the unit the interval counts. The bootstrap draws splits, then for the nested method each drawn
    split's trials, and for CROSSED the classes."""
    rng = np.random.default_rng(seed)
    S, T = cube.shape
    full = cube.tables()
    names = list(statistics)
    point = np.array([statistics[n](full) for n in names])
    if S == 1:
        left_out = [cube.resampled(None, np.delete(np.arange(T), j)[None]).tables() for j in range(T)]
        low, high = jackknife_t(point, np.array([[statistics[n](t) for t in left_out] for n in names]))
    else:
        per_split = np.array([[statistics[n](cube.resampled(np.array([s])).tables()) for s in range(S)]
                              for n in names])
        picks = rng.integers(0, S, (draws, S))
        drawn = per_split[:, picks].mean(-1)
        nested = None
        if method == "percentile, splits then trials":
            tables = [cube.resampled(p, rng.integers(0, T, (S, T))).tables() for p in picks]
            nested = np.array([[statistics[n](t) for t in tables] for n in names])
        if method == CROSSED:
            tables = [x.tables() for x in cube.crossed(picks, rng)]
            low, high = crossed_interval(point, np.array([[statistics[n](t) for t in tables] for n in names]), S)
        else:
            with np.errstate(invalid="ignore"):
                low, high = over_splits(method, point, per_split, drawn, nested)
    return pd.DataFrame({"estimate": point, "low": low, "high": high}, index=pd.Index(names, tupleize_cols=False))


def interval_text(row: pd.Series, fmt: str = "+.3f") -> str:
    """'+0.120 [+0.080, +0.160]': an estimate and its interval."""
    return f"{row.estimate:{fmt}} [{row.low:{fmt}}, {row.high:{fmt}}]"


def interval_texts(table: pd.DataFrame, fmt: str = "+.3f") -> pd.Series:
    """Each row as 'estimate [low, high]' ('not measured' where there is no estimate), indexed by the table's columns
    other than these three, if it has any."""
    keys = [col for col in table.columns if col not in ("estimate", "low", "high")]
    table = table.set_index(keys) if keys else table
    return table.apply(lambda r: "not measured" if np.isnan(r.estimate) else interval_text(r, fmt), axis=1)
