"""The arithmetic of the claims: the lines the book draws (THRESHOLDS) and the verdict words, and each claim about
the runs as contrasts of cell means, each with the margin it must clear (ktlib.analysis.verdicts judges them)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from ktlib.analysis.intervals import Cube
from ktlib.compute.model import connections, run_flops
from ktlib.compute.train import curve_points
from ktlib.config import TOLERANCE
from ktlib.recipes import BASELINE, SCORES, TUNED, first_trained


@dataclass(frozen=True)
class Threshold:
    """Where a verdict draws its line, and what in the paper's words it stands for."""
    value: float
    meaning: str


# What the paper's words are taken to mean: the margins its claims' contrasts must clear, and the other lines the
# book draws; the book glues every line of this table. The values of all but `fits` were set before the study's
# first judgement, for the rules the book used then. Their use as margins of contrasts, and `fits`, were chosen
# after the record's numbers were known (the Claims page says so).
THRESHOLDS = {
    "source_near": Threshold(0.01, "'reached 94.38%': within 1 point of it"),
    "clear_gain": Threshold(0.02, "'clear advantage', 'marked improvements', 'better results': a contrast of mean "
                                  "test accuracy at least this large"),
    "barely": Threshold(0.5, "'not appreciably more past about 10 samples': n=5's gain from k=10 to k=40 under "
                             "this share of the untransferred net's"),
    "slight": Threshold(0.25, "'slight variance': the pooled trial-to-trial std under this share of the k=1 "
                              "transfer gain"),
    "fits": Threshold(0.95, "a net fits its training set when its mean training accuracy is at least this: only "
                            "where the most-retained net fits does a train-test gap measure overfitting"),
    "tolerance": Threshold(TOLERANCE, "a re-run reproduces the record when no cell mean moves by more than "
                                              "this"),
    "dead": Threshold(2.0, "a run is dead when it stops with training accuracy at most this many times chance: "
                           "it never began to learn"),
    # set before the breadth study's grid first ran (issue 37)
    "alive": Threshold(0.5, "a capacity control's signal is alive at a level when its spread there is at least this "
                            "share of the trained net's: a breadth source whose control falls under it at any level, "
                            "in any order, is excluded with all its knowledge cells, counted and named"),
    # set with the validation images and the test curves, before any run recorded a curve (issue 36)
    "learned": Threshold(0.9, "'effort required to learn': the optimiser steps a run takes until its test accuracy "
                              "first reaches this share of a cell's final mean accuracy"),
}
SOURCE_NEAR, CLEAR_GAIN, BARELY, SLIGHT, FITS, TOLERANCE, DEAD, LEARNED, ALIVE = (
    THRESHOLDS[name].value for name in ("source_near", "clear_gain", "barely", "slight", "fits", "tolerance", "dead",
                                        "learned", "alive"))

# A verdict, from where the contrasts' intervals lie against their margins (ktlib.analysis.verdicts.verdict). A claim
# that holds in part says how the rest fall: some short of their margins, or (none short) some across them.
HOLDS, FAILS, UNDECIDED, NOT_MEASURED = "holds", "fails", "undecided", "not measured"
PARTLY_SHORT, PARTLY_ACROSS = "partly, short elsewhere", "partly, undecided elsewhere"
PARTLY = (PARTLY_SHORT, PARTLY_ACROSS)



# ---------------------------------------------------------------- the sweep, as contrasts

@dataclass(frozen=True)
class Contrast:
    """A difference of cell means that a claim says lies beyond a margin: its value on each split (a mean over the
    split's trials) from the runs' Cube, the margin, and on which side of it the claim puts the value. A contrast
    that does not decide is shown beside the claim's verdict and takes no part in it."""
    label: str
    per_split: Callable[[Cube], np.ndarray]
    margin: float = 0.0
    above: bool = True
    decides: bool = True
    fmt: str = "+.3f"




# What a claim's contrasts read: each run's numbers, its training arithmetic, how fast it learned (`learning_steps`),
# and the training-free readout of its training set on raw pixels (`pixel_baseline`).
CLAIM_VALUES = ("test_accuracy", "train_accuracy", "epochs", "gflops", "validation_accuracy", "log2_steps_to_common",
                "log2_steps_to_share", "pixel_nearest_mean")


