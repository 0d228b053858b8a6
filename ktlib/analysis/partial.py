"""The partial study's analysis (notebooks/09_partial): its runs as a cube over the kept maps m, each chooser's
accuracy against m, the scores against chance, where the best m lies, how stable the maps' rankings are, and the
verdicts of its committed claims (ktlib.analysis.claims.PARTIAL_CLAIMS)."""
from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd
import torch
from scipy import stats

from ktlib.analysis import claims, plots, verdicts
from ktlib.analysis.contrasts import (
    CLAIM_VALUES,
    DEAD,
    VALIDATION,
    best_partial_minus,
    chosen_partial,
    measured_value,
    partly_kept,
    random_draws,
    score_minus_random,
    score_minus_reversal,
)
from ktlib.analysis.glue import glue_key
from ktlib.analysis.intervals import CROSSED, Cube, crossed_interval, t_interval
from ktlib.compute import data, maps
from ktlib.compute.experiment import Experiment
from ktlib.compute.maps import RIDGE
from ktlib.compute.train import CAP
from ktlib.recipes import BASELINE, PARTIAL_LEVELS, PARTIAL_MAPS, SCORES, recipe
from ktlib.record import layout, tables
from ktlib.record.files import SCORES_FILE, read_scores, saved_source
from ktlib.record.plans import Plan
from ktlib.record.studies import CHOOSERS, KEPT, PARTIAL_PART, RANDOM_DRAWS

LEVEL_NAMES = {n: level for level, n in PARTIAL_LEVELS.items()}

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


# ---------------------------------------------------------------- the record, read once

def family(chooser: str) -> str:
    """A chooser's kind: a score, a reversed score, or random."""
    return "random" if chooser.startswith("random") else "reversed" if chooser.endswith("-reversed") else "score"


@dataclass
class Read:
    """The partial study's record, read once: its runs, its map scores, and each level's cube (with its runs'
    accuracy per class, for intervals that draw the classes again)."""
    plan: Plan
    rows: pd.DataFrame
    scores: pd.DataFrame

    @classmethod
    def of(cls, plan: Plan) -> "Read":
        return cls(plan, plan.runs(), plan.scores())

    @cached_property
    def cubes(self) -> dict[str, Cube]:
        return {level: partial_cube(self.rows, level, self.plan.predictions(f"{PARTIAL_PART}{level}"))
                for level in KEPT}

    @property
    def c5(self) -> Cube:
        return self.cubes["C5"]


def design(plan: Plan) -> dict:
    """The study's shape, for the page: its splits, trials, levels, kept maps, sizes and choosers."""
    parts = dict(plan.configs())
    one = lambda level: parts[f"{PARTIAL_PART}{level}"]  # noqa: E731
    return {"partial_splits": plan.counts["splits"], "partial_trials": plan.cfg.trials,
            "random_draws": RANDOM_DRAWS, "choosers": len(CHOOSERS), "bundle_runs": len(CHOOSERS) * plan.cfg.trials,
            **{f"kept_{level}": ", ".join(map(str, KEPT[level])) for level in KEPT},
            **{f"sizes_{level}": ", ".join(map(str, one(level).sizes)) for level in KEPT},
            **{f"maps_{level}": PARTIAL_MAPS[level] for level in KEPT}, "ridge": RIDGE}


def run_section(r: Read, wall_seconds: float) -> tuple[dict, pd.DataFrame]:
    """How many runs, how long they took, where they came from; the runs per part, n and kind of chooser."""
    kinds = [family(recipe(x).chooser) if x != BASELINE else f"whole level (n={n})"
             for x, n in zip(r.rows.recipe, r.rows.n)]
    values = {"partial_runs": len(r.rows), "partial_wall_minutes": wall_seconds / 60,
              "partial_training_hours": tables.training_hours(r.rows, r.plan.cfg.engine),
              "partial_provenance": tables.where_computed(r.rows)}
    return values, r.rows.assign(kind=kinds).groupby(["part", "kind"]).size().unstack("kind", fill_value=0)


