"""The breadth study's analysis (its design is ktlib.record.studies.BREADTH): what transfer gains as the source net
learns more classes, apart from its images, its training length and the targets' case twins; the capacity control
beside the paper's rule series; Bartlett & Baxter's prediction at the largest k."""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd

from ktlib.analysis import claims, contrasts, controls, intervals, plots, verdicts
from ktlib.analysis.intervals import Cube, interval_texts, t_interval
from ktlib.compute import data
from ktlib.compute.model import LAYERS
from ktlib.config import Purpose, derive_seed
from ktlib.recipes import BASELINE, SPREAD_CONTROL
from ktlib.record import tables
from ktlib.record.plans import Plan
from ktlib.record.studies import CAPACITY_LEVELS, EQUAL, LARGE, ORDERED

RULE, EQUAL_LENGTH, LARGEST = "paper's rule", "equal steps", "largest k"  # the series, as the tables name them
SERIES = {ORDERED: RULE, EQUAL: EQUAL_LENGTH, LARGE: LARGEST}

# ---------------------------------------------------------------- the design, as the plan resolved it


def parts_table(plan: Plan) -> pd.DataFrame:
    """Per part: its series, source classes and images per class."""
    out = {}
    for part in plan.parts:
        prefix = next(p for p in SERIES if part.name.startswith(p))
        ch = part.changes
        out[part.name] = {"series": SERIES[prefix], "classes": ch["source_size"],
                          "per_class": ch.get("source_per_class", plan.cfg.source_per_class)}
    return pd.DataFrame(out).T.rename_axis("part")


def rule_sizes(plan: Plan) -> tuple[int, ...]:
    """The rule series' nested source sizes, the largest (every class that can be one) last."""
    t = parts_table(plan)
    return tuple(int(m) for m in t[t.series == RULE].classes)


def with_source(table: pd.DataFrame, plan: Plan) -> pd.DataFrame:
    """The table with each row's series, source classes and images per class."""
    t = parts_table(plan)
    return table.assign(series=table.part.map(t.series), classes=table.part.map(t.classes).astype(int),
                        per_class=table.part.map(t.per_class).astype(int))


def _listed(numbers) -> str:
    """1, 2 and 3: numbers as a sentence lists them."""
    words = [str(n) for n in numbers]
    return " and ".join([", ".join(words[:-1]), words[-1]] if len(words) > 1 else words)


def orders_table(plan: Plan) -> pd.DataFrame:
    """Per nesting order: the classes each source size adds to the one before."""
    emnist, out, m = data.opened(plan.cfg.data_dir)[0], {}, rule_sizes(plan)
    for order in range(plan.counts["orders"]):
        ranked = [emnist.mapping[c] for c in data.nesting_order(
            emnist, derive_seed(plan.cfg.split_seed(), Purpose.SOURCE_ORDER, order))]
        out[order] = {f"{a + 1}-{b}": "".join(sorted(ranked[a:b])) for a, b in zip((0,) + m[:-1], m)}
    return pd.DataFrame(out).T.rename_axis("order")


def twins_table(plan: Plan) -> pd.DataFrame:
    """Per target class: its case twin (data.twin), and whether the twin is in the source pool (so that some
    source nets learn it) or not (no source net does)."""
    emnist = data.opened(plan.cfg.data_dir)[0]
    pool = {emnist.mapping[c] for c in data.eligible(emnist, data.ORDER_POOL_IMAGES)[0]}
    return pd.DataFrame([{"target": t, "twin": data.twin(t) or "", "twin in the pool": data.twin(t) in pool}
                         for t in plan.cfg.target_chars]).set_index("target")


