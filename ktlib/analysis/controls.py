"""What the study measures: recipes against each other, its controls as instruments, the readouts that need no
training, and forgetting, all with intervals over splits (the claims are judged by ktlib.analysis.verdicts)."""
from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd

from ktlib.analysis import contrasts, glue
from ktlib.analysis.intervals import Cube, Tables, estimate, interval_text, interval_texts
from ktlib.compute.train import CAP
from ktlib.recipes import BASELINE, RECIPES

Statistic = Callable[[dict[str, Tables]], float]


def controls(recipes) -> list[str]:
    """Of these recipes, the controls: those that copy a net other than the trained one."""
    return [r for r in recipes if RECIPES[r].copies != "trained"]


def tuned(recipes) -> list[str]:
    """Of these recipes, those that train the layers they copy."""
    return [r for r in recipes if RECIPES[r].trains]


def _cell(recipe: str, n: int, k: int, value: str = "test_accuracy") -> Statistic:
    return lambda t: float(t[recipe].means[value].loc[n, k])


def _difference(a: tuple[str, int], b: tuple[str, int], k: int) -> Statistic:
    """Mean of (recipe, n) a minus that of b, at k: paired, as both come from the same draws."""
    return lambda t: float(t[a[0]].test.loc[a[1], k] - t[b[0]].test.loc[b[1], k])


def statistics(cube: Cube) -> dict[tuple, Statistic]:
    """Everything the study puts an interval on, by name:
    ("cell", recipe, n, k): a cell mean; ("gain", recipe, n, k): a cell minus n=0 at the same k;
    ("knowledge", control, n, k): frozen minus a control at the same n; ("tuning", recipe, n, k): a recipe that
    trains its copied layers minus frozen. (The claims' contrasts are ktlib.analysis.claims's.)"""
    out: dict[tuple, Statistic] = {}
    recipes = list(cube.arrays)
    for k in cube.sizes:
        for n in cube.levels:
            for recipe in recipes:
                out[("cell", recipe, n, k)] = _cell(recipe, n, k)
                if n > 0:
                    out[("gain", recipe, n, k)] = _difference((recipe, n), (BASELINE, 0), k)
            for control in controls(recipes) if n > 0 and BASELINE in recipes else []:
                out[("knowledge", control, n, k)] = _difference((BASELINE, n), (control, n), k)
            for recipe in tuned(recipes) if n > 0 and BASELINE in recipes else []:
                out[("tuning", recipe, n, k)] = _difference((recipe, n), (BASELINE, n), k)
    return out


def _measurable(statistic: Statistic) -> Statistic:
    """A statistic that needs runs this study lacks (an n, a k, a recipe) is NaN: not measured."""
    def safe(t):
        try:
            return statistic(t)
        except (KeyError, IndexError, ValueError, ZeroDivisionError):
            return float("nan")
    return safe


def _intervals(cube: Cube, stats: dict[tuple, Statistic], method: str, draws: int, seed: int) -> pd.DataFrame:
    with np.errstate(divide="ignore", invalid="ignore"):
        return estimate(cube, {name: _measurable(s) for name, s in stats.items()}, method, draws, seed)


def interval_table(cube: Cube, method: str, draws: int, seed: int) -> pd.DataFrame:
    """Every statistic's estimate and 95% interval over splits, by `method` (ktlib.analysis.intervals.METHODS)."""
    return _intervals(cube, statistics(cube), method, draws, seed)


NAMES = {"cell": ["recipe", "n", "k"], "gain": ["recipe", "n", "k"], "knowledge": ["control", "n", "k"],
         "tuning": ["recipe", "n", "k"],
         "forgetting": ["recipe", "n", "k"],
         "readout": ["readout", "recipe", "n", "k"], "readout-knowledge": ["readout", "control", "n", "k"]}


def of_kind(table: pd.DataFrame, kind: str) -> pd.DataFrame:
    """The rows of one kind of statistic, indexed by the rest of their names."""
    rows = table[[isinstance(i, tuple) and i[0] == kind for i in table.index]]
    names = NAMES[kind]
    if len(names) == 1:
        return rows.set_axis(pd.Index([i[1] for i in rows.index], name=names[0]))
    return rows.set_axis(pd.MultiIndex.from_tuples([i[1:] for i in rows.index], names=names))


# ---------------------------------------------------------------- the controls as instruments