def score_agreement(mine: pd.DataFrame, other: pd.DataFrame) -> dict:
    """Two scores tables (read_scores) of the same maps: whether every score ranks each run's maps alike (best first,
    equal scores in map order), whether the values are equal, and their largest difference relative to `other`'s."""
    key, runs = ["n", "k", "trial", "map"], ["n", "k", "trial"]
    mine, other = (t.set_index(key).sort_index() for t in (mine, other))
    if not mine.index.equals(other.index):
        return {"same ranking": False, "same as the record": False, "largest relative difference": np.nan}
    ranks = [(m.rank(method="first", ascending=False) == o.rank(method="first", ascending=False)).all().all()
             for (_, m), (_, o) in zip(mine.groupby(level=runs), other.groupby(level=runs))]
    scale = other.abs().where(other != 0, 1.0)
    return {"same ranking": bool(all(ranks)), "same as the record": bool((mine == other).all().all()),
            "largest relative difference": float(((mine - other).abs() / scale).max().max())}


def scores_against_record(plan: Plan) -> tuple[pd.DataFrame, str]:
    """Per sweep: whether each of its maps' scores ranks every run's maps as the committed record's does (best first,
    equal scores in map order, where the choosers take them in the trial's random order), whether the scores are the
    record's (as their files keep them, to six significant digits), and their largest relative difference. PyTorch
    computes the scores, and its sums may round otherwise on another CPU (book, "Reproducibility"): the choosers read
    the ranking, not the values; the runs themselves are compared by Plan.against_record."""
    sums = data.opened(plan.cfg.data_dir)[1]
    record = layout.study_root(layout.record_path(plan.cfg.profile, checksums=sums).parent)
    out = {}
    for _, _, where in plan.sweeps(needs=SCORES_FILE):
        name, theirs = str(where.relative_to(plan.root)), record / where.relative_to(plan.root)
        if not (theirs / SCORES_FILE).exists():
            out[name] = {"same ranking": "no record", "same as the record": "no record",
                         "largest relative difference": np.nan}
            continue
        out[name] = score_agreement(read_scores(where)[1], read_scores(theirs)[1])
    table = pd.DataFrame(out).T
    ranked = bool((table["same ranking"] == True).all())  # noqa: E712 ("no record" is not True)
    return table, f"every sweep's map scores rank the maps as the record's do: {ranked}"


# ---------------------------------------------------------------- the random choices are an instrument

def instruments_section(r: Read) -> tuple[dict, pd.DataFrame]:
    """Per part, k and kind of chooser: the runs, those that stopped dead (training accuracy at most DEAD times
    chance: they never began to learn) and those stopped by the epoch cap, with the lowest training accuracy."""
    chance = 1 / r.plan.cfg.n_classes
    kinds = [family(recipe(x).chooser) if x != BASELINE else "whole level" for x in r.rows.recipe]
    rows = r.rows.assign(kind=kinds, dead=r.rows.train_accuracy <= DEAD * chance, cap=r.rows.stopped_by == CAP)
    table = rows.groupby(["part", "k", "kind"]).agg(runs=("dead", "size"), dead=("dead", "sum"), caps=("cap", "sum"),
                                                    lowest_train_accuracy=("train_accuracy", "min"))
    random = rows[rows.kind == "random"]
    return ({"dead": DEAD, "partial_dead": int(rows.dead.sum()), "partial_caps": int(rows.cap.sum()),
             "random_runs": len(random), "random_dead": int(random.dead.sum()), "random_caps": int(random.cap.sum()),
             "random_train_min": float(random.train_accuracy.min())}, table)


def random_spread(r: Read) -> tuple[dict, pd.DataFrame]:
    """Is the random draw's signal alive? Per level, k and m, the spread of the ten draws' mean test accuracies (each
    over splits and trials): the band a score must leave."""
    out = []
    for level, c in r.cubes.items():
        draws = random_draws(c)
        for m in partly_kept(c):
            for k in c.sizes:
                means = [c.at("test_accuracy", m, k, d).mean() for d in draws]
                out.append({"level": level, "m": m, "k": k, "random mean": np.mean(means),
                            "lowest draw": np.min(means), "highest draw": np.max(means)})
    table = pd.DataFrame(out).set_index(["level", "m", "k"])
    width = table["highest draw"] - table["lowest draw"]
    return {"random_band_max": float(width.max()), "random_band_min": float(width.min())}, table


# ---------------------------------------------------------------- accuracy against m