def design(plan: Plan) -> dict:
    """The design's numbers, as the notebook cites them."""
    cfg, m, parts = plan.cfg, rule_sizes(plan), parts_table(plan)
    pool, orders = m[-1], plan.counts["orders"]
    equal = dict(plan.configs())[next(p for p in parts.index if p.startswith(EQUAL))]
    large = dict(plan.configs())[next(p for p in parts.index if p.startswith(LARGE))]
    rule = dict(plan.configs())[f"{ORDERED}{m[0]}"]
    twins = twins_table(plan)
    cells = parts[parts.series == EQUAL_LENGTH]
    return {"pool_count": pool, "scarce_count": len(data.opened(cfg.data_dir)[0].mapping) - pool,
            "targets": cfg.target_chars, "n_targets": cfg.n_classes, "orders": orders, "orders_df": orders - 1,
            "capacity_levels": _listed(CAPACITY_LEVELS), "sweeps": len(plan.configs()),
            "sizes_count": len(m), "smaller_sizes": _listed(m[:-1]), "source_sizes": _listed(m[:-1] + (f"all {pool}",)),
            "pool_images": data.ORDER_POOL_IMAGES, "source_accuracy": cfg.source_accuracy,
            "source_max_epochs": cfg.source_max_epochs, "trials": cfg.trials, "paper_classes": cfg.n_classes,
            "top_level": max(cfg.levels), "rule_sizes": _listed(rule.sizes), "equal_sizes": _listed(equal.sizes),
            "equal_trials": equal.trials, "equal_steps": int(equal.source_steps), "cells": len(cells),
            "cell_list": _listed(f"{c.classes}x{c.per_class}" for c in cells.itertuples()),
            "large_k": large.sizes[-1], "twinned": int(twins["twin in the pool"].sum()),
            "twinned_targets": "".join(twins.index[twins["twin in the pool"]]),
            "untwinned_targets": "".join(twins.index[~twins["twin in the pool"]])}


# ---------------------------------------------------------------- the cubes the contrasts read


def _cube(rows: pd.DataFrame, key, keyed_by: str, predictions=None) -> Cube:
    """The frozen runs of some parts as one Cube, keyed by key(part row), the orders its first axis; with each part's
    test predictions (part -> Plan.predictions), its runs' accuracy on each target class too."""
    arrays, by_class, shape = {}, {}, None
    for part, runs in rows[rows.recipe == BASELINE].groupby("part", sort=False):
        one = Cube.of(runs, [BASELINE], replicate="order")
        if predictions is not None:
            one = one.with_classes(predictions[part])
            by_class[key(runs.iloc[0])] = one.by_class[BASELINE]
        arrays[key(runs.iloc[0])] = one.arrays[BASELINE]
        shape = one
    ordered = dict(sorted(arrays.items()))
    return Cube(ordered, shape.levels, shape.sizes, shape.split_ids, keyed_by=keyed_by, replicate="order",
                by_class=None if predictions is None else {k: by_class[k] for k in ordered},
                class_ids=shape.class_ids, class_names=shape.class_names)


def rule_cube(rows: pd.DataFrame) -> Cube:
    """The rule series' frozen runs, keyed by the number of source classes."""
    return _cube(rows[rows.series == RULE], lambda r: int(r.classes), "source")


def cell_cube(rows: pd.DataFrame, predictions=None) -> Cube:
    """The equal-length series' frozen runs, keyed by (source classes, images per class): the cube the class and
    image contrasts read (ktlib.analysis.contrasts.class_steps)."""
    return _cube(rows[rows.series == EQUAL_LENGTH], lambda r: (int(r.classes), int(r.per_class)), "source cell",
                 predictions)


def large_cube(rows: pd.DataFrame) -> Cube:
    """The largest source's runs at the largest k (contrasts.contrasts_breadth_reaches)."""
    return _cube(rows[rows.series == LARGEST], lambda r: int(r.classes), "largest source")


def _interval(values: np.ndarray) -> tuple[float, float, float]:
    """(mean, low, high): Student's t over the orders (the NaN of an order without a value left out)."""
    values = values[~np.isnan(values)]
    low, high = t_interval(values) if len(values) > 1 else (np.nan, np.nan)
    return float(values.mean()) if len(values) else np.nan, float(low), float(high)


def gains(c: Cube) -> pd.DataFrame:
    """Per source and k: the gain over n=0 of the best n (chosen on the validation images) and of the top n, each
    with its 95% t interval over the orders."""
    out, top = [], c.levels[-1]
    for source in c.arrays:
        for k in c.sizes:
            per_order = {"best n": contrasts.best_gain(c, source, k)(c),
                         f"n={top}": (c.at("test_accuracy", top, k, source)
                                      - c.at("test_accuracy", 0, k, source)).mean(1)}
            out += [dict(zip(["source", "k", "gain of", "estimate", "low", "high"], [source, k, what, *_interval(v)]))
                    for what, v in per_order.items()]
    return pd.DataFrame(out)


