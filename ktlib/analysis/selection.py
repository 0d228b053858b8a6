"""The selection study's analysis (notebooks/10_selection): the selections made again from the data and checked
against the record, what else differs between them, each selection's transfer against n and against the random
selections, the transferability scores against the measured gains (within each draw of the targets, and over every
source net of the record), and the verdicts of its committed claims (ktlib.analysis.claims.SELECTION_CLAIMS)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ktlib.analysis import claims, plots, verdicts
from ktlib.analysis.contrasts import (
    DEAD,
    PREDICTED_LEVEL,
    TRANSFERABILITY,
    best_gain,
    chosen_on_validation,
    kendall_tau,
    minus_random,
    random_selections,
)
from ktlib.analysis.intervals import CROSSED, VALUES, Cube, crossed_interval, percentile_interval
from ktlib.compute import data, selection
from ktlib.compute.experiment import Experiment
from ktlib.compute.train import CAP
from ktlib.config import Config
from ktlib.recipes import BASELINE
from ktlib.record import files, layout, tables
from ktlib.record.plans import Plan
from ktlib.record.studies import (
    BASELINE_PART,
    EQUAL,
    ORDERED,
    PROBE_SHA256,
    PROBE_SWEEP,
    RANDOM_SELECTIONS,
    SELECTIONS,
    plan,
    selections,
)

SCORE_NAMES = {"leep": "LEEP", "h_score": "H-score", "ncm": "NCM, leave one out"}
CHOSEN = [s for s in SELECTIONS if not s.startswith("random")]  # the selections made by a rule


# ---------------------------------------------------------------- the record, read once

def source_scores(cfg: Config, k: int | None = None) -> pd.DataFrame:
    """One sweep's source net scored on each trial's training images at k (the sweep's largest): one row per trial
    (ktlib.compute.selection.transferability)."""
    exp = Experiment.load(cfg)
    net = files.saved_source(exp)[0]
    k = k or max(cfg.sizes)
    out = []
    for trial in range(cfg.trials):
        s, _ = exp.trial_set(k, trial)
        out.append({"trial": trial, **selection.transferability(net, exp.codes("source"), torch.from_numpy(s.x),
                                                                torch.from_numpy(s.y))})
    return pd.DataFrame(out)


def with_zero(table: pd.DataFrame, first: str = SELECTIONS[0]) -> pd.DataFrame:
    """Rows of the study's runs (or prediction keys, with `part` and `draw`), each draw's n=0 runs, which its first
    selection ran, given to every selection of the draw, and `recipe` the selection's name above n=0 (n=0 stays under
    the baseline recipe, as Cube reads it)."""
    zero = table[(table.n == 0) & (table.part == first)]
    copies = [zero[zero.draw == d].assign(part=name) for name in SELECTIONS if name != first
              for d in sorted(table.draw.unique())]
    out = pd.concat([table, *copies], ignore_index=True)
    return out.assign(recipe=np.where(out.n == 0, BASELINE, out.part))


@dataclass
class Read:
    """The selection study's record, read once: its runs, each draw's selections made again, each source net's scores,
    and the cube keyed by selection over the draws (with each run's accuracy per class, for intervals that draw the
    classes again)."""
    plan: Plan
    rows: pd.DataFrame

    @classmethod
    def of(cls, p: Plan) -> "Read":
        return cls(p, p.runs())

    @cached_property
    def made(self) -> dict[int, object]:
        emnist = data.opened(self.plan.cfg.data_dir)[0]
        return {d: selections(self.plan.cfg, emnist, d) for d in range(self.plan.counts["draws"])}

    @cached_property
    def scores(self) -> pd.DataFrame:
        frames = [source_scores(cfg).assign(part=name, draw=cfg.split) for name, cfg in self.plan.configs()]
        return pd.concat(frames, ignore_index=True)

    @cached_property
    def scores_small(self) -> pd.DataFrame:
        """Each source net's scores on each trial's training images at the smallest k: only LEEP is defined there
        when that k is one image per class (the others are NaN)."""
        frames = [source_scores(cfg, min(cfg.sizes)).assign(part=name, draw=cfg.split)
                  for name, cfg in self.plan.configs()]
        return pd.concat(frames, ignore_index=True)

    @cached_property
    def cube(self) -> Cube:
        runs = with_zero(self.rows).merge(self.scores, on=["part", "draw", "trial"])
        scored = tuple(s for s in TRANSFERABILITY if runs[s].notna().all())  # NCM needs 2 images per class
        cube = dataclasses.replace(Cube.of(runs.assign(recipe=runs.part), list(SELECTIONS), VALUES + scored,
                                           replicate="draw"), keyed_by="selection")
        by_draw = {}
        for name in SELECTIONS:
            for d, (keys, predicted, labels, classes) in self.plan.predictions(name).items():
                by_draw.setdefault(d, []).append((keys.assign(part=name, draw=d), predicted, labels, classes))
        moved = {}
        for d, parts in by_draw.items():
            keys = with_zero(pd.concat([k for k, *_ in parts], ignore_index=True))
            predicted = np.concatenate([p for _, p, *_ in parts])
            zero = np.concatenate([p[(k.n == 0).to_numpy()] for k, p, *_ in parts])  # the first selection's n=0
            moved[d] = (keys, np.concatenate([predicted, *[zero] * (len(SELECTIONS) - 1)]), *parts[0][2:])
        return cube.with_classes(moved)


def design(p: Plan) -> dict:
    """The study's shape, for the page."""
    emnist = data.opened(p.cfg.data_dir)[0]
    pool = data.eligible(emnist, data.ORDER_POOL_IMAGES)[0]
    cfg = p.configs()[0][1]
    targets = data.eligible(emnist, cfg.source_per_class, max(cfg.sizes), cfg.test_per_class)[1]
    return {"draws": p.counts["draws"], "selections": len(SELECTIONS), "random_selections": RANDOM_SELECTIONS,
            "selection_sizes": ", ".join(map(str, cfg.sizes)),
            "selection_trials": cfg.trials, "pool": len(pool), "pool_images": data.ORDER_POOL_IMAGES, "scarce": len(set(targets) - set(pool)), "pool_chars": "".join(emnist.mapping[c] for c in pool),
            "source_classes": p.cfg.n_classes, "probe_sweep": PROBE_SWEEP, "probe_sha": PROBE_SHA256[:16],
            "score_k": max(cfg.sizes), "predicted_level": PREDICTED_LEVEL}