def accuracy_table(c: Cube) -> pd.DataFrame:
    """Mean test accuracy over splits and trials, per k and m: each score and its reversal, and the random draws'
    mean."""
    out = {}
    for chooser in [*SCORES, *(f"{s}-reversed" for s in SCORES)]:
        out[chooser] = pd.DataFrame({k: [c.at("test_accuracy", m, k, chooser).mean() for m in c.levels]
                                     for k in c.sizes}, index=c.levels).stack()
    out["random (mean of draws)"] = pd.DataFrame(
        {k: [np.mean([c.at("test_accuracy", m, k, d).mean() for d in random_draws(c)]) for m in c.levels]
         for k in c.sizes}, index=c.levels).stack()
    table = pd.DataFrame(out)
    table.index.names = ["m", "k"]
    return table.swaplevel().sort_index()


def accuracy_section(r: Read) -> tuple[dict, dict[str, pd.DataFrame]]:
    """The accuracy against m of every level, and the values the page cites: the whole levels at the ends of C5."""
    values = {}
    for level, c in r.cubes.items():
        small, large = c.sizes[0], c.sizes[-1]
        at = lambda m, k: float(c.at("test_accuracy", m, k, SCORES[0]).mean())  # noqa: E731 (the ends: every chooser's)
        name = level.lower()
        values |= {f"{name}_none_small": at(c.levels[0], small), f"{name}_every_small": at(c.levels[-1], small),
                   f"{name}_none_large": at(c.levels[0], large), f"{name}_every_large": at(c.levels[-1], large)}
    c3 = r.cubes["C3"]
    over = [float(c3.at("test_accuracy", m, k, x).mean()) - float(c3.at("test_accuracy", c3.levels[-1], k, x).mean())
            for m in partly_kept(c3) for k in c3.sizes for x in c3.arrays]  # every partial cell against the whole
    top = partly_kept(r.c5)[-1]
    values |= {"small_k": r.c5.sizes[0], "large_k": r.c5.sizes[-1], "c3_large_k": c3.sizes[-1],
               "small_images": r.c5.sizes[0] * r.plan.cfg.n_classes, "c3_partial_over_whole_max": max(over),
               "top_partial_m": top, "c5_random_top_small": float(np.mean(
                   [r.c5.at("test_accuracy", top, r.c5.sizes[0], d).mean() for d in random_draws(r.c5)]))}
    return values, {level: accuracy_table(cube) for level, cube in r.cubes.items()}


# ---------------------------------------------------------------- the scores against chance

def _crossed(c: Cube, gap, deep: list[Cube]) -> tuple[float, float, float]:
    """A contrast's mean over splits and its interval that also draws the classes again (intervals.CROSSED)."""
    estimate = float(gap(c).mean())
    low, high = crossed_interval(estimate, np.array([np.nanmean(gap(x)) for x in deep]), c.shape[0])
    return estimate, float(low), float(high)


def tied(r: Read, level: str, score: str, k: int) -> bool:
    """Whether a score ties every map of a level in some trial at k (mutual information with one image per class):
    its ranking there is the trial's random tie order, and its reversal keeps the same maps (ktlib.compute.maps
    breaks ties the same way both ways), so that reversal is no control."""
    s = r.scores[(r.scores.n == PARTIAL_LEVELS[level]) & (r.scores.k == k)]
    return bool((s.groupby(["split", "trial"])[score].agg(np.ptp) == 0).any())