def steps_table(c: Cube, pairs, k: int) -> pd.DataFrame:
    """Per step between two cells (contrasts.class_steps or image_steps): the best gain at k of the second minus the
    first, with its t interval over the orders."""
    return pd.DataFrame([dict(zip(["from", "to", "estimate", "low", "high"],
                                  [contrasts.cell_text(a), contrasts.cell_text(b),
                                   *_interval(contrasts.step_gain(c, a, b, k)(c))])) for a, b in pairs])


def effects_table(c: Cube) -> pd.DataFrame:
    """Per k: the plane's class effect and image effect (contrasts.effects), each with its t interval."""
    return pd.DataFrame([dict(zip(["k", "effect", "estimate", "low", "high"], [k, name, *_interval(f(c))]))
                         for k in c.sizes for name, f in contrasts.effects(c, k).items()])


def stops_paying(c: Cube, margin: float = contrasts.CLEAR_GAIN) -> pd.DataFrame:
    """Per source and order: the smallest k at which the best gain (its n chosen on the validation images) falls short
    of the clear-gain margin, where transfer stops paying; NaN where it pays at every k. A threshold crossing has no
    confidence interval: the table gives every order's."""
    out = {}
    for source in c.arrays:
        per_k = np.stack([contrasts.best_gain(c, source, k)(c) for k in c.sizes])  # (K, orders)
        out[source] = [next((k for k, g in zip(c.sizes, per_k[:, o]) if g < margin), np.nan)
                       for o in range(per_k.shape[1])]
    return pd.DataFrame(out, index=pd.Index(c.split_ids, name="order")).T.rename_axis("source")


# ---------------------------------------------------------------- the capacity control


def knowledge(rows: pd.DataFrame) -> pd.DataFrame:
    """Per source, n and k where the capacity control ran: frozen minus the control, paired by trial, mean per
    order, with its t interval over the orders."""
    both = rows[rows.recipe.isin([BASELINE, SPREAD_CONTROL]) & rows.n.isin(CAPACITY_LEVELS)]
    wide = both.pivot_table(index=["classes", "n", "k", "order", "trial"], columns="recipe",
                            values="test_accuracy").dropna()
    per_order = (wide[BASELINE] - wide[SPREAD_CONTROL]).groupby(["classes", "n", "k", "order"]).mean()
    return pd.DataFrame([dict(zip(["classes", "n", "k", "estimate", "low", "high"], [*key, *_interval(g.to_numpy())]))
                         for key, g in per_order.groupby(["classes", "n", "k"])])


def spread_ratios(plan: Plan) -> pd.DataFrame:
    """Per rule source and order: the control's spread over the trained net's at each level above the pixels, on the
    validation images, as each sweep's readouts file records it."""
    table = with_source(plan.spreads(tuple(f"{ORDERED}{m}" for m in rule_sizes(plan))), plan)
    wide = table[table.n > 0].pivot_table(index=["classes", "order", "level"], columns="recipe", values="spread")
    return (wide[SPREAD_CONTROL] / wide[BASELINE]).unstack("level")[list(LAYERS[:-1])]


def excluded(ratios: pd.DataFrame) -> list[int]:
    """The rule sources whose control is not an instrument: in some order, at some level, its spread under ALIVE of
    the trained net's. Their knowledge cells are excluded."""
    low = ratios.min(axis=1) < contrasts.ALIVE
    return sorted({int(m) for (m, _), bad in low.items() if bad})


def decided_signs(trained: pd.DataFrame, readout: pd.DataFrame) -> pd.DataFrame:
    """Per cell of two `knowledge` tables: whether both intervals exclude zero (decided), and if so, whether they
    agree in sign."""
    both = trained.merge(readout, on=["classes", "n", "k"], suffixes=("", "_readout"))
    side = lambda low, high: np.where(low > 0, 1, np.where(high < 0, -1, 0))  # noqa: E731
    a, b = side(both.low, both.high), side(both.low_readout, both.high_readout)
    return both.assign(decided=(a != 0) & (b != 0), agree=(a != 0) & (a == b))


# ---------------------------------------------------------------- case twins