# ---------------------------------------------------------------- the runs and the record's classes

def run_section(r: Read, wall_seconds: float) -> tuple[dict, pd.DataFrame]:
    """How many runs, how long they took, where they came from; the runs per selection and draw."""
    values = {"selection_runs": len(r.rows), "selection_wall_minutes": wall_seconds / 60,
              "selection_training_hours": tables.training_hours(r.rows, r.plan.cfg.engine),
              "selection_provenance": tables.where_computed(r.rows)}
    return values, r.rows.groupby(["part", "draw"]).size().unstack("draw").loc[list(SELECTIONS)]


def classes_against_record(r: Read) -> tuple[pd.DataFrame, str]:
    """Per sweep: whether the source and target classes its results file records are the selection made again now,
    from the data and the probe net alone."""
    emnist = data.opened(r.plan.cfg.data_dir)[0]
    chars = lambda labels: "".join(emnist.mapping[c] for c in labels)  # noqa: E731
    out = {}
    for part, d, where in r.plan.sweeps():
        meta, _ = files.read_results(where / files.RESULTS_FILE)
        made = r.made[d]
        out[f"{part}/draw-{d}"] = {"source": meta["source_classes"], "target": meta["target_classes"],
                                   "made again": meta["source_classes"] == chars(made.chosen[part])
                                   and meta["target_classes"] == chars(made.targets)}
    table = pd.DataFrame(out).T
    return table, f"every sweep's classes are its selection made again from the data: {bool(table['made again'].all())}"


# ---------------------------------------------------------------- the selections, and what varies with them