def dead(train_accuracy: pd.Series, classes: int) -> pd.Series:
    """A run is dead when it stopped with training accuracy at most DEAD times chance: it never began to learn."""
    return train_accuracy <= contrasts.DEAD / classes


def instruments(rows: pd.DataFrame, classes: int, by: tuple[str, ...] = ("recipe", "n", "k")) -> pd.DataFrame:
    """Per recipe, n and k (or the columns `by` names): the runs, how many stopped dead, how many the epoch-counted
    rule of the first record would have left dead (replayed on each run's history), how many hit the epoch cap, and
    the mean training accuracy. A recipe is an instrument where its runs train: no dead runs, no unexplained cap
    hits."""
    before = rows.epoch_rule_train_accuracy.where(rows.epoch_rule_train_accuracy.notna(), rows.train_accuracy)
    frame = rows.assign(dead=dead(rows.train_accuracy, classes), dead_before=dead(before, classes),
                        cap=rows.stopped_by == CAP)
    out = frame.groupby(list(by)).agg(runs=("dead", "size"), dead=("dead", "sum"),
                                      dead_before=("dead_before", "sum"), cap=("cap", "sum"),
                                      train_accuracy=("train_accuracy", "mean"))
    order = {r: i for i, r in enumerate(RECIPES)}
    return out.sort_index(key=lambda i: i.map(order) if i.name == "recipe" else i)


def most_capped(table: pd.DataFrame, recipes: list[str]) -> dict:
    """The cell (n, k) where `recipes` hit the epoch cap most often, and each one's count of caps there, as a sentence."""
    caps = table.loc[list(recipes)].cap.groupby(level=["n", "k"]).sum()
    n, k = caps.idxmax()
    there = table.xs((n, k), level=("n", "k")).loc[list(recipes)]
    return {"most_capped_n": int(n), "most_capped_k": int(k),
            "most_capped": ", ".join(f"{recipe} {int(row.cap)} of {int(row.runs)}" for recipe, row in there.iterrows())}


def dead_by_recipe(table: pd.DataFrame) -> pd.DataFrame:
    """`instruments` summed over n and k, per recipe: runs, dead now, dead under the first record's rule, caps."""
    return table.groupby("recipe", sort=False)[["runs", "dead", "dead_before", "cap"]].sum()