def cube(rows: pd.DataFrame, classes: int, recipes: list[str] | None = None,
         readouts: pd.DataFrame | None = None) -> Cube:
    """The runs as arrays for the claims, with each run's training arithmetic in GFLOP (ktlib.compute.model.run_flops:
    its steps and per-epoch evaluations on its k x classes training images), how many steps it took to learn
    (`learning_steps`), and, given the readouts, the nearest class mean on the raw pixels of its training set."""
    start = [first_trained(r, n) for r, n in zip(rows.recipe, rows.n)]
    conn = connections()
    gflops = [run_flops(s, e, k * classes, conn=conn) / 1e9 for s, e, k in zip(start, rows.epochs, rows.k)]
    rows = learning_steps(rows.assign(gflops=gflops))
    return Cube.of(pixel_baseline(rows, readouts), recipes, CLAIM_VALUES)


def _first_reached(curve: str, accuracy: float) -> float:
    """log2 of the optimiser steps at which a run's test curve first reaches `accuracy`; a run that never does is
    counted at the next reading it would have had, twice its last step (so it counts as slower than any that did)."""
    points = curve_points(curve)
    steps = next((s for s, a in points if a >= accuracy), 2 * points[-1][0])
    return float(np.log2(steps))


def learning_steps(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows with how fast each run learned, after Raghu et al. (2019), in log2 optimiser steps on its test curve
    (ktlib.compute.train.on_curve): to LEARNED of the lowest final mean test accuracy among the frozen recipe's
    levels at its split and k, an accuracy every level attains (log2_steps_to_common); and to LEARNED of its own
    cell's final mean (log2_steps_to_share), which flatters a net that learns little. NaN without curves."""
    if "test_curve" not in rows or not rows.test_curve.fillna("").astype(bool).all():
        return rows.assign(log2_steps_to_common=np.nan, log2_steps_to_share=np.nan)
    split = ["split"] if "split" in rows else []
    means = rows.groupby([*split, "recipe", "n", "k"]).test_accuracy.transform("mean")
    common = rows.join(common_accuracies(rows), on=[*split, "k"]).common
    return rows.assign(log2_steps_to_common=[_first_reached(c, a) for c, a in zip(rows.test_curve, common)],
                       log2_steps_to_share=[_first_reached(c, LEARNED * a) for c, a in zip(rows.test_curve, means)])


def common_accuracies(rows: pd.DataFrame) -> pd.Series:
    """Per split (if the rows have several) and k: the accuracy the effort claim times every level to, LEARNED of the
    lowest final mean test accuracy among the frozen recipe's levels, which every level attains."""
    split = ["split"] if "split" in rows else []
    frozen = rows[rows.recipe == BASELINE].groupby([*split, "k", "n"]).test_accuracy.mean()
    return (LEARNED * frozen.groupby(level=[*split, "k"]).min()).rename("common")


def curve_means(rows: pd.DataFrame, k: int) -> pd.DataFrame:
    """At one size: the mean test accuracy over trials at each power of two of optimiser steps (rows), per n
    (columns), each run read at its latest reading (a run that stopped keeps its final accuracy)."""
    at_k = rows[rows.k == k]
    first = min(curve_points(c)[0][0] for c in at_k.test_curve)
    last = max(curve_points(c)[-1][0] for c in at_k.test_curve)
    steps = [2 ** i for i in range(int(np.log2(first)), int(np.log2(last)) + 2) if 2 ** i >= first]
    out = {}
    for n, runs in at_k.groupby("n"):
        read = []
        for curve in runs.test_curve:
            points = curve_points(curve)
            read.append([next(a for s, a in reversed(points) if s <= step) if step >= points[0][0] else np.nan
                         for step in steps])
        out[int(n)] = np.nanmean(read, 0)
    return pd.DataFrame(out, index=pd.Index(steps, name="optimiser steps")).rename_axis(columns="n")


def pixel_baseline(rows: pd.DataFrame, readouts: pd.DataFrame | None) -> pd.DataFrame:
    """The rows with the nearest class mean's test accuracy on the raw pixels of each run's own training set (the
    readouts' n=0 nearest-mean row of its split, k and trial); NaN without readouts."""
    if readouts is None:
        return rows.assign(pixel_nearest_mean=np.nan)
    split = ["split"] if "split" in rows and "split" in readouts else []
    pixels = readouts[(readouts.n == 0) & (readouts.readout == "nearest-mean")]
    pixels = pixels.set_index([*split, "k", "trial"]).test_accuracy.rename("pixel_nearest_mean")
    return rows.drop(columns="pixel_nearest_mean", errors="ignore").join(pixels, on=[*split, "k", "trial"])


def measured_value(c: Cube, value: str, what: str) -> None:
    """Refuse a value the record does not hold (a record made before the validation images and the test curves, or
    runs read without their readouts), naming it: ValueError(what), which a claim shows as 'this grid lacks ...'."""
    if any(value not in values or np.isnan(values[value]).any() for values in c.arrays.values()):
        raise ValueError(what)


VALIDATION = "validation accuracy (a record made before the validation images: nothing is chosen on its test images)"


def _difference(a: int, b: int, k: int, value: str = "test_accuracy", recipe: str = BASELINE):
    """Per split: the mean over trials of cell (a, k) minus cell (b, k), paired by trial."""
    return lambda c: (c.at(value, a, k, recipe) - c.at(value, b, k, recipe)).mean(1)


def _level_grid(c: Cube, value: str, k: int, recipe: str = BASELINE) -> np.ndarray:
    """(S, T, N): one size's values at every level."""
    return c.arrays[recipe][value][:, :, :, c.sizes.index(k)]


def _two_sizes(c: Cube) -> tuple[int, int]:
    if len(c.sizes) < 2:
        raise ValueError("a second training-set size")
    return c.sizes[0], c.sizes[-1]


def contrasts_k1_rises(c: Cube) -> list[Contrast]:
    k, top = c.sizes[0], c.levels[-1]
    x = np.array(c.levels, float) - np.mean(c.levels)

    def slope(cube: Cube) -> np.ndarray:  # per trial: the least-squares slope of accuracy on n
        return (_level_grid(cube, "test_accuracy", k) @ x / (x @ x)).mean(1)

    return [Contrast(f"n={top} - n=0 at k={k}", _difference(top, 0, k), CLEAR_GAIN),
            Contrast(f"slope over n at k={k}", slope),
            Contrast(f"n={top} - n={top - 1} at k={k}", _difference(top, top - 1, k))]


def contrasts_best_moves_down(c: Cube) -> list[Contrast]:
    _, large = _two_sizes(c)
    top = c.levels[-1]
    return [Contrast(f"n={top - 1} - n={top} at k={large}", _difference(top - 1, top, large))]


def contrasts_c1_s4(c: Cube, n: int = 4) -> list[Contrast]:
    return [Contrast(f"n={n} - n=0 at k={k}", _difference(n, 0, k), CLEAR_GAIN) for k in c.sizes]


def contrasts_c5_saturates(c: Cube, knee: int = 10) -> list[Contrast]:
    large, top = c.sizes[-1], c.levels[-1]
    if knee not in c.sizes or large <= knee:
        raise ValueError(f"sizes k={knee} and above")
    def excess(cube: Cube) -> np.ndarray:
        gain = lambda n: (cube.at("test_accuracy", n, large) - cube.at("test_accuracy", n, knee)).mean(1)
        return gain(top) - BARELY * gain(0)
    return [Contrast(f"n={top}'s gain k={knee} to {large} - {BARELY:g} x n=0's", excess, above=False)]


def contrasts_variance(c: Cube) -> list[Contrast]:
    k, top = c.sizes[0], c.levels[-1]
    if c.shape[1] < 2:
        raise ValueError("a second trial")
    gain = _difference(top, 0, k)

    def excess(cube: Cube) -> np.ndarray:  # pooled over cells: the root of the mean unbiased variance
        if cube.shape[1] < 2:  # a jackknife of two trials leaves one: no spread to measure
            return np.full(cube.shape[0], np.nan)
        spread = np.sqrt(cube.arrays[BASELINE]["test_accuracy"].var(1, ddof=1).mean((1, 2)))
        return spread - SLIGHT * gain(cube)

    return [Contrast(f"pooled trial std - {SLIGHT:g} x (n={top} - n=0 at k={k})", excess, above=False)]


def contrasts_effort(c: Cube) -> list[Contrast]:
    k = c.sizes[0]
    measured_value(c, "log2_steps_to_common", "test curves (a record made before they were kept)")
    return ([Contrast(f"log2 steps to a common accuracy, n={n} - n=0 at k={k}",
                      _difference(n, 0, k, "log2_steps_to_common"), above=False, fmt="+.2f") for n in c.levels[1:]]
            + [Contrast(f"log2 steps to {LEARNED:.0%} of its own final, n={n} - n=0 at k={k}",
                        _difference(n, 0, k, "log2_steps_to_share"), above=False, decides=False, fmt="+.2f")
               for n in c.levels[1:]]
            + [Contrast(f"GFLOP n={n} - n=0 at k={k}", _difference(n, 0, k, "gflops"), above=False, decides=False,
                        fmt="+.2f") for n in c.levels[1:]]
            + [Contrast(f"epochs n={n} - n=0 at k={k}", _difference(n, 0, k, "epochs"), above=False, decides=False,
                        fmt="+.0f") for n in c.levels[1:]])


def contrasts_beats_pixels(c: Cube) -> list[Contrast]:
    k = c.sizes[0]
    measured_value(c, "pixel_nearest_mean", "the training-free readouts")
    return [Contrast(f"n={n} - nearest class mean on pixels at k={k}",
                     lambda cube, n=n: (cube.at("test_accuracy", n, k) - cube.at("pixel_nearest_mean", n, k)).mean(1))
            for n in c.levels]


def contrasts_level_steps(c: Cube) -> list[Contrast]:
    """Each retained level's own step, n minus n-1, at every k: reported, deciding nothing."""
    return [Contrast(f"n={b} - n={a} at k={k}", _difference(b, a, k), decides=False)
            for k in c.sizes for a, b in zip(c.levels, c.levels[1:])]


def informative_gap_sizes(c: Cube) -> list[int]:
    """Where a train-test gap says something the test accuracy does not: above the smallest size (there every
    net fits its few images, and the gap is one minus the test accuracy), and where the most-retained net fits
    its training set (mean training accuracy at least FITS; below it, a narrow gap is underfitting)."""
    top = c.levels[-1]
    return [k for k in c.sizes[1:] if c.at("train_accuracy", top, k).mean() >= FITS]


def contrasts_gap(c: Cube) -> list[Contrast]:
    top = c.levels[-1]
    sizes = informative_gap_sizes(c)
    if not sizes:
        raise ValueError(f"a size above the smallest where n={top} fits its training set")

    def narrower(k: int):
        gap = lambda cube, n: cube.at("train_accuracy", n, k) - cube.at("test_accuracy", n, k)
        return lambda cube: (gap(cube, 0) - gap(cube, top)).mean(1)

    return [Contrast(f"gap n=0 - gap n={top} at k={k}", narrower(k)) for k in sizes]


def contrasts_gain_shrinks(c: Cube) -> list[Contrast]:
    small, large = _two_sizes(c)

    def shrink(cube: Cube) -> np.ndarray:  # the mean gain over n >= 1 at the smallest size minus at the largest
        gain = lambda k: (_level_grid(cube, "test_accuracy", k)[:, :, 1:]
                          - _level_grid(cube, "test_accuracy", k)[:, :, :1]).mean(2)
        return (gain(small) - gain(large)).mean(1)

    return [Contrast(f"mean gain of n=1..{c.levels[-1]}, k={small} - k={large}", shrink, CLEAR_GAIN)]


def contrasts_curve_order(c: Cube) -> list[Contrast]:
    _two_sizes(c)
    return [Contrast(f"n={n}: k={b} - k={a}", lambda cube, n=n, a=a, b=b:
                     (cube.at("test_accuracy", n, b) - cube.at("test_accuracy", n, a)).mean(1))
            for n in c.levels for a, b in zip(c.sizes, c.sizes[1:])]


def chosen_on_validation(c: Cube, recipe: str, k: int) -> dict[int, int]:
    """Per split (by its row's origin): the level n >= 1 with the best mean validation accuracy at k over the split's
    trials. The test images never choose, so a best-against-best difference on them is not flattered by the noise
    that picked the best."""
    measured_value(c, "validation_accuracy", VALIDATION)
    means = _level_grid(c, "validation_accuracy", k, recipe)[:, :, 1:].mean(1)  # (S, N-1)
    return {int(o): c.levels[1:][int(i)] for o, i in zip(c.origin, means.argmax(1))}


def contrasts_fine_tuning(c: Cube) -> list[Contrast]:
    if TUNED not in c.arrays:
        raise ValueError("fine-tuned runs")
    out = []
    for k in c.sizes:
        chosen = {r: chosen_on_validation(c, r, k) for r in (TUNED, BASELINE)}

        def margin(cube: Cube, k=k, chosen=chosen) -> np.ndarray:
            rows = np.arange(cube.shape[0])
            pick = lambda r: _level_grid(cube, "test_accuracy", k, r)[
                rows, :, [cube.levels.index(chosen[r][int(o)]) for o in cube.origin]]
            return (pick(TUNED) - pick(BASELINE)).mean(1)

        out.append(Contrast(f"best fine-tuned - best frozen at k={k}", margin, CLEAR_GAIN))
    return out


def best_level_shares(c: Cube, k: int, draws: int, seed: int) -> pd.Series:
    """The level with the best mean validation accuracy at k, over bootstrap draws of splits then trials: the share
    of draws in which each n is chosen. An argmax has no confidence interval; its distribution is what the draws
    can say."""
    measured_value(c, "validation_accuracy", VALIDATION)
    rng = np.random.default_rng(seed)
    S, T = c.shape
    best = [c.levels[int(_level_grid(c.resampled(rng.integers(0, S, S), rng.integers(0, T, (S, T))),
                                     "validation_accuracy", k).mean((0, 1)).argmax())] for _ in range(draws)]
    return pd.Series(best).value_counts(normalize=True).sort_index().rename_axis("n").rename("share of draws")


# ---------------------------------------------------------------- the breadth study, as contrasts
# (set in issue 37 before any run of the grid: ktlib.record.studies.BREADTH)

def cells(c: Cube) -> list[tuple[int, int]]:
    """The source cells of a cube keyed by (classes, images per class) (ktlib.analysis.breadth.cell_cube)."""
    if c.keyed_by != "source cell":
        raise ValueError("a cube keyed by (source classes, images per class)")
    return sorted(c.arrays)


def diagonal(c: Cube, cell: tuple[int, int]) -> int:
    """Which equal-total diagonal a cell lies on: how many doublings of the smallest cell's total images its own
    total is (to rounding: 39 x 51 = 1,989 images lies on 5 x 400 = 2,000's)."""
    first = min(m * p for m, p in cells(c))
    return int(round(np.log2(cell[0] * cell[1] / first)))


def class_steps(c: Cube) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Each doubling of the source classes (to all of them, last) at the same total images, so half the images per
    class: consecutive cells of each equal-total diagonal."""
    ranked = sorted(cells(c), key=lambda cell: (diagonal(c, cell), cell[0]))
    return [(a, b) for a, b in zip(ranked, ranked[1:]) if diagonal(c, a) == diagonal(c, b)]


def image_steps(c: Cube) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Each doubling of the images per class (to all of them, last) at the same classes: consecutive cells of a
    row."""
    ranked = cells(c)
    return [(a, b) for a, b in zip(ranked, ranked[1:]) if a[0] == b[0]]


def cell_text(cell: tuple[int, int]) -> str:
    return f"{cell[0]}x{cell[1]}"


def best_gain(c: Cube, source, k: int) -> Callable[[Cube], np.ndarray]:
    """Per order: the gain over n=0 at k of the level n >= 1 whose mean validation accuracy is best in that order
    (so that no noise of the test images picks it, which would flatter the gain)."""
    chosen = chosen_on_validation(c, source, k)

    def gain(cube: Cube) -> np.ndarray:
        rows = np.arange(cube.shape[0])
        picked = _level_grid(cube, "test_accuracy", k, source)[
            rows, :, [cube.levels.index(chosen[int(o)]) for o in cube.origin]]
        return (picked - cube.at("test_accuracy", 0, k, source)).mean(1)
    return gain


def step_gain(c: Cube, a, b, k: int) -> Callable[[Cube], np.ndarray]:
    """Per order: the best gain at k of source b minus that of source a."""
    gain_a, gain_b = best_gain(c, a, k), best_gain(c, b, k)
    return lambda cube: gain_b(cube) - gain_a(cube)


def effects(c: Cube, k: int) -> dict[str, Callable[[Cube], np.ndarray]]:
    """Per order, one summary of the grid beside its steps: the least-squares plane of the best gain at k on log2 of
    the classes and log2 of the total images, over every cell: its class effect (a doubling of the classes at the
    same total images) and its image effect (a doubling of the images at the same classes). A plane has no
    curvature: the steps say where it misdescribes."""
    grid = cells(c)
    x = np.array([[1.0, np.log2(m), np.log2(m * p)] for m, p in grid])
    weights = np.linalg.pinv(x)  # (3, cells): the coefficients are these weights on the cells' gains
    gains = [best_gain(c, cell, k) for cell in grid]
    coefficient = lambda row: lambda cube: sum(w * g(cube) for w, g in zip(weights[row], gains))  # noqa: E731
    return {"class effect": coefficient(1), "image effect": coefficient(2)}


def _steps(c: Cube, pairs, k: int, what: str) -> list[Contrast]:
    return [Contrast(f"{what} {cell_text(a)} to {cell_text(b)} at k={k}", step_gain(c, a, b, k)) for a, b in pairs]


def _effect(c: Cube, k: int, name: str) -> Contrast:
    return Contrast(f"{name} per doubling at k={k} (the plane over every cell)", effects(c, k)[name], decides=False)


def contrasts_breadth_grows(c: Cube) -> list[Contrast]:
    """More classes at the same total images and training steps, with one example per class: every doubling of the
    classes along every equal-total diagonal adds to the best gain (margin 0: 'greater')."""
    k = c.sizes[0]
    return [*_steps(c, class_steps(c), k, "classes"), _effect(c, k, "class effect")]


def contrasts_breadth_persists(c: Cube) -> list[Contrast]:
    """The same at the largest k: the class effect persists to larger training sets."""
    k = c.sizes[-1]
    return [*_steps(c, class_steps(c), k, "classes"), _effect(c, k, "class effect")]


def contrasts_breadth_images(c: Cube) -> list[Contrast]:
    """Not the paper's claim, the confound it is held apart from: more images of the same classes, at the same
    training steps, add to the best gain, at the smallest and the largest k."""
    return [contrast for k in (c.sizes[0], c.sizes[-1])
            for contrast in (*_steps(c, image_steps(c), k, "images"), _effect(c, k, "image effect"))]


def contrasts_breadth_reaches(c: Cube) -> list[Contrast]:
    """Bartlett & Baxter's prediction, which the paper quotes: with enough source classes, transfer reaches the
    accuracy of a net trained whole on a large set. At the largest k, the largest source's best transfer net is not
    clearly worse than n=0: its gain lies above minus the clear-gain margin."""
    if c.keyed_by != "largest source":
        raise ValueError("the largest source's runs at the largest k (ktlib.analysis.breadth.large_cube)")
    k, source = c.sizes[-1], next(iter(c.arrays))
    return [Contrast(f"best transfer - n=0 at k={k}", best_gain(c, source, k), -CLEAR_GAIN)]


# ---------------------------------------------------------------- the partial study, as contrasts
# (set in issue 38 before any run of the partial study: ktlib.record.studies.PARTIAL). They read a cube keyed by
# chooser (a score, a reversed score, or a random draw) whose levels are the kept maps m of one level: m=0 is the net
# with the level below retained whole (n-1), and m = every map the net with the level retained whole (n), the same
# runs under every chooser (ktlib.analysis.partial.partial_cube).

def _by_chooser(c: Cube) -> None:
    if c.keyed_by != "chooser":
        raise ValueError("a cube keyed by chooser over the kept maps (ktlib.analysis.partial.partial_cube)")


def partly_kept(c: Cube) -> list[int]:
    """The m a partial recipe keeps: more than none and fewer than all."""
    _by_chooser(c)
    return c.levels[1:-1]


def random_draws(c: Cube) -> list[str]:
    return [r for r in c.arrays if r.startswith("random")]


def chosen_partial(c: Cube, k: int) -> dict[int, tuple[str, int]]:
    """Per split (by its row's origin): the score (not reversed, not random) and partly kept m whose mean validation
    accuracy at k over the split's trials is best. The test images never choose."""
    measured_value(c, "validation_accuracy", VALIDATION)
    options = [(score, m) for score in SCORES for m in partly_kept(c)]
    means = np.stack([c.at("validation_accuracy", m, k, score).mean(1) for score, m in options], 1)  # (S, options)
    return {int(o): options[int(i)] for o, i in zip(c.origin, means.argmax(1))}


def best_partial_minus(c: Cube, k: int, m_other: int) -> Callable[[Cube], np.ndarray]:
    """Per split: the test accuracy at k of its best partial net (`chosen_partial`) minus that of m = m_other."""
    chosen = chosen_partial(c, k)

    def gap(cube: Cube) -> np.ndarray:
        picked = np.stack([cube.at("test_accuracy", chosen[int(o)][1], k, chosen[int(o)][0])[row]
                           for row, o in enumerate(cube.origin)])
        return (picked - cube.at("test_accuracy", m_other, k, SCORES[0])).mean(1)
    return gap


def contrasts_partial_breaks(c: Cube) -> list[Contrast]:
    """The Discussion's remedy for C5's saturation: at the largest k the best partly transferred level clearly beats
    both the level not transferred (m=0, n-1) and the level transferred whole (every map, n); at the smallest k it
    stays within the clear-gain margin of the whole level, on either side."""
    small, large = _two_sizes(c)
    none, every = c.levels[0], c.levels[-1]
    return [Contrast(f"best partial - m={none} at k={large}", best_partial_minus(c, large, none), CLEAR_GAIN),
            Contrast(f"best partial - m={every} at k={large}", best_partial_minus(c, large, every), CLEAR_GAIN),
            Contrast(f"best partial - m={every} at k={small}, not below", best_partial_minus(c, small, every),
                     -CLEAR_GAIN),
            Contrast(f"best partial - m={every} at k={small}, not above", best_partial_minus(c, small, every),
                     CLEAR_GAIN, above=False)]


def score_minus_random(score: str, m: int, k: int) -> Callable[[Cube], np.ndarray]:
    """Per split: the score's test accuracy at (m, k) minus the mean over the random draws of the same m."""
    def gap(cube: Cube) -> np.ndarray:
        chance = np.mean([cube.at("test_accuracy", m, k, r) for r in random_draws(cube)], 0)
        return (cube.at("test_accuracy", m, k, score) - chance).mean(1)
    return gap


def score_minus_reversal(score: str, m: int, k: int) -> Callable[[Cube], np.ndarray]:
    """Per split: the score's test accuracy at (m, k) minus its reversed ranking's (shown, deciding nothing)."""
    return lambda cube: (cube.at("test_accuracy", m, k, score)
                         - cube.at("test_accuracy", m, k, f"{score}-reversed")).mean(1)


def chooses_better_than_chance(score: str) -> Callable[[Cube], list[Contrast]]:
    """The paper's plan to choose the maps by a score: at every partly kept m, at the smallest and the largest k, the
    score's nets minus the mean of the random choices of as many maps, above zero."""
    def contrasts(c: Cube) -> list[Contrast]:
        if score not in c.arrays or not random_draws(c):
            raise ValueError(f"the {score} and random choices")
        return [Contrast(f"{score} - random at m={m}, k={k}", score_minus_random(score, m, k))
                for k in _two_sizes(c) for m in partly_kept(c)]
    return contrasts


contrasts_partial_saliency = chooses_better_than_chance("saliency")
contrasts_partial_mi = chooses_better_than_chance("mi")


# ---------------------------------------------------------------- the selection study, as contrasts
# (set in issue 39 before any run of the selection study: ktlib.record.studies.SELECTION). They read a cube keyed by
# selection whose replicates are the draws of the target classes (ktlib.analysis.selection), every selection of a
# draw on the same targets, training sets and initial weights, its n=0 runs shared; each run's row also carries its
# source net's transferability scores on its trial's training images at the largest k (ktlib.compute.selection).
SPANNING_SELECTIONS = ("spanning-pixels", "spanning-probe")
TRANSFERABILITY = ("leep", "h_score", "ncm")  # ktlib.compute.selection.transferability's columns
PREDICTED_LEVEL = 5  # the gain a score predicts: n=5 over n=0, the net whose F6 reads the features scored


def _by_selection(c: Cube) -> None:
    if c.keyed_by != "selection":
        raise ValueError("a cube keyed by selection over the draws of the targets (ktlib.analysis.selection)")


def random_selections(c: Cube) -> list[str]:
    _by_selection(c)
    return [r for r in c.arrays if r.startswith("random")]


def minus_random(c: Cube, name: str, k: int) -> Callable[[Cube], np.ndarray]:
    """Per draw: the selection's best gain over n=0 at k (its level chosen on validation images: best_gain) minus the
    mean of the random selections' best gains."""
    mine, others = best_gain(c, name, k), [best_gain(c, r, k) for r in random_selections(c)]
    return lambda cube: mine(cube) - np.mean([g(cube) for g in others], 0)


def contrasts_spanning(c: Cube) -> list[Contrast]:
    """The Discussion's guess: a set of source classes that spans the classes better gives more. At the smallest k,
    each spanning selection's best gain minus the random selections' mean, beyond the clear-gain margin; at the
    largest, shown."""
    if not random_selections(c) or not all(s in c.arrays for s in SPANNING_SELECTIONS):
        raise ValueError("the spanning and random selections")
    small, large = c.sizes[0], c.sizes[-1]
    return [*(Contrast(f"{s} - random at k={small}", minus_random(c, s, small), CLEAR_GAIN)
              for s in SPANNING_SELECTIONS),
            *(Contrast(f"{s} - random at k={large}", minus_random(c, s, large), CLEAR_GAIN, decides=False)
              for s in SPANNING_SELECTIONS if large != small)]


def contrasts_near_far(c: Cube) -> list[Contrast]:
    """Source classes like the targets give more than classes unlike them: near minus far, and near without the
    targets' case twins minus far, at the smallest and the largest k, each beyond the clear-gain margin (so that the
    twins alone cannot make it hold)."""
    _by_selection(c)
    if not all(s in c.arrays for s in ("near", "near-untwinned", "far")):
        raise ValueError("the near, near-untwinned and far selections")
    return [Contrast(f"{near} - far at k={k}", step_gain(c, "far", near, k), CLEAR_GAIN)
            for near in ("near", "near-untwinned") for k in dict.fromkeys(_two_sizes(c))]


def kendall_tau(x, y) -> np.ndarray:
    """Kendall's tau-b of each row of x with the same row of y (the last axis paired): the concordant minus the
    discordant pairs over the geometric mean of the pairs untied in each, as scipy.stats.kendalltau computes it, for
    many rows at once; NaN for a row that ties everywhere."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    sx = np.sign(x[..., :, None] - x[..., None, :])
    sy = np.sign(y[..., :, None] - y[..., None, :])
    with np.errstate(invalid="ignore", divide="ignore"):
        return (sx * sy).sum((-1, -2)) / np.sqrt((sx ** 2).sum((-1, -2)) * (sy ** 2).sum((-1, -2)))


def score_tau(score: str, k: int) -> Callable[[Cube], np.ndarray]:
    """Per draw: Kendall's tau (tau-b) over the draw's selections between the source net's score (its mean over the
    trials) and its gain at n=PREDICTED_LEVEL over n=0 at k (the mean over the trials)."""
    def tau(cube: Cube) -> np.ndarray:
        names = list(cube.arrays)
        largest = cube.sizes[-1]
        x = np.stack([cube.at(score, PREDICTED_LEVEL, largest, s).mean(1) for s in names], 1)  # (S, selections)
        y = np.stack([(cube.at("test_accuracy", PREDICTED_LEVEL, k, s) - cube.at("test_accuracy", 0, k, s)).mean(1)
                      for s in names], 1)
        return kendall_tau(x, y)
    return tau


def contrasts_predicts(c: Cube) -> list[Contrast]:
    """A score of the source net on the target's training images, computed before any target net trains, ranks the
    selections as their gains do: Kendall's tau over each draw's selections, for each score at the smallest and the
    largest k, above zero."""
    _by_selection(c)
    for score in TRANSFERABILITY:
        measured_value(c, score, f"the source nets' {score} scores")
    return [Contrast(f"tau({score}, gain) at k={k}", score_tau(score, k), fmt="+.2f")
            for score in TRANSFERABILITY for k in dict.fromkeys(_two_sizes(c))]


def summary(verdicts: pd.Series) -> str:
    """'3 hold, 2 hold in part, 1 fails': how the verdicts fall."""
    words = {HOLDS: ("holds", "hold"), PARTLY_SHORT: ("holds in part and fails in part", "hold in part and fail in part"),
             PARTLY_ACROSS: ("holds in part and is undecided in part", "hold in part and are undecided in part"),
             FAILS: ("fails", "fail"),
             UNDECIDED: ("is undecided", "are undecided"), NOT_MEASURED: ("is not measured", "are not measured")}
    counts = verdicts.value_counts()
    return ", ".join(f"{counts[v]} {words[v][int(counts[v] != 1)]}" for v in words if v in counts)