def twin_gains(c: Cube, twins: pd.DataFrame, sources: dict, k: int) -> pd.DataFrame:
    """Per source cell (of a cube with its classes: `cell_cube` with predictions) and order: how many targets have
    their twin among that order's source classes, and the mean gain over n=0 at k (the order's best n, chosen on all
    the validation images) of the targets with their twin in the source and of those without."""
    names, out = c.class_names, []
    for cell, by_class in c.by_class.items():
        chosen = contrasts.chosen_on_validation(c, cell, k)
        ki = c.sizes.index(k)
        for row, order in enumerate(c.split_ids):
            n = c.levels.index(chosen[order])
            gain = (by_class[row, :, n, ki] - by_class[row, :, 0, ki]).mean(0)  # (classes,)
            chars = [names[i] for i in c.class_ids[row]]
            twinned = np.array([twins.twin[t] in sources[cell, order] for t in chars])
            out.append({"cell": contrasts.cell_text(cell), "order": order, "twinned": int(twinned.sum()),
                        "with twin": gain[twinned].mean() if twinned.any() else np.nan,
                        "without": gain[~twinned].mean() if (~twinned).any() else np.nan})
    return pd.DataFrame(out)


def twin_gap(per_order: pd.DataFrame) -> pd.DataFrame:
    """Per cell, and pooled over the cells: the targets' mean gain with and without their twin in the source, the
    difference, and its t interval over the orders (over orders where both kinds of target exist)."""
    gap = per_order.assign(gap=per_order["with twin"] - per_order["without"])
    rows = [(cell, g) for cell, g in gap.groupby("cell", sort=False)] + [("all cells", gap.groupby("order").mean(
        numeric_only=True).reset_index())]
    return pd.DataFrame([{"cell": cell, "twinned targets": g.twinned.mean(), "with twin": g["with twin"].mean(),
                          "without": g["without"].mean(),
                          **dict(zip(["gap", "low", "high"], _interval(g.gap.to_numpy())))}
                         for cell, g in rows]).set_index("cell")


def untwinned_cube(c: Cube, twins: pd.DataFrame) -> Cube:
    """The cube with each run's test accuracy on the targets whose twin no source net can learn alone: a class
    effect read on them owes nothing to twins."""
    keep = np.array([not twins.loc[name, "twin in the pool"] for name in c.class_names], float)
    return c.reweighted(keep)


# ---------------------------------------------------------------- the notebook's sections: (glued values, shown)


@dataclass
class Read:
    """The breadth study's record, read once: its runs as stored and tidy (the n=0 runs under every sweep of their
    k), its readouts, and the cubes of its three series."""
    plan: Plan
    stored: pd.DataFrame
    rows: pd.DataFrame
    readouts: pd.DataFrame

    @classmethod
    def of(cls, plan: Plan) -> "Read":
        stored = plan.stored()  # read once: the tidy runs are these with the n=0 runs given to every sweep
        rows = with_source(plan.with_shared_zero(stored), plan)
        return cls(plan, stored, rows, with_source(plan.readouts(), plan))

    @cached_property
    def rule(self) -> Cube:
        return rule_cube(self.rows)

    @cached_property
    def cells(self) -> Cube:
        parts = parts_table(self.plan)
        predictions = {p: self.plan.predictions(p) for p in parts.index[parts.series == EQUAL_LENGTH]}
        return cell_cube(self.rows, predictions)

    @cached_property
    def large(self) -> Cube:
        return large_cube(self.rows)

    @cached_property
    def nets(self) -> pd.DataFrame:
        nets = with_source(self.plan.sources(), self.plan)  # each net's optimiser steps as its record counts them
        return nets.assign(cap=(nets.series != EQUAL_LENGTH) & (nets.epochs >= self.plan.cfg.source_max_epochs))

    @cached_property
    def twins(self) -> pd.DataFrame:
        return twins_table(self.plan)

    @cached_property
    def method(self) -> tuple[str, pd.DataFrame]:
        """The interval method over the orders, chosen by the study's rule (intervals.chosen_method) on a coverage
        simulation of this study's shape (orders x the equal-length series' trials), and that simulation: as many
        simulated studies as the profile's bootstrap draws (the paper's: intervals.COVERAGE_REPS)."""
        S, T = self.cells.shape
        sim = intervals.coverage(self.plan.seed(Purpose.COVERAGE), shapes=((S, T),), reps=self.plan.draws)
        return intervals.chosen_method(sim), sim