def chance_section(r: Read) -> tuple[dict, pd.DataFrame]:
    """Each score and its reversal minus the mean of the random draws, and each score minus its own reversal, at every
    level, m and k: the mean over splits with the interval that also draws the classes again (intervals.CROSSED), as
    the claims are judged; descriptive, deciding nothing. A reversal that keeps the score's own maps (`tied`) is left
    out, counted."""
    rows, values, void = [], {}, []
    for level, c in r.cubes.items():
        rng = np.random.default_rng(r.plan.seed())
        S = c.shape[0]
        deep = c.crossed(rng.integers(0, S, (r.plan.draws, S)), rng)
        for score in SCORES:
            for k in c.sizes:
                ties = tied(r, level, score, k)  # once per score and k: its reversal is void at every m
                if ties:
                    void.append(f"{level} {score}-reversed at k={k}")
                for m in partly_kept(c):
                    for chooser, gap in ((score, score_minus_random(score, m, k)),
                                         (f"{score}-reversed", score_minus_random(f"{score}-reversed", m, k)),
                                         (f"{score} minus its reversal", score_minus_reversal(score, m, k))):
                        if chooser != score and ties:
                            continue
                        estimate, low, high = _crossed(c, gap, deep)
                        rows.append({"level": level, "chooser": chooser, "m": m, "k": k, "difference": estimate,
                                     "low": low, "high": high})
                        if level == "C5" and chooser == score and m in (30, 60) and k in (c.sizes[0], c.sizes[-1]):
                            for end in [e for e, at in (("small", c.sizes[0]), ("large", c.sizes[-1])) if at == k]:
                                key = glue_key(chooser, "m", m, end)
                                values |= {key: estimate, f"{key}_low": low, f"{key}_high": high}
    table = pd.DataFrame(rows)
    table["interval"] = [("above zero" if lo > 0 else "below zero" if hi < 0 else "across zero")
                         for lo, hi in zip(table.low, table.high)]
    scores = table[table.chooser.isin(SCORES)]
    named = scores[(scores.level == "C5") & scores.chooser.isin(["saliency", "mi"])
                   & scores.k.isin([r.c5.sizes[0], r.c5.sizes[-1]])]  # the cells the committed claims read
    half = (named.high - named.low) / 2
    reversed_ = table[table.chooser.str.endswith("-reversed")]
    against = table[table.chooser.str.endswith("its reversal")]
    c3_oracle = against[(against.level == "C3") & (against.chooser == "ablation minus its reversal")]
    values |= {"claimed_gap_max": float(named.difference.abs().max()), "claimed_half_min": float(half.min()),
               "claimed_half_max": float(half.max()), "score_cells": len(scores),
               "score_cells_above": int((scores.interval == "above zero").sum()),
               "score_cells_below": int((scores.interval == "below zero").sum()),
               "reversed_cells": len(reversed_), "reversed_cells_below": int((reversed_.interval == "below zero").sum()),
               "void_reversals": "; ".join(void) or "none",
               "against_cells": len(against), "against_cells_above": int((against.interval == "above zero").sum()),
               "c3_oracle_cells": len(c3_oracle), "c3_oracle_positive": int((c3_oracle.difference > 0).sum()),
               "c3_oracle_min": float(c3_oracle.difference.min()), "c3_oracle_max": float(c3_oracle.difference.max()),
               "c3_oracle_above": int((c3_oracle.interval == "above zero").sum())}
    return values, table.set_index(["level", "chooser", "m", "k"])


# ---------------------------------------------------------------- the rankings: stable? does saliency estimate the oracle?