def selections_section(r: Read) -> tuple[dict, pd.DataFrame]:
    """Every draw's selections: classes, twins of the targets, coverage cost in each space, mean distance to the
    targets; and how much the selections overlap (the pool holds 39 classes, a selection 20)."""
    table = pd.concat({d: m.table for d, m in r.made.items()}, names=["draw"])
    shared = lambda a, b: len(set(a) & set(b))  # noqa: E731
    randoms = [f"random{i}" for i in range(RANDOM_SELECTIONS)]
    pairs = [shared(m.chosen[a], m.chosen[b]) for m in r.made.values() for i, a in enumerate(randoms)
             for b in randoms[i + 1:]]
    twins = table.twins.astype(int).unstack("draw")
    emnist = data.opened(r.plan.cfg.data_dir)[0]
    untwinned = [m.table.loc["near-untwinned", "distance to the targets (probe)"] for m in r.made.values()]
    nearer = [int((m.table.loc[randoms, "distance to the targets (probe)"] < u).sum())
              for m, u in zip(r.made.values(), untwinned)]
    twin_free = [sum(data.twin(emnist.mapping[c]) not in {emnist.mapping[t] for t in m.targets}
                     for c in data.eligible(emnist, data.ORDER_POOL_IMAGES)[0]) for m in r.made.values()]
    per_draw = lambda values: ", ".join(map(str, values))  # noqa: E731
    values = {"untwinned_far_shared": per_draw(shared(m.chosen["near-untwinned"], m.chosen["far"])
                                               for m in r.made.values()),
              "untwinned_near_shared": per_draw(shared(m.chosen["near-untwinned"], m.chosen["near"])
                                                for m in r.made.values()),
              "untwinned_random_nearer": per_draw(nearer), "untwinned_pool": per_draw(twin_free),
              "random_pairs_shared": float(np.mean(pairs)),
              "near_far_shared": ", ".join(str(shared(m.chosen["near"], m.chosen["far"])) for m in r.made.values()),
              "spanning_shared": shared(r.made[0].chosen["spanning-pixels"], r.made[0].chosen["spanning-probe"]),
              "targets": "; ".join("".join(emnist.mapping[c] for c in m.targets) for m in r.made.values()),
              "twins_near": ", ".join(map(str, twins.loc["near"])), "twins_far": ", ".join(map(str, twins.loc["far"])),
              "twins_random_min": int(twins.loc[randoms].min().min()),
              "twins_random_max": int(twins.loc[randoms].max().max()),
              **{f"twins_{s.replace('-', '_')}": ", ".join(map(str, twins.loc[s])) for s in CHOSEN}}
    return values, table


def selection_figure(r: Read, draw: int = 0):
    """The first draw's selections as their classes' mean images, the targets' twins framed."""
    emnist = data.opened(r.plan.cfg.data_dir)[0]
    made = r.made[draw]
    shown = [*CHOSEN, "random0"]
    needed = {c for s in shown for c in made.chosen[s]} | set(made.targets)
    order = np.argsort(emnist.train.labels, kind="stable")  # each class's images once, not once per row it is in
    labels = emnist.train.labels[order]
    images = {c: emnist.train.images[order[np.searchsorted(labels, c, "left"):np.searchsorted(labels, c, "right")]]
              .mean(0) for c in needed}
    mean_image = images.__getitem__
    target_chars = {emnist.mapping[t] for t in made.targets}
    means = {s: [mean_image(c) for c in made.chosen[s]] for s in shown}
    chars = {s: [emnist.mapping[c] for c in made.chosen[s]] for s in shown}
    twins = {s: [data.twin(ch) in target_chars for ch in chars[s]] for s in shown}
    targets = ([mean_image(t) for t in made.targets], [emnist.mapping[t] for t in made.targets])
    return plots.selection_grid(means, twins, chars, targets)