def run_section(r: Read, wall_seconds: float) -> tuple[dict, pd.DataFrame]:
    """How many runs, how long they took, where they came from; the runs per part and recipe."""
    values = {"breadth_runs": len(r.stored), "breadth_wall_minutes": wall_seconds / 60,
              "breadth_training_hours": tables.training_hours(r.stored, r.plan.cfg.engine),
              "breadth_provenance": tables.where_computed(r.stored)}
    return values, r.stored.groupby(["part", "recipe"], sort=False).size().unstack("recipe", fill_value=0)


def sources_section(r: Read):
    """The source nets per part: held-out accuracy, epochs, optimiser steps and epoch-cap hits."""
    nets = r.nets
    summary = nets.groupby("part", sort=False).agg(
        series=("series", "first"), classes=("classes", "first"), per_class=("per_class", "first"),
        held_out=("held_out_accuracy", "mean"), held_out_min=("held_out_accuracy", "min"),
        train_accuracy=("train_accuracy", "mean"), epochs=("epochs", "mean"), steps=("steps", "mean"),
        capped=("cap", "sum"), nets=("cap", "size"))
    rule, equal = summary[summary.series == RULE], summary[summary.series == EQUAL_LENGTH]
    values = {"capped_nets": int(summary.capped.sum()), "rule_nets": int(rule.nets.sum()),
              "rule_steps_fewest": float(rule.steps.iloc[0]), "rule_steps_all": float(rule.steps.iloc[-1]),
              "held_out_fewest": float(100 * rule.held_out.iloc[0]), "held_out_all": float(100 * rule.held_out.iloc[-1]),
              "equal_train_min": float(100 * equal.train_accuracy.min()),
              "equal_train_max": float(100 * equal.train_accuracy.max()),
              "equal_steps_min": int(nets[nets.series == EQUAL_LENGTH].steps.min()),
              "equal_steps_max": int(nets[nets.series == EQUAL_LENGTH].steps.max()),
              "equal_held_out_min": float(100 * equal.held_out.min()),
              "equal_held_out_max": float(100 * equal.held_out.max())}
    fmt = {c: "{:.3f}" for c in ("held_out", "held_out_min", "train_accuracy")} | {"epochs": "{:.0f}", "steps": "{:.0f}"}
    return values, summary.style.format(fmt)


def instruments_section(r: Read) -> tuple[dict, pd.DataFrame]:
    """The capacity control as an instrument: its dead runs and both recipes' epoch-cap hits, per rule source."""
    rule = r.rows[(r.rows.series == RULE) & (r.rows.n > 0)]
    capped = r.stored[r.stored.stopped_by == "cap"]
    found = controls.instruments(rule, r.plan.cfg.n_classes, by=("classes", "recipe"))
    control = found.xs(SPREAD_CONTROL, level="recipe")
    values = {"dead_times": contrasts.DEAD, "caps": len(capped), "control_dead": int(control.dead.sum()),
              "control_runs": int(control.runs.sum()), "control_cap": int(control.cap.sum()),
              "caps_train_min": float(capped.train_accuracy.min()) if len(capped) else float("nan")}
    return values, found[["runs", "dead", "cap"]]


def spreads_section(r: Read) -> tuple[dict, pd.DataFrame]:
    """The control's spread over the trained net's per rule source, order and level, on the validation images; the
    sources where it falls under ALIVE, excluded."""
    ratios = spread_ratios(r.plan)
    out = excluded(ratios)
    return ({"alive": contrasts.ALIVE, "spread_ratio_min": float(ratios.min().min()),
             "spread_ratio_max": float(ratios.max().max()), "excluded_sources": len(out),
             "excluded_names": _listed(out) if out else "none"}, ratios.round(2))


def knowledge_section(r: Read) -> tuple[dict, pd.DataFrame]:
    """Frozen minus the capacity control, per rule source, n and k (excluded sources left out, and counted), and
    whether the nearest-neighbour readout agrees."""
    out = excluded(spread_ratios(r.plan))
    trained = knowledge(r.rows)
    trained = trained[~trained.classes.isin(out)]
    readout = r.readouts[r.readouts.readout == "nearest-neighbour"]
    agree = decided_signs(trained, knowledge(readout[~readout.classes.isin(out)]))
    return ({"agree_cells": int(agree.agree.sum()), "decided_cells": int(agree.decided.sum()),
             "knowledge_cells": len(agree), "knowledge_positive": int((trained.low > 0).sum()),
             "knowledge_excluded": int(len(knowledge(r.rows)) - len(trained))},
            interval_texts(trained.set_index(["classes", "n", "k"])).unstack("k"))