def _ranks_agree(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation; NaN where a score ties every map (it has no ranking)."""
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(stats.spearmanr(a, b).statistic)


def stability_section(r: Read) -> tuple[dict, pd.DataFrame]:
    """How stable each score's ranking of the maps is: per level, k and split, the mean Spearman correlation between
    the rankings of every pair of trials (different training images); then the mean over splits with Student's t over
    the splits, on Fisher's z of the correlations (back-transformed, so the interval stays within -1 and 1). Beside it, how well saliency ranks the maps as the ablation oracle does (Spearman between them, per
    trial, averaged the same way). A score that ties everywhere (mi at k=1) has no ranking: NaN."""
    s = r.scores.assign(level=[LEVEL_NAMES[n] for n in r.scores.n])
    rows = []
    for (level, k, split), one in s.groupby(["level", "k", "split"]):
        by_trial = {t: g.sort_values("map") for t, g in one.groupby("trial")}
        pairs = list(itertools.combinations(sorted(by_trial), 2))
        for score in SCORES:
            values = [_ranks_agree(by_trial[a][score].to_numpy(), by_trial[b][score].to_numpy()) for a, b in pairs]
            rows.append({"level": level, "k": k, "split": split, "score": score,
                         "between trials": np.mean(values) if values else np.nan})  # one trial: no pair
        rows.append({"level": level, "k": k, "split": split, "score": "saliency vs ablation",
                     "between trials": np.mean([_ranks_agree(g.saliency.to_numpy(), g.ablation.to_numpy())
                                                for g in by_trial.values()])})
    per_split = pd.DataFrame(rows)
    out = []
    for (level, k, score), g in per_split.groupby(["level", "k", "score"], sort=False):
        z = np.arctanh(np.clip(g["between trials"].to_numpy(), -0.999999, 0.999999))  # Fisher's z: t is sound there
        low, high = t_interval(z) if len(z) > 1 and not np.isnan(z).any() else (np.nan, np.nan)
        out.append({"level": level, "k": k, "score": score, "rank correlation": float(np.tanh(z.mean())),
                    "low": float(np.tanh(low)), "high": float(np.tanh(high))})
    table = pd.DataFrame(out).set_index(["level", "score", "k"]).sort_index()
    c5 = table.loc["C5"]
    values = {"sal_abl_c5_min": float(c5.loc["saliency vs ablation", "rank correlation"].min()),
              "sal_abl_c3_max": float(table.loc[("C3", "saliency vs ablation"), "rank correlation"].max()),
              "stability_c5_small_saliency": float(c5.loc[("saliency", r.c5.sizes[0]), "rank correlation"]),
              "stability_c5_large_saliency": float(c5.loc[("saliency", r.c5.sizes[-1]), "rank correlation"])}
    return values, table


def concentration_section(r: Read) -> tuple[dict, pd.DataFrame]:
    """How unevenly the maps matter, by the deletion loss through the fitted head (the ablation score): per level and
    k, the share of the summed ablation scores (negative ones counted as zero) that the top quarter of the maps holds,
    the quarter chosen on the same trial's scores (which flatters it: the scores' noise picks it) and chosen on another
    trial's (held out: every ordered pair of a split's trials), averaged over splits and trials. An even spread gives
    a quarter."""
    s = r.scores.assign(level=[LEVEL_NAMES[n] for n in r.scores.n], gain=r.scores.ablation.clip(lower=0))
    shares = []
    for (level, k, split), one in s.groupby(["level", "k", "split"]):
        by_trial = {t: g.sort_values("map").gain.to_numpy() for t, g in one.groupby("trial")}
        for a, b in itertools.product(by_trial, repeat=2):
            top = np.argsort(-by_trial[a], kind="stable")[:len(by_trial[a]) // 4]
            shares.append({"level": level, "k": k, "chosen on": "the same trial" if a == b else "another trial",
                           "top quarter's share": by_trial[b][top].sum() / by_trial[b].sum()})
    table = pd.DataFrame(shares).groupby(["level", "k", "chosen on"])["top quarter's share"].mean().unstack().reindex(
        columns=["another trial", "the same trial"])  # one trial (a smoke run) has no other: NaN
    held = table["another trial"]
    return {"held_c5_small": float(held.loc[("C5", r.c5.sizes[0])]), "held_c5_large": float(held.loc[("C5", r.c5.sizes[-1])]),
            "held_c3_min": float(held.loc["C3"].min()), "held_c3_max": float(held.loc["C3"].max()),
            "same_c5_min": float(table.loc["C5", "the same trial"].min()),
            "same_c5_max": float(table.loc["C5", "the same trial"].max())}, table


# ---------------------------------------------------------------- where the best m lies

def best_m_shares(c: Cube, chooser: str, k: int, draws: int, seed: int) -> pd.Series:
    """The m (none to every map) whose chooser's nets have the best mean validation accuracy at k, over bootstrap
    draws of splits then trials: the share of draws in which each m is chosen (an argmax has no interval)."""
    measured_value(c, "validation_accuracy", VALIDATION)
    rng = np.random.default_rng(seed)
    S, T = c.shape
    best = []
    for _ in range(draws):
        x = c.resampled(rng.integers(0, S, S), rng.integers(0, T, (S, T)))
        best.append(c.levels[int(np.argmax([x.at("validation_accuracy", m, k, chooser).mean() for m in c.levels]))])
    return pd.Series(best).value_counts(normalize=True).reindex(c.levels, fill_value=0.0)


def best_m_section(r: Read) -> tuple[dict, dict[str, pd.DataFrame]]:
    """Per level: for each score and k, how often each m is best on the validation images over bootstrap draws."""
    tables_ = {}
    for level, c in r.cubes.items():
        table = pd.DataFrame({(score, k): best_m_shares(c, score, k, r.plan.draws, r.plan.seed())
                              for score in SCORES for k in c.sizes}).T
        table.index.names, table.columns.name = ["score", "k"], "m"
        tables_[level] = table
    c5, sizes = tables_["C5"], r.c5.sizes
    every_c3 = tables_["C3"][r.cubes["C3"].levels[-1]]
    return ({"c3_whole_best_min": float(every_c3.min()), "c3_whole_best_max": float(every_c3.max()),
             "best_m_saliency_small": int(c5.loc[("saliency", sizes[0])].idxmax()),
             "best_m_saliency_large": int(c5.loc[("saliency", sizes[-1])].idxmax()),
             "best_m_saliency_small_share": float(c5.loc[("saliency", sizes[0])].max()),
             "best_m_saliency_large_share": float(c5.loc[("saliency", sizes[-1])].max())}, tables_)


def best_partial_section(r: Read) -> tuple[dict, pd.DataFrame]:
    """At every k of C5: the best partial net each split's validation images choose (contrasts.chosen_partial) against
    both whole ends, m=0 (n=4) and every map (n=5), on the test images, the mean over splits with the interval that
    draws the classes again. The claim reads two k of these; this is every k."""
    c = r.c5
    rng = np.random.default_rng(r.plan.seed())
    S = c.shape[0]
    deep = c.crossed(rng.integers(0, S, (r.plan.draws, S)), rng)
    rows, values = [], {}
    ends = {"small": c.sizes[0], "middle": c.sizes[len(c.sizes) // 2], "large": c.sizes[-1]}  # keys by role, not k
    for k in c.sizes:
        for side, m_other in (("none", c.levels[0]), ("every", c.levels[-1])):
            gap = best_partial_minus(c, k, m_other)
            estimate = float(gap(c).mean())
            low, high = crossed_interval(estimate, np.array([np.nanmean(gap(x)) for x in deep]), S)
            rows.append({"k": k, "against": f"m={m_other}", "best partial minus": estimate, "low": float(low),
                         "high": float(high)})
            for end in [name for name, at in ends.items() if at == k]:
                key = f"best_minus_{side}_{end}"
                values |= {key: estimate, f"{key}_low": float(low), f"{key}_high": float(high)}
    values["middle_k"] = ends["middle"]
    return values, pd.DataFrame(rows).set_index(["k", "against"])


# ---------------------------------------------------------------- the verdicts

def verdicts_section(r: Read):
    """The committed claims on the C5 part: over the splits with intervals that draw the classes again (CROSSED), each
    split alone over its trials, and what each split's validation images chose as its best partial net."""
    which = claims.PARTIAL_CLAIMS
    over, judged = verdicts.across_splits(r.c5, which, CROSSED, r.plan.draws, r.plan.seed())
    by_split, split_verdicts = verdicts.within_splits(r.c5, which)
    values = verdicts.claim_values(over, judged)
    values |= {f"{key}_tally": verdicts.tally(column, independent=False) for key, column in split_verdicts.items()}
    chosen = {k: chosen_partial(r.c5, k) for k in (r.c5.sizes[0], r.c5.sizes[-1])}
    picks = pd.DataFrame({f"k={k}": {split: f"{score}, m={m}" for split, (score, m) in zip(r.c5.splits_of_rows(),
                                                                                          choice.values())}
                          for k, choice in chosen.items()})
    picks.index.name = "split"
    shown = pd.DataFrame({"over splits and classes": judged,
                          "splits where it holds": split_verdicts.apply(verdicts.tally, independent=False)})
    return values, verdicts.shown(over), picks, f"{shown.to_string()}\n{split_verdicts.T.to_string()}"