def instruments_section(r: Read) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """Do the runs train, and what else varies with the selection? Per selection: its runs, those that stopped dead
    or at the epoch cap; its source nets' optimiser steps to the paper's accuracy, training and held-out accuracy."""
    chance = 1 / r.plan.cfg.n_classes
    rows = r.rows.assign(dead=r.rows.train_accuracy <= DEAD * chance, cap=r.rows.stopped_by == CAP)
    runs = rows.groupby("part").agg(runs=("dead", "size"), dead=("dead", "sum"), caps=("cap", "sum"),
                                    lowest_train_accuracy=("train_accuracy", "min")).loc[list(SELECTIONS)]
    sources = r.plan.sources().rename(columns={"part": "selection"})
    nets = sources.groupby("selection")[["steps", "train_accuracy", "held_out_accuracy"]].agg(["min", "max"])
    nets = nets.loc[list(SELECTIONS)]
    steps, held = sources.set_index("selection").steps, sources.set_index("selection").held_out_accuracy
    values = {"selection_dead": int(rows.dead.sum()), "selection_caps": int(rows.cap.sum()),
              "selection_train_min": float(rows.train_accuracy.min()), "dead": DEAD,
              "source_steps_min": int(steps.min()), "source_steps_max": int(steps.max()),
              "source_reached": int((sources.train_accuracy >= r.plan.cfg.source_accuracy).sum()),
              "source_nets": len(sources), "held_out_min": float(sources.held_out_accuracy.min()),
              "held_out_max": float(sources.held_out_accuracy.max()),
              **{f"steps_{s.replace('-', '_')}": ", ".join(f"{v:,}" for v in steps.loc[[s]]) for s in CHOSEN},
              **{f"held_out_{s.replace('-', '_')}": ", ".join(f"{v:.3f}" for v in held.loc[[s]]) for s in ("near", "far")}}
    return values, runs, nets


def confounds_section(r: Read) -> tuple[dict, pd.DataFrame]:
    """What moves with the gain across a draw's selections: Kendall's tau over the draw's selections between each
    selection's best gain at k and its twins of the targets, its source net's optimiser steps and held-out accuracy,
    and its classes' mean distance to the targets in the probe's features; the mean over the draws, each draw's beside
    it. Descriptive: these move together (near holds the twins, and its source nets trained longest)."""
    c = r.cube
    sources = r.plan.sources().set_index(["part", "draw"])
    out, values = [], {}
    for k in (c.sizes[0], c.sizes[-1]):
        gains = np.stack([best_gain(c, s, k)(c) for s in SELECTIONS], 1)  # (draws, selections)
        for key, name, column in (("twins", "twins", "twins"), ("source", "source steps", "steps"),
                                  ("held", "held-out accuracy of the source net", "held_out_accuracy"),
                                  ("distance", "distance to the targets", "distance to the targets (probe)")):
            per = []
            for d in range(c.shape[0]):
                x = [sources[column][s, d] for s in SELECTIONS] if column in sources else \
                    r.made[d].table.loc[list(SELECTIONS), column].astype(float).to_numpy()
                per.append(float(kendall_tau(x, gains[d])))
            out.append({"k": k, "against": name, "mean tau": float(np.mean(per)),
                        **{f"draw {d}": v for d, v in enumerate(per)}})
            values |= {f"confound_{key}_{end}": float(np.mean(per)) for end in ends(c, k)}
    return values, pd.DataFrame(out).set_index(["k", "against"])


# ---------------------------------------------------------------- transfer per selection

def accuracy_section(r: Read) -> tuple[dict, pd.DataFrame]:
    """Mean test accuracy over draws and trials, per selection, n and k."""
    c = r.cube
    table = pd.DataFrame({k: {(s, n): float(c.at("test_accuracy", n, k, s).mean()) for s in SELECTIONS
                              for n in c.levels} for k in c.sizes})
    table.index.names = ["selection", "n"]
    return {"small_k": c.sizes[0], "large_k": c.sizes[-1]}, table


def ends(c: Cube, k: int) -> list[str]:
    """Which ends of the sizes k is, as the page's keys name them: "small", "large", both (one size) or neither."""
    return [end for end, at in (("small", c.sizes[0]), ("large", c.sizes[-1])) if at == k]


def _crossed(c: Cube, gap, deep: list[Cube]) -> tuple[float, float, float]:
    """A contrast's mean over draws and its interval that also draws the classes again (intervals.CROSSED)."""
    estimate = float(np.mean(gap(c)))
    low, high = crossed_interval(estimate, np.array([np.nanmean(gap(x)) for x in deep]), c.shape[0])
    return estimate, float(low), float(high)