def rule_section(r: Read):
    """The rule series: the gain of the best n and of the top n per source size and k, and where transfer stops
    paying, per order."""
    table = gains(r.rule)
    stops = stops_paying(r.rule)
    median = lambda m: stops.loc[m].fillna(np.inf).median()  # noqa: E731 (an order that pays at every k: past the last)
    text = lambda v: f"k = {v:g}" if np.isfinite(v) else f"beyond k = {r.rule.sizes[-1]}"  # noqa: E731
    sizes = list(r.rule.arrays)
    best = table[table["gain of"] == "best n"].set_index(["source", "k"])
    values = {"clear_gain": contrasts.CLEAR_GAIN, "fewest": sizes[0], "most": sizes[-1],
              "stops_fewest": text(median(sizes[0])), "stops_most": text(median(sizes[-1])),
              "rule_gain_fewest_small": float(best.estimate[sizes[0], r.rule.sizes[0]]),
              "rule_gain_most_small": float(best.estimate[sizes[-1], r.rule.sizes[0]])}
    shown = interval_texts(table.set_index(["source", "k", "gain of"])).unstack("source")
    return values, shown, stops.style.format("{:.0f}", na_rep="")


def grid_section(r: Read):
    """The equal-length grid: each cell's best gain at each k, and the figure of the gains against the classes, one
    line per equal-total diagonal."""
    table = gains(r.cells)
    best = table[table["gain of"] == "best n"]
    fig = plots.breadth_grid(best.assign(diagonal=[contrasts.diagonal(r.cells, s) for s in best.source]))
    cells = pd.Categorical([contrasts.cell_text(s) for s in best.source],
                           [contrasts.cell_text(s) for s in contrasts.cells(r.cells)], ordered=True)
    shown = interval_texts(best.assign(cell=cells).set_index(["cell", "k"])[["estimate", "low", "high"]]).unstack("k")
    return {"fig_breadth": fig}, shown


def steps_section(r: Read):
    """Each doubling of the classes at the same total images, and of the images at the same classes, at each k; the
    plane's two effects; the same class steps on the targets without a twin in the pool."""
    c = r.cells
    classes = pd.concat({k: steps_table(c, contrasts.class_steps(c), k) for k in c.sizes}, names=["k"])
    images = pd.concat({k: steps_table(c, contrasts.image_steps(c), k) for k in c.sizes}, names=["k"])
    plain = untwinned_cube(c, r.twins)
    untwinned = pd.concat({k: steps_table(plain, contrasts.class_steps(plain), k) for k in c.sizes}, names=["k"])
    fx = effects_table(c).set_index(["k", "effect"])
    plain_fx = effects_table(plain).set_index(["k", "effect"])
    small, large = c.sizes[0], c.sizes[-1]
    values = {"small_k": small, "large_k_grid": large}
    for name in ("class effect", "image effect"):
        for k, end in ((small, "small"), (large, "large")):
            row = fx.loc[(k, name)]
            key = f"{name.split()[0]}_effect_{end}"
            values |= {key: float(row.estimate), f"{key}_low": float(row.low), f"{key}_high": float(row.high)}
    for k, end in ((small, "small"), (large, "large")):  # all the targets' class effect minus the twin-free one
        gap = _interval(contrasts.effects(c, k)["class effect"](c) - contrasts.effects(plain, k)["class effect"](plain))
        values |= dict(zip([f"twin_share_{end}", f"twin_share_{end}_low", f"twin_share_{end}_high"], gap))
        row = plain_fx.loc[(k, "class effect")]
        values |= {f"untwinned_effect_{end}": float(row.estimate), f"untwinned_effect_{end}_low": float(row.low),
                   f"untwinned_effect_{end}_high": float(row.high)}
    for name, t in (("class_steps", classes), ("image_steps", images), ("untwinned_steps", untwinned)):
        for k, end in ((small, "small"), (large, "large")):
            at = t.loc[k]
            values |= {f"{name}_{end}_above": int((at.low > 0).sum()), f"{name}_{end}_below": int((at.high < 0).sum()),
                       f"{name}_count": len(at)}
    texts = lambda t: interval_texts(t.set_index(["from", "to"], append=True).droplevel(1))  # noqa: E731
    return values, pd.DataFrame({"more classes, same images": texts(classes)}), \
        pd.DataFrame({"more images, same classes": texts(images)}), \
        pd.DataFrame({"more classes, targets without a twin in the pool": texts(untwinned)}), \
        interval_texts(fx)


