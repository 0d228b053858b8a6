"""The breadth study's analysis (its design is ktlib.record.studies.BREADTH): what transfer gains as the source net
learns more classes, over nesting orders, with the capacity control and the fixed-image control beside it."""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd

from ktlib.analysis import claims, contrasts, controls, plots, verdicts
from ktlib.analysis.intervals import Cube, interval_texts, t_interval
from ktlib.compute import data
from ktlib.config import Purpose, derive_seed
from ktlib.recipes import BASELINE, MATCHED_CONTROL
from ktlib.record import tables
from ktlib.record.plans import Plan
from ktlib.record.studies import CAPACITY_LEVELS, FIXED, ORDERED

# ---------------------------------------------------------------- the design, as the plan resolved it

def sizes(plan: Plan) -> tuple[int, ...]:
    """The nested source sizes, the largest (every class that can be one) last."""
    return tuple(p.changes["source_size"] for p in plan.parts if p.name != ORDERED + FIXED)


def fixed_images(plan: Plan) -> int:
    """The fixed-image control's images per class: as many in all, over every class, as the paper's source."""
    return plan.part(ORDERED + FIXED).changes["source_per_class"]


def _listed(numbers) -> str:
    """1, 2 and 3: numbers as a sentence lists them."""
    words = [str(n) for n in numbers]
    return " and ".join([", ".join(words[:-1]), words[-1]] if len(words) > 1 else words)


def with_source(table: pd.DataFrame, plan: Plan) -> pd.DataFrame:
    """The table with each row's source size ('fixed' for the control), ordered as the sizes are."""
    sources = pd.Categorical(table.part.str.removeprefix(ORDERED), [str(m) for m in sizes(plan)] + [FIXED],
                             ordered=True)  # tables in this order
    return table.assign(source=sources)


def runs(plan: Plan) -> pd.DataFrame:
    """Every run, tidy, with its `part`, nesting `order` and `source` size; the n=0 runs under every
    source."""
    return with_source(plan.runs(), plan)


def readouts(plan: Plan) -> pd.DataFrame:
    """Every training-free readout, tidy, like `runs`."""
    return with_source(plan.readouts(), plan)


def source_nets(plan: Plan) -> pd.DataFrame:
    """Each sweep's source net: classes, epochs, training and held-out accuracy, whether it hit the epoch cap."""
    nets = plan.sources()
    return nets.assign(classes=nets.source.str.len(), cap=nets.epochs >= plan.cfg.source_max_epochs)


def spreads(plan: Plan) -> pd.DataFrame:
    """Per sweep, recipe and level: how much that level's output varies from image to image on the test images, by
    source size."""
    table = plan.spreads()
    return table.assign(source=table.part.str.removeprefix(ORDERED))[["source", "order", "recipe", "n", "spread"]]


def orders_table(plan: Plan) -> pd.DataFrame:
    """Per nesting order: the classes each source size adds to the one before."""
    emnist, out, m = data.opened(plan.cfg.data_dir)[0], {}, sizes(plan)
    for order in range(plan.counts["orders"]):
        ranked = [emnist.mapping[c] for c in data.nesting_order(
            emnist, derive_seed(plan.cfg.split_seed(), Purpose.SOURCE_ORDER, order))]
        out[order] = {f"{a + 1}-{b}": "".join(sorted(ranked[a:b])) for a, b in zip((0,) + m[:-1], m)}
    return pd.DataFrame(out).T.rename_axis("order")


def design(plan: Plan) -> dict:
    """The design's numbers, as the notebook cites them."""
    cfg, m = plan.cfg, sizes(plan)
    pool, orders = m[-1], plan.counts["orders"]
    return {"pool_count": pool, "scarce_count": len(data.opened(cfg.data_dir)[0].mapping) - pool,
            "targets": cfg.target_chars, "n_targets": cfg.n_classes, "orders": orders,
            "orders_df": orders - 1, "fixed_images": fixed_images(plan),
            "fixed_total": fixed_images(plan) * pool, "paper_total": cfg.n_classes * cfg.source_per_class,
            "capacity_levels": _listed(CAPACITY_LEVELS), "sweeps": len(plan.configs()),
            "sizes_count": len(m), "smaller_sizes": _listed(m[:-1]),
            "source_sizes": _listed(m[:-1] + (f"all {pool}",)),
            "pool_images": data.ORDER_POOL_IMAGES, "source_accuracy": cfg.source_accuracy,
            "source_max_epochs": cfg.source_max_epochs, "trials": cfg.trials,
            "paper_classes": cfg.n_classes, "top_level": max(cfg.levels)}


# ---------------------------------------------------------------- the analysis