def _deep(r: Read) -> list[Cube]:
    S = r.cube.shape[0]
    rng = np.random.default_rng(r.plan.seed())
    return r.cube.crossed(rng.integers(0, S, (r.plan.draws, S)), rng)


def against_random_section(r: Read) -> tuple[dict, pd.DataFrame]:
    """Each chosen selection at every k: its best gain over n=0 (its n chosen on validation images), minus the random
    selections' mean with the interval that also draws the classes again; and where it falls among the random
    selections, as the share of them whose best gain is lower, per draw then averaged; and a readout that needs no
    training, the nearest class mean on the n=PREDICTED_LEVEL features' test accuracy, minus the random selections'
    (does it agree?). Beside it, how wide the random selections' band is: the signal a choice must leave."""
    c, deep = r.cube, _deep(r)
    randoms = random_selections(c)
    readouts = r.plan.readouts()
    readouts = readouts[(readouts.readout == "nearest-mean") & (readouts.n == PREDICTED_LEVEL)]
    readout = readouts.groupby(["part", "k"]).test_accuracy.mean()
    out, values = [], {}
    for k in c.sizes:
        gains = {s: best_gain(c, s, k)(c) for s in SELECTIONS}  # per draw
        band = np.array([gains[s] for s in randoms])  # (randoms, draws)
        chance = np.mean([readout[s, k] for s in randoms])
        for s in CHOSEN:
            estimate, low, high = _crossed(c, minus_random(c, s, k), deep)
            share = float(np.mean((band < gains[s]).mean(0)))
            out.append({"k": k, "selection": s, "best gain": float(gains[s].mean()), "minus random": estimate,
                        "low": low, "high": high, "share of random below": share,
                        "readout minus random": float(readout[s, k] - chance),
                        "levels chosen": ", ".join(str(chosen_on_validation(c, s, k)[d]) for d in range(c.shape[0]))})
            for end in ends(c, k):  # the page cites the smallest and the largest k
                key = f"{s.replace('-', '_')}_{end}"
                values |= {f"{key}_minus": estimate, f"{key}_low": low, f"{key}_high": high, f"{key}_share": share,
                           f"{key}_readout": float(readout[s, k] - chance)}
        for end in ends(c, k):
            values |= {f"random_band_{end}": float((band.max(0) - band.min(0)).mean()),
                       f"random_gain_{end}": float(band.mean())}
    return values, pd.DataFrame(out).set_index(["k", "selection"])


def standing_figure(r: Read):
    """Each draw's best gains at the smallest and the largest k: the random selections as grey dots, the chosen ones
    as coloured marks (their n chosen on validation images)."""
    c = r.cube
    gains = {k: {s: best_gain(c, s, k)(c) for s in SELECTIONS} for k in dict.fromkeys((c.sizes[0], c.sizes[-1]))}
    return plots.selection_standing(gains, random_selections(c))


# ---------------------------------------------------------------- transferability