def spots(levels: list[int], sizes: list[int]) -> dict[str, tuple[int, int]]:
    """The cells the book quotes, by name: the top and middle retained level, at the smallest and largest k (on the
    paper's grid, n = 5 and 3 at k = 1 and 40)."""
    levels = [n for n in levels if n > 0]
    top, mid = levels[-1], levels[len(levels) // 2]
    return {"top_small": (top, min(sizes)), "top_large": (top, max(sizes)), "mid_small": (mid, min(sizes)),
            "mid_large": (mid, max(sizes))}


def instrument_values(table: pd.DataFrame, rows: pd.DataFrame, top: int, singled_out: str = "random-lecun") -> dict:
    """What the book says of the instruments (`instruments`' table, of `rows`): dead runs, now and under the first
    record's rule, in all and by recipe (`singled_out`, the LeCun-scale control, apart); cap hits at the top level and
    below it; and the runs the first record's rule would have stopped sooner than ours."""
    by_recipe = dead_by_recipe(table)
    below = table[table.index.get_level_values("n") < top].cap.groupby(level="recipe").sum()
    sooner = rows[rows.epoch_rule_epochs < rows.epochs]  # where the first record's rule differs
    return {"dead_times": contrasts.DEAD, "dead_now": int(by_recipe.dead.sum()), "dead_before": int(by_recipe.dead_before.sum()),
            "dead_lecun": int(by_recipe.loc[singled_out, "dead"]),
            "dead_others": int(by_recipe.drop(singled_out).dead.sum()), "caps": int(by_recipe.cap.sum()),
            "caps_top": int(table.xs(top, level="n").cap.sum()), "caps_lecun_below": int(below.get(singled_out, 0)),
            "caps_others_below": int(below.drop(singled_out, errors="ignore").sum()),
            **{glue.glue_key("dead", recipe): int(row.dead) for recipe, row in by_recipe.iterrows()},
            "epoch_rule_sooner": len(sooner),
            "epoch_rule_sooner_paper_frozen": int(((sooner.split == 0) & (sooner.recipe == BASELINE)).sum())}


def knowledge_values(at: pd.DataFrame, cells: dict[str, tuple[int, int]]) -> dict:
    """`knowledge_at`'s texts by glue key, and each named cell's n and k."""
    out = {}
    for spot, (n, k) in cells.items():
        out[glue.glue_key("n", spot)], out[glue.glue_key("k", spot)] = n, k
        for (_, _, control), row in at.xs((n, k), level=("n", "k"), drop_level=False).iterrows():
            out.update({glue.glue_key("knowledge", how, control, spot): text for how, text in row.items()})
    return out


def chosen_control(spreads: pd.DataFrame) -> str:
    """Of the random controls, the one that best keeps the signal: the smallest mean, over splits and levels
    1-5, of |log(its spread / the trained net's spread)| (ktlib.compute.readouts.spread), measured on the validation
    images."""
    if "images" not in spreads or (spreads.images != "validation").any():
        raise ValueError(f"spreads measured on the validation images, which choose; these are on "
                         f"{sorted(set(spreads.get('images', ['test'])))}")
    s = spreads[spreads.n > 0].pivot_table(index=["split", "n"], columns="recipe", values="spread")
    randoms = [r for r in s.columns if RECIPES[r].copies.startswith("random-")]
    distance = {r: float(np.abs(np.log(s[r] / s[BASELINE])).mean()) for r in randoms}
    return min(distance, key=distance.get)


def validated(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows, if every one has its validation accuracy; else one error: a choice is made on validation images or
    not at all (a record made before they existed has only test accuracies, which must not choose)."""
    if "validation_accuracy" not in rows or rows.validation_accuracy.isna().any():
        raise ValueError("a choice needs every run's validation_accuracy; these runs lack it (a record made before "
                         "the validation images), and nothing is chosen on test accuracy")
    return rows


def chosen_rate(rows: pd.DataFrame) -> str:
    """Of the recipes that fine-tune, the one with the highest mean validation accuracy over every n >= 1 and k."""
    rows = validated(rows[rows.n > 0])
    means = rows.groupby("recipe").validation_accuracy.mean()
    return str(means[tuned(means.index)].idxmax())


# ---------------------------------------------------------------- readouts that need no training

def readout_intervals(readouts: pd.DataFrame, method: str, draws: int, seed: int) -> pd.DataFrame:
    """Per rule (nearest mean, nearest neighbour): each features' mean readout accuracy ("readout", rule, recipe,
    n, k), and the trained features' minus each control's ("readout-knowledge", rule, control, n, k), with
    intervals as `intervals` makes them (the same method; with the same seed, the same draws)."""
    frames = []
    for rule, rows in readouts.groupby("readout", sort=False):
        cube = Cube.of(rows, values=("test_accuracy",))
        stats = {}
        for k in cube.sizes:
            for n in cube.levels:
                for recipe in cube.arrays:
                    stats[("readout", rule, recipe, n, k)] = _cell(recipe, n, k)
                for control in controls(cube.arrays) if n > 0 else []:
                    stats[("readout-knowledge", rule, control, n, k)] = _difference((BASELINE, n), (control, n), k)
        frames.append(_intervals(cube, stats, method, draws, seed))
    return pd.concat(frames)


def agreement(table: pd.DataFrame, readout_table: pd.DataFrame) -> pd.DataFrame:
    """Per control, n and k: the knowledge term from trained runs and from each readout, and whether each
    readout's agrees in sign with the runs' (an interval that holds zero agrees with either sign)."""
    runs = of_kind(table, "knowledge")
    read = of_kind(readout_table, "readout-knowledge")
    out = pd.DataFrame({"runs": runs.estimate})
    for rule in read.index.get_level_values("readout").unique():
        r = read.xs(rule, level="readout").reindex(runs.index)
        out[rule] = r.estimate
        runs_sign = np.sign(runs.estimate).where((runs.low > 0) | (runs.high < 0), 0)
        read_sign = np.sign(r.estimate).where((r.low > 0) | (r.high < 0), 0)
        out[f"{rule} agrees"] = (runs_sign == read_sign) | (runs_sign == 0) | (read_sign == 0)
    return out


def direction(row: pd.Series) -> str:
    """Where an interval lies: 'above zero', 'below zero', or 'not distinguishable from zero'."""
    return "above zero" if row.low > 0 else "below zero" if row.high < 0 else "not distinguishable from zero"


def capacity_sentence(table: pd.DataFrame, control: str, k: int) -> str:
    """What freezing a control's layers does by itself at one size, against training from scratch (n=0), in a
    sentence decided by the intervals."""
    gain = of_kind(table, "gain").xs((control, k), level=("recipe", "k"))
    where = {}
    for n, row in gain.iterrows():
        where.setdefault(direction(row), []).append(int(n))
    said = "; ".join(f"{d} at n in {levels}" for d, levels in where.items())
    verdict = ("freezing these layers never helps here" if "above zero" not in where
               else f"freezing these layers helps only at n in {where['above zero']}")
    return (f"Frozen {control} layers change accuracy at k = {k}, against a net trained from scratch: {said}. "
            f"So {verdict}.")


def baseline_sentence(table: pd.DataFrame, readout_table: pd.DataFrame, k: int) -> str:
    """The net trained from scratch (n=0) and the nearest class mean on the pixels, at one size, side by side. It
    compares nothing: whether two intervals overlap does not say whether the two differ; the paired contrast does
    (the claim beats_pixels)."""
    scratch = of_kind(table, "cell").loc[(BASELINE, 0, k)]
    pixels = of_kind(readout_table, "readout").loc[("nearest-mean", BASELINE, 0, k)]
    return (f"At k = {k}, the nearest class mean on the raw pixels classifies {interval_text(pixels, '.3f')} of the "
            f"test images, and the net trained from scratch {interval_text(scratch, '.3f')}.")


def knowledge_at(table: pd.DataFrame, readout_table: pd.DataFrame, cells: list[tuple[int, int]],
                 fmt: str = "+.3f") -> pd.DataFrame:
    """At each (n, k) of `cells` and for each control: frozen minus the control from trained runs, and the trained
    features' readout minus the control's, by each rule, as 'estimate [interval]'."""
    runs = interval_texts(of_kind(table, "knowledge"), fmt)
    read = interval_texts(of_kind(readout_table, "readout-knowledge"), fmt).unstack("readout")
    out = read.assign(runs=runs).reset_index()
    out = out[[(n, k) in cells for n, k in zip(out.n, out.k)]]
    return out.set_index(["n", "k", "control"]).sort_index()[["runs", *read.columns]]


# ---------------------------------------------------------------- forgetting

def forgetting_caps(rows: pd.DataFrame, cells: dict[str, tuple[int, int]], spots=("top_small", "top_large")) -> str:
    """How many runs of each recipe that trains its copied layers stopped at the epoch cap at the named cells: their
    forgetting is an unfinished run's. As 'recipe c of r at k = ..., c of r at k = ...; ...', in a line."""
    parts = []
    for recipe in tuned(rows.recipe.unique()):
        mine = rows[rows.recipe == recipe]
        at = [mine[(mine.n == cells[s][0]) & (mine.k == cells[s][1])] for s in spots]
        parts.append(f"{recipe} " + ", ".join(f"{int((a.stopped_by == 'cap').sum())} of {len(a)} at k = "
                                              f"{cells[s][1]}" for a, s in zip(at, spots)))
    return "; ".join(parts)


def forgetting_values(lost: pd.DataFrame, cells: dict[str, tuple[int, int]], spots=("top_small", "top_large")) -> dict:
    """The forgetting of each recipe at the named cells, as 'estimate [interval]', by glue key."""
    text = interval_texts(lost)
    return {glue.glue_key("forgetting", recipe, spot): text.loc[(recipe, *cells[spot])]
            for recipe in lost.index.get_level_values("recipe").unique() for spot in spots}


def forgetting_intervals(rows: pd.DataFrame, held_out: pd.Series, method: str, draws: int,
                         seed: int) -> pd.DataFrame:
    """Per recipe that trains its copied layers, n and k: how much of the source task it forgets, the source net's
    held-out accuracy minus that of the source net with the run's copied layers ("forgetting", recipe, n, k).
    held_out: each split's source net's held-out accuracy. The frozen recipe forgets nothing by construction, and
    n=0 copies nothing: both are 0."""
    recipes = tuned(rows.recipe.unique())
    lost = held_out.reindex(rows.split).to_numpy() - rows.source_task_accuracy.to_numpy()
    frame = rows.assign(forgetting=np.where(rows.n == 0, 0.0, lost))
    cube = Cube.of(frame, recipes, values=("forgetting",))
    stats = {("forgetting", recipe, n, k): _cell(recipe, n, k, "forgetting")
             for recipe in recipes for n in cube.levels if n > 0 for k in cube.sizes}
    return _intervals(cube, stats, method, draws, seed)