def source_cube(rows: pd.DataFrame) -> Cube:
    """The frozen runs as a Cube keyed by source size (an int, or FIXED) where a recipe's would be, its first axis the
    nesting order: the form the breadth contrasts (ktlib.analysis.contrasts) read."""
    arrays, shape = {}, None
    for source, runs in rows[rows.recipe == BASELINE].groupby("source", observed=True):
        one = Cube.of(runs, [BASELINE], replicate="order")
        arrays[int(source) if source.isdigit() else source] = one.arrays[BASELINE]
        shape = one
    ordered = sorted(arrays.items(), key=lambda kv: (kv[0] == FIXED, 0 if kv[0] == FIXED else kv[0]))
    return Cube(dict(ordered), shape.levels,
                shape.sizes, shape.split_ids, keyed_by="source", replicate="order")


def _interval(values: np.ndarray) -> tuple[float, float, float]:
    """(mean, low, high): Student's t over the orders."""
    low, high = t_interval(values) if len(values) > 1 else (np.nan, np.nan)
    return float(values.mean()), float(low), float(high)


def gains(c: Cube) -> pd.DataFrame:
    """Per source and k: the gain over n=0 of the best n (chosen on the validation images) and of n=5, each with its
    95% t interval over the orders."""
    out = []
    for source in c.arrays:
        for k in c.sizes:
            top = c.levels[-1]
            per_order = {"best n": contrasts.best_gain(c, source, k)(c),
                         f"n={top}": (c.at("test_accuracy", top, k, source) - c.at("test_accuracy", 0, k, source)).mean(1)}
            for statistic, values in per_order.items():
                out.append(dict(zip(["source", "k", "gain of", "estimate", "low", "high"],
                                    [source, k, statistic, *_interval(values)])))
    return pd.DataFrame(out)


def doubling(c: Cube) -> pd.DataFrame:
    """Per k: what each doubling of the source classes adds to the best gain (contrasts.per_doubling), with its t
    interval over the orders."""
    return pd.DataFrame([dict(zip(["k", "estimate", "low", "high"], [k, *_interval(contrasts.per_doubling(c, k)(c))]))
                         for k in c.sizes]).set_index("k")


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


def paired(c: Cube, a, b) -> pd.DataFrame:
    """Per k: the best gain of source a minus that of source b, per order, with its t interval."""
    return pd.DataFrame([dict(zip(["k", "estimate", "low", "high"],
                                  [k, *_interval(contrasts.best_gain(c, a, k)(c) - contrasts.best_gain(c, b, k)(c))]))
                         for k in c.sizes]).set_index("k")


def knowledge(rows: pd.DataFrame) -> pd.DataFrame:
    """Per source, n and k where the capacity control ran: frozen minus the control, paired by trial, mean per
    order, with its t interval over the orders."""
    both = rows[rows.recipe.isin([BASELINE, MATCHED_CONTROL]) & rows.n.isin(CAPACITY_LEVELS)]
    wide = both.pivot_table(index=["source", "n", "k", "order", "trial"], columns="recipe", values="test_accuracy")
    wide = wide.dropna()
    per_order = (wide[BASELINE] - wide[MATCHED_CONTROL]).groupby(["source", "n", "k", "order"], observed=True).mean()
    out = pd.DataFrame([dict(zip(["source", "n", "k", "estimate", "low", "high"], [*key, *_interval(group.to_numpy())]))
                        for key, group in per_order.groupby(["source", "n", "k"], observed=True)])
    if isinstance(rows.source.dtype, pd.CategoricalDtype):  # the sources in their order, not as text sorts them
        out["source"] = pd.Categorical(out.source, rows.source.cat.categories, ordered=True)
    return out.sort_values(["source", "n", "k"], ignore_index=True)


def decided_signs(trained: pd.DataFrame, readout: pd.DataFrame) -> pd.DataFrame:
    """Per cell of two `knowledge` tables: whether both intervals exclude zero (decided), and if so, whether they
    agree in sign."""
    both = trained.merge(readout, on=["source", "n", "k"], suffixes=("", "_readout"))
    side = lambda low, high: np.where(low > 0, 1, np.where(high < 0, -1, 0))
    a, b = side(both.low, both.high), side(both.low_readout, both.high_readout)
    return both.assign(decided=(a != 0) & (b != 0), agree=(a != 0) & (a == b))


def source_summary(nets: pd.DataFrame) -> pd.DataFrame:
    """Per source size: the source nets' held-out accuracy (mean, lowest, highest), epochs, and epoch-cap hits."""
    return nets.groupby("part", sort=False).agg(
        classes=("classes", "first"), held_out_mean=("held_out_accuracy", "mean"),
        held_out_min=("held_out_accuracy", "min"), held_out_max=("held_out_accuracy", "max"),
        epochs_mean=("epochs", "mean"), capped=("cap", "sum"), nets=("cap", "size"))