def within_draws(r: Read) -> tuple[dict, pd.DataFrame]:
    """Per draw, score and k: Kendall's tau over the draw's selections between each source net's score (mean over
    trials) and its change at n=PREDICTED_LEVEL over n=0 (the claims' contrasts, one draw at a time; at large k a
    loss), and its best gain (its level chosen on validation images); beside them, LEEP on each trial's images at the
    smallest k, which a user with that few images could compute."""
    c = r.cube
    small = r.scores_small.groupby(["draw", "part"]).leep.mean()
    out = []
    for score in (s for s in TRANSFERABILITY if s in next(iter(c.arrays.values()))):
        for k in c.sizes:
            x = np.stack([c.at(score, PREDICTED_LEVEL, c.sizes[-1], s).mean(1) for s in SELECTIONS], 1)
            at_n = np.stack([(c.at("test_accuracy", PREDICTED_LEVEL, k, s) - c.at("test_accuracy", 0, k, s)).mean(1)
                             for s in SELECTIONS], 1)
            best = np.stack([best_gain(c, s, k)(c) for s in SELECTIONS], 1)
            for d in range(c.shape[0]):
                row = {"score": SCORE_NAMES[score], "k": k, "draw": d}
                out.append({**row, "against": f"n={PREDICTED_LEVEL} - n=0", "tau": float(kendall_tau(x[d], at_n[d]))})
                out.append({**row, "against": "best gain", "tau": float(kendall_tau(x[d], best[d]))})
                if score == "leep" and k == c.sizes[0]:
                    mine = [small[d, s] for s in SELECTIONS]
                    out.append({**row, "score": f"LEEP on the k={k} images", "against": f"n={PREDICTED_LEVEL} - n=0",
                                "tau": float(kendall_tau(mine, at_n[d]))})
    table = pd.DataFrame(out).pivot_table(index=["score", "against", "k"], columns="draw", values="tau")
    claimed = table.xs(f"n={PREDICTED_LEVEL} - n=0", level="against").xs(c.sizes[0], level="k")
    claimed = claimed.loc[[SCORE_NAMES[s] for s in TRANSFERABILITY if SCORE_NAMES[s] in claimed.index]]
    leep_small = table.loc[(f"LEEP on the k={c.sizes[0]} images", f"n={PREDICTED_LEVEL} - n=0", c.sizes[0])]
    return {"tau_small_min": float(claimed.min().min()), "tau_small_max": float(claimed.max().max()),
            "leep_small_images_tau": float(leep_small.mean())}, table


def every_source(cfg: Config, k_score: int, sizes: tuple[int, int],
                 known: dict[str, pd.Series] | None = None) -> pd.DataFrame:
    """Every source net of the record with the runs to measure it: the study's (its baseline part, one per class
    split), the breadth study's rule and equal-length series, and the selection study's. Per net: its family, the
    targets it shares (a class split, the breadth study's fixed targets, a draw), its classes, its scores on the
    trials' training images at k_score (mean over trials), and its gains at n=PREDICTED_LEVEL over n=0 at `sizes`
    (mean over trials). Nets whose sweep lacks k_score or a size are left out. `known`: the mean scores of sweeps
    already scored, by their directory."""
    families = {"study": ("split", lambda part: part == BASELINE_PART),
                "breadth": ("breadth targets", lambda part: part.startswith((ORDERED, EQUAL))),
                "selection": ("draw", lambda part: True)}
    out = []
    for name, (cluster, wanted) in families.items():
        p = plan(name, cfg)
        sweeps = [(part, c) for part, c in p.configs() if wanted(part) and (Path(c.results_dir) /
                                                                           files.RESULTS_FILE).exists()]
        if not sweeps:
            continue
        runs = p.runs()
        runs = runs[(runs.n.isin([0, PREDICTED_LEVEL])) & ((runs.recipe == BASELINE) | (runs.n == 0))]
        axis = p.design.axis
        for part, c in sweeps:
            if k_score not in c.sizes or not set(sizes) <= set(c.sizes):
                continue
            replicate = getattr(c, layout.AXES[axis])
            mine = runs[(runs.part == part) & (runs[axis] == replicate)]
            if name == "selection":  # its n=0 runs are its draw's first selection's
                mine = pd.concat([mine[mine.n > 0], runs[(runs.part == SELECTIONS[0]) & (runs[axis] == replicate)
                                                         & (runs.n == 0)]])
            mean = mine.groupby(["n", "k"]).test_accuracy.mean()
            if not all((n, k) in mean.index for n in (0, PREDICTED_LEVEL) for k in sizes):
                continue
            scores = (known or {}).get(c.results_dir)
            if scores is None:
                scores = source_scores(c, k_score).drop(columns="trial").mean()
            out.append({"family": name, "cluster": f"{cluster} {replicate}" if name != "breadth" else cluster,
                        "selection": part if name == "selection" else "",
                        "sweep": f"{name}/{part}/{axis}-{replicate}", "source classes": c.source_count(),
                        **scores.to_dict(),
                        **{f"gain_k{k}": mean[PREDICTED_LEVEL, k] - mean[0, k] for k in sizes}})
    return pd.DataFrame(out)