def twins_section(r: Read):
    """The targets' gain at the smallest k with and without their twin among the source classes, per cell of the
    equal-length grid and pooled."""
    nets = r.nets[r.nets.series == EQUAL_LENGTH]
    sources = {((int(m), int(p)), int(o)): set(chars)
               for m, p, o, chars in zip(nets.classes, nets.per_class, nets.order, nets.source)}
    table = twin_gap(twin_gains(r.cells, r.twins, sources, r.cells.sizes[0]))
    pooled = table.loc["all cells"]
    values = {"twin_gap": float(pooled.gap), "twin_gap_low": float(pooled.low), "twin_gap_high": float(pooled.high),
              "twin_with": float(pooled["with twin"]), "twin_without": float(pooled["without"])}
    gap = interval_texts(table.rename(columns={"gap": "estimate"})[["estimate", "low", "high"]])
    shown = table.assign(**{"gap [95% interval]": gap})
    return values, shown[["twinned targets", "with twin", "without", "gap [95% interval]"]].round(3)


def large_section(r: Read):
    """The largest source at the largest k: each level's mean test accuracy, and the best transfer net's gap to n=0."""
    c = r.large
    k, source = c.sizes[-1], next(iter(c.arrays))
    means = pd.Series({n: float(c.at("test_accuracy", n, k, source).mean()) for n in c.levels},
                      name=f"test accuracy at k={k}").rename_axis("n")
    gap = _interval(contrasts.best_gain(c, source, k)(c))
    return ({"bb_k": k, "bb_gap": gap[0], "bb_gap_low": gap[1], "bb_gap_high": gap[2],
             "bb_zero": float(means[0]), "bb_top": float(means.iloc[-1])}, means.to_frame().round(3))


def coverage_section(r: Read):
    """The coverage of each interval method at this study's shape, and the one chosen."""
    method, sim = r.method
    t = sim[sim.method == "t"]
    return ({"breadth_method": method, "breadth_coverage_reps": r.plan.draws, "t_coverage_min": float(t.coverage.min()),
             "t_coverage_max": float(t.coverage.max())},
            sim.pivot_table(index="scenario", columns="method", values="coverage").round(3))


def verdicts_section(r: Read):
    """The paper's guesses about more source classes, the image effect and Bartlett & Baxter's prediction, judged
    over the nesting orders."""
    method = r.method[0]
    grid = {k: v for k, v in claims.BREADTH_CLAIMS.items() if k != "breadth_reaches"}
    a, ja = verdicts.across_splits(r.cells, grid, method, r.plan.draws, r.plan.seed())
    b, jb = verdicts.across_splits(r.large, {"breadth_reaches": claims.BREADTH_CLAIMS["breadth_reaches"]}, method,
                                   r.plan.draws, r.plan.seed())
    table, judged = pd.concat([a, b], ignore_index=True), pd.concat([ja, jb])
    return verdicts.claim_values(table, judged), verdicts.shown(table), judged.to_string()


def landmark_values(r: Read) -> dict:
    """The rule series' readout error with the fewest and the most source classes, beside the error the paper
    quotes."""
    mine = r.readouts[(r.readouts.readout == "nearest-neighbour") & (r.readouts.recipe == BASELINE)
                      & (r.readouts.series == RULE)]
    error = (1 - mine.test_accuracy).groupby([mine.classes, mine.n, mine.k]).mean()
    top, small, large = max(r.plan.cfg.levels), r.rule.sizes[0], r.rule.sizes[-1]
    fewest, most = list(r.rule.arrays)[0], list(r.rule.arrays)[-1]
    return {"error_fewest_small": float(error[fewest, top, small]), "error_most_small": float(error[most, top, small]),
            "error_most_large": float(error[most, top, large]), "baxter": claims.BAXTER_ERROR,
            "baxter_classes": claims.BAXTER_CLASSES, "baxter_share": most / claims.BAXTER_CLASSES}