def headline(c: Cube, stops: pd.DataFrame) -> dict:
    """The numbers that answer the paper's question: what a doubling of the source classes adds at the smallest k,
    with its interval, and where transfer stops paying (the median over orders) with the fewest and the most
    source classes."""
    small = c.sizes[0]
    estimate, low, high = _interval(contrasts.per_doubling(c, small)(c))
    fewest, most = contrasts.nested(c)[0], contrasts.nested(c)[-1]
    median = lambda m: stops.loc[m].fillna(np.inf).median()  # an order that pays at every k: past the largest
    text = lambda v: f"k = {v:g}" if np.isfinite(v) else f"beyond k = {c.sizes[-1]}"
    return {"small_k": small, "per_doubling": estimate, "per_doubling_low": low, "per_doubling_high": high,
            "fewest": fewest, "most": most, "stops_fewest": text(median(fewest)), "stops_most": text(median(most)),
            "stops_fewest_unpaid": int(stops.loc[fewest].isna().sum()),
            "stops_most_unpaid": int(stops.loc[most].isna().sum())}


def readout_table(readouts: pd.DataFrame, readout: str = "nearest-neighbour") -> pd.DataFrame:
    """Per source, n and k: one readout's test error on the frozen source's level-n features, mean over trials
    and then over orders, with its t interval over the orders."""
    mine = readouts[(readouts.readout == readout) & (readouts.recipe == BASELINE)]
    per_order = (1 - mine.test_accuracy).groupby([mine.source, mine.n, mine.k, mine.order], observed=True).mean()
    return pd.DataFrame([dict(zip(["source", "n", "k", "error", "low", "high"], [*key, *_interval(g.to_numpy())]))
                         for key, g in per_order.groupby(level=["source", "n", "k"], observed=True)])


# ---------------------------------------------------------------- the notebook's sections: (glued values, shown)

@dataclass
class Read:
    """The breadth study's record, read once: its runs as stored and tidy (the n=0 runs under every source), its
    readouts, and the frozen runs as a cube keyed by source size."""
    plan: Plan
    stored: pd.DataFrame
    rows: pd.DataFrame
    readouts: pd.DataFrame
    cube: Cube

    @classmethod
    def of(cls, plan: Plan) -> "Read":
        stored = plan.stored()  # read once: the tidy runs are these with the n=0 runs given to every sweep
        rows = with_source(plan.with_shared_zero(stored), plan)
        return cls(plan, stored, rows, readouts(plan), source_cube(rows))

    @cached_property
    def gain_table(self) -> pd.DataFrame:
        return gains(self.cube)

    @cached_property
    def error_table(self) -> pd.DataFrame:
        return readout_table(self.readouts)

    @cached_property
    def stops(self) -> pd.DataFrame:
        return stops_paying(self.cube)


def run_section(r: Read, wall_seconds: float) -> tuple[dict, pd.DataFrame]:
    """How many runs, how long they took, where they came from; the runs per part and recipe."""
    values = {"breadth_runs": len(r.stored), "breadth_wall_minutes": wall_seconds / 60,
              "breadth_training_hours": tables.training_hours(r.stored, r.plan.cfg.engine),
              "breadth_provenance": tables.where_computed(r.stored)}
    return values, r.stored.groupby(["part", "recipe"], sort=False).size().unstack("recipe", fill_value=0)


def sources_section(r: Read):
    """The source nets per size: held-out accuracy, epochs and epoch-cap hits."""
    summary = source_summary(source_nets(r.plan))
    values = {"capped_nets": int(summary.capped.sum()), "all_nets": int(summary.nets.sum())}
    for key, row in (("fewest", summary.iloc[0]), ("paper", summary[summary.classes == r.plan.cfg.n_classes].iloc[0]),
                     ("all", summary.iloc[-2]), ("fixed", summary.iloc[-1])):
        values |= {f"held_out_{key}": float(100 * row.held_out_mean), f"epochs_{key}": float(row.epochs_mean)}
    return values, summary.style.format({c: "{:.3f}" for c in ("held_out_mean", "held_out_min", "held_out_max")}
                                        | {"epochs_mean": "{:.0f}"})


def instruments_section(r: Read) -> tuple[dict, pd.DataFrame]:
    """The capacity control as an instrument: its dead runs and both recipes' epoch-cap hits, per source."""
    capped = r.stored[r.stored.stopped_by == "cap"]
    found = controls.instruments(r.rows[r.rows.n > 0], r.plan.cfg.n_classes, by=("source", "recipe"))
    control = found.xs(MATCHED_CONTROL, level="recipe")
    values = {"dead_times": contrasts.DEAD, "caps": len(capped),
              "caps_top": int((capped.n == max(r.plan.cfg.levels)).sum()),
              "caps_train_min": float(capped.train_accuracy.min()), "control_dead": int(control.dead.sum()),
              "control_runs": int(control.runs.sum()), "control_cap": int(control.cap.sum())}
    return values, found[["runs", "dead", "cap"]]