# ---------------------------------------------------------------- what is transferred, as images

def maps_figure(plan: Plan, level: str = "C3", k: int | None = None):
    """The figure of what is transferred: the first split's source net, its C1 and C3 maps on the first training image
    of trial 0 at k (the level's largest), ranked by each score on that trial's training images, the maps a partial
    recipe of the level's middle m keeps framed. Returns (figure, values)."""
    cfg = next(c for part, c in plan.configs() if part == f"{PARTIAL_PART}{level}")  # the first split's sweep
    k = k or max(cfg.sizes)
    exp = Experiment.load(cfg)
    net = saved_source(exp)[0]
    s, _ = exp.trial_set(k, 0)
    x, y = torch.from_numpy(s.x), torch.from_numpy(s.y)
    images = {}
    for name, n in (("C1", 1), *((lvl, PARTIAL_LEVELS[lvl]) for lvl in KEPT if PARTIAL_MAPS[lvl] <= 16)):
        scores = maps.scores(net, n, x, y, exp.codes("target"))
        with torch.no_grad():
            shown = net.features(x[:1], n)[0]
        images[name] = (shown, {score: np.argsort(-v, kind="stable") for score, v in scores.items()})
    kept = KEPT[level][len(KEPT[level]) // 2]
    return plots.ranked_maps(images, {level: kept}), {"figure_k": k, "figure_kept": kept, "figure_level": level}