def pooled_tau(table: pd.DataFrame, score: str, gain: str, draws: int, seed: int) -> tuple[float, float, float]:
    """Kendall's tau over every net, with a percentile interval from a bootstrap that resamples the clusters of nets
    that share their targets (their gains are not independent)."""
    t = table.dropna(subset=[score, gain]).reset_index(drop=True)
    if len(t) < 2:  # a score that needs two images per class, on a profile with one
        return float("nan"), float("nan"), float("nan")
    x, y = t[score].to_numpy(float), t[gain].to_numpy(float)
    estimate = float(kendall_tau(x, y))
    groups = list(t.groupby("cluster").indices.values())
    rng = np.random.default_rng(seed)
    drawn = []
    for _ in range(draws):
        pick = np.concatenate([groups[i] for i in rng.integers(0, len(groups), len(groups))])
        drawn.append(kendall_tau(x[pick], y[pick]))
    low, high = percentile_interval(np.array(drawn))
    return estimate, float(low), float(high)


def transferability_section(r: Read) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """The scores over every source net of the record: Kendall's tau between each score and the gain at the smallest
    and largest k, over all nets (the cluster bootstrap) and within each family; and the nets' table."""
    c = r.cube
    sizes = (c.sizes[0], c.sizes[-1])
    where = {(name, cfg.split): cfg.results_dir for name, cfg in r.plan.configs()}
    known = {where[key]: g[list(TRANSFERABILITY)].mean() for key, g in r.scores.groupby(["part", "draw"])}
    table = every_source(r.plan.cfg, c.sizes[-1], sizes, known)
    family = {"study": [], "selection": []}
    out, values = [], {"score_nets": len(table), "score_clusters": table.cluster.nunique(),
                       **{f"nets_{f}": int((table.family == f).sum()) for f in ("study", "breadth", "selection")}}
    for score in TRANSFERABILITY:
        for k in dict.fromkeys(sizes):
            estimate, low, high = pooled_tau(table, score, f"gain_k{k}", r.plan.draws, r.plan.seed())
            row = {"score": SCORE_NAMES[score], "k": k, "tau, all nets": estimate, "low": low, "high": high}
            row |= {f"tau, {f}": float(kendall_tau(g[score], g[f"gain_k{k}"]))
                    for f, g in table.groupby("family", sort=False)}
            out.append(row)
            for f in ("study", "selection"):
                if k == sizes[0] and f"tau, {f}" in row:
                    family[f].append(row[f"tau, {f}"])
            values |= {f"pooled_{score}_{end}{suffix}": v for end in ends(c, k)
                       for suffix, v in (("", estimate), ("_low", low), ("_high", high))}
    for f, taus in family.items():
        values |= {f"family_{f}_min": float(np.nanmin(taus)) if taus else np.nan,
                   f"family_{f}_max": float(np.nanmax(taus)) if taus else np.nan}
    return values, pd.DataFrame(out).set_index(["score", "k"]), table


def scatter_figure(table: pd.DataFrame, sizes: tuple[int, int]):
    return plots.score_scatter(table, {s: SCORE_NAMES[s] for s in TRANSFERABILITY},
                               {f"gain_k{k}": f"gain of n={PREDICTED_LEVEL} over n=0, k={k}"
                                for k in dict.fromkeys(sizes)})


# ---------------------------------------------------------------- the verdicts

def verdicts_section(r: Read):
    """The committed claims: over the draws with intervals that draw the classes again (CROSSED), and each draw alone
    over its trials."""
    which = claims.SELECTION_CLAIMS
    over, judged = verdicts.across_splits(r.cube, which, CROSSED, r.plan.draws, r.plan.seed())
    _, by_draw = verdicts.within_splits(r.cube, which)
    by_draw = by_draw.rename_axis("draw")
    tallies = {key: verdicts.tally(column, independent=False).replace(" split", " draw")
               for key, column in by_draw.items()}  # the draws share most of their targets: not independent
    values = verdicts.claim_values(over, judged) | {f"{key}_tally": text for key, text in tallies.items()}
    shown = pd.DataFrame({"over draws and classes": judged, "draws where it holds": pd.Series(tallies)})
    return values, verdicts.shown(over), f"{shown.to_string()}\n{by_draw.T.to_string()}"