def spreads_section(r: Read) -> tuple[dict, pd.DataFrame]:
    """Each level's spread per source and recipe; the control's against the trained net's, and where it is weakest."""
    table = spreads(r.plan).groupby(["source", "recipe", "n"], sort=False).spread.mean().unstack("n")
    ratio = (table.xs(MATCHED_CONTROL, level="recipe") / table.xs(BASELINE, level="recipe")).dropna().drop(columns=0)
    weakest = ratio.stack().idxmin()
    return {"spread_ratio_min": float(ratio.stack().min()), "spread_ratio_max": float(ratio.stack().max()),
            "spread_weakest_source": weakest[0], "spread_weakest_level": int(weakest[1]),
            "spread_weakest": float(table.loc[(weakest[0], MATCHED_CONTROL), weakest[1]])}, table.round(3)


def knowledge_section(r: Read) -> tuple[dict, pd.DataFrame]:
    """Frozen minus the capacity control, per source, n and k, and whether the nearest-neighbour readout agrees."""
    trained = knowledge(r.rows)
    agree = decided_signs(trained, knowledge(r.readouts[r.readouts.readout == "nearest-neighbour"]))
    return ({"agree_cells": int(agree.agree.sum()), "decided_cells": int(agree.decided.sum()),
             "knowledge_cells": len(agree), "knowledge_positive": int((trained.low > 0).sum())},
            interval_texts(trained).unstack("k"))


def gains_section(r: Read):
    """The gains of the best n and of the top n per source and k, beside the readout's error: the figure and its
    numbers."""
    fig = plots.breadth(r.gain_table, r.error_table, claims.BAXTER_ERROR, FIXED)
    return {"fig_breadth": fig}, fig


def gains_text(r: Read) -> str:
    return interval_texts(r.gain_table.set_index(["source", "k", "gain of"])).unstack("source").to_string()


def doubling_section(r: Read) -> tuple[dict, pd.DataFrame]:
    """What each doubling of the source classes adds at each k, and the headline numbers."""
    per_k = doubling(r.cube)
    values = headline(r.cube, r.stops)
    values |= {f"per_doubling_large{'' if name == 'estimate' else '_' + name}": float(value)
               for name, value in per_k.iloc[-1].items()}
    return values, interval_texts(per_k).to_frame("each doubling adds [95% interval]")


def stops_section(r: Read):
    """Per source and order: the smallest k at which transfer stops paying."""
    values = {"clear_gain": contrasts.CLEAR_GAIN, "large_k": max(r.plan.cfg.sizes)}
    return values, r.stops.style.format("{:.0f}", na_rep="")


def images_section(r: Read) -> tuple[dict, pd.DataFrame]:
    """More classes at the same images (the fixed-image control against the paper's size) and more images of the
    same classes (all classes against the control), per k."""
    more = {"more_classes": paired(r.cube, FIXED, r.plan.cfg.n_classes),
            "more_images": paired(r.cube, contrasts.nested(r.cube)[-1], FIXED)}
    values = {f"{name}_{end}": interval_texts(table).iloc[i] for name, table in more.items()
              for end, i in (("small", 0), ("large", -1))}
    return values, pd.DataFrame({"more classes, same images": interval_texts(more["more_classes"]),
                                 "more images, same classes": interval_texts(more["more_images"])})


def verdicts_section(r: Read):
    """The paper's two guesses about more source classes, judged over the nesting orders."""
    table, judged = verdicts.across_splits(r.cube, claims.BREADTH_CLAIMS, "t", r.plan.draws, r.plan.seed())
    return verdicts.claim_values(table, judged), verdicts.shown(table), judged.to_string()


def landmark_values(r: Read) -> dict:
    """The readout's error with the fewest and the most source classes, beside the error the paper quotes."""
    error = r.error_table.set_index(["source", "n", "k"]).error
    top, small, large = max(r.plan.cfg.levels), min(r.plan.cfg.sizes), max(r.plan.cfg.sizes)
    fewest, most = str(contrasts.nested(r.cube)[0]), str(contrasts.nested(r.cube)[-1])
    return {"error_fewest_small": float(error[fewest, top, small]), "error_most_small": float(error[most, top, small]),
            "error_most_large": float(error[most, top, large]), "baxter": claims.BAXTER_ERROR,
            "baxter_classes": claims.BAXTER_CLASSES, "baxter_share": int(most) / claims.BAXTER_CLASSES}
