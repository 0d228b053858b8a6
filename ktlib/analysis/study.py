"""The study's runs as its analyses take them (its design is ktlib.record.studies.STUDY): the probes beside the
baseline, the protocol variants apart, the recipes and the levels' spreads as tables."""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from ktlib.analysis import claims, contrasts, controls, intervals, plots, verdicts
from ktlib.analysis.glue import glue_key
from ktlib.analysis.intervals import Cube, interval_texts
from ktlib.compute import data
from ktlib.config import Purpose
from ktlib.recipes import BASELINE, CORE, MATCHED_CONTROL, RECIPES, STUDY, TUNED
from ktlib.record import tables
from ktlib.record.files import RESULTS_FILE, read_readouts, read_results
from ktlib.record.plans import Plan
from ktlib.record.studies import BASELINE_PART, BUDGET_EPOCHS, PATIENCE_STEPS, PROBES_PART, RESEEDED_PART, VARIANTS


def recipe_table(plan: Plan) -> pd.DataFrame:
    """Every recipe of the study: what it copies, whether its copied layers train and at what share of the rate,
    and on which splits it runs."""
    splits, variant_splits = plan.counts["splits"], plan.counts["variant_splits"]
    out = {name: {"copies": r.copies, "copied layers": f"train at {r.lr_factor:g} x lr" if r.trains else "frozen",
                  "runs on": f"all {splits} splits" if name in CORE else f"splits 0-{variant_splits - 1}",
                  "what it is": r.about} for name, r in RECIPES.items() if name in STUDY}
    return pd.DataFrame(out).T.rename_axis("recipe")


def with_probes(rows: pd.DataFrame, splits: int) -> pd.DataFrame:
    """The baseline's runs (or readouts) of its first `splits` splits, with the probes' beside them: every recipe on
    the same splits, the n=0 runs the baseline's (the probes' readouts of the baseline's recipe are left out, as
    copies of the baseline's)."""
    base = rows[(rows.part == BASELINE_PART) & (rows.split < splits)]
    return pd.concat([base, rows[(rows.part == PROBES_PART) & (rows.recipe != BASELINE)]], ignore_index=True)


def protocol(rows: pd.DataFrame) -> pd.DataFrame:
    """The baseline's runs, those of the protocol variants and those of the reseeded baseline
    (ktlib.analysis.verdicts.variant_changes compares them)."""
    return rows[rows.part.isin([BASELINE_PART, *VARIANTS, RESEEDED_PART])]


def spreads(plan: Plan) -> pd.DataFrame:
    """Each level's spread per split and recipe, in the baseline's and the probes' sweeps (the probes' copy of the
    baseline's recipe left out): a level whose output barely varies passes little of the image on to the layers
    that train."""
    table = plan.spreads((BASELINE_PART, PROBES_PART)).drop(columns="part")
    return table.drop_duplicates(["split", "recipe", "n"], ignore_index=True)


# ---------------------------------------------------------------- the study notebook's sections: (glued values, shown)

def run_section(plan: Plan, rows: pd.DataFrame, wall_seconds: float) -> tuple[dict, pd.DataFrame]:
    """How many runs over how many splits, how long they took, where they came from; the runs per part and recipe."""
    values = {"study_runs": len(rows), "study_splits": plan.counts["splits"],
              "variant_splits": plan.counts["variant_splits"], "budget_epochs": BUDGET_EPOCHS,
              "patience_steps": PATIENCE_STEPS, "study_wall_minutes": wall_seconds / 60,
              "study_training_hours": tables.training_hours(rows, plan.cfg.engine),
              "study_provenance": tables.where_computed(rows)}
    return values, rows.groupby(["part", "recipe"]).size().unstack("recipe", fill_value=0)


def sources_section(plan: Plan):
    """Each sweep's source net, and the baseline's held-out accuracy over the splits."""
    nets = plan.sources()
    baseline = nets[nets.part == BASELINE_PART]
    values = {f"held_out_{name}": float(100 * getattr(baseline.held_out_accuracy, name)())
              for name in ("mean", "min", "max")}
    return values, nets.drop(columns="state_sha256").style.format({"train_accuracy": "{:.4f}",
                                                                   "held_out_accuracy": "{:.4f}"})


def eligibility_section(plan: Plan) -> tuple[dict, pd.DataFrame]:
    """Which classes have the images to be a source class, and which only a target."""
    cfg = plan.cfg
    emnist, _ = data.opened(cfg.data_dir)
    source_ok, target_ok = data.eligible(emnist, cfg.source_per_class, max(cfg.sizes), cfg.test_per_class)
    chars = lambda labels: "".join(emnist.mapping[c] for c in labels)
    only = [c for c in target_ok if c not in source_ok]
    values = {"source_per_class": cfg.source_per_class, "target_train_per_class": max(cfg.sizes),
              "test_per_class": cfg.test_per_class, "source_eligible": chars(source_ok),
              "source_eligible_count": len(source_ok), "target_eligible_count": len(target_ok),
              "target_only": chars(only), "target_only_count": len(set(target_ok) - set(source_ok))}
    return values, pd.DataFrame({"can be a source": [chars(source_ok)], "only a target": [chars(only)]})


# ---------------------------------------------------------------- the controls notebook's sections

@dataclass
class Read:
    """The study's record, read once, and what its sections share: the baseline's runs, every recipe on the probe
    splits, the interval method the coverage simulation chooses, and the intervals of the controls."""
    plan: Plan
    rows: pd.DataFrame

    @classmethod
    def of(cls, plan: Plan) -> "Read":
        return cls(plan, plan.runs())

    @cached_property
    def baseline(self) -> pd.DataFrame:
        return self.rows[self.rows.part == BASELINE_PART]

    @cached_property
    def probes(self) -> pd.DataFrame:  # every recipe, on the splits where all ran
        return with_probes(self.rows, self.plan.counts["variant_splits"])

    @cached_property
    def nets(self) -> pd.DataFrame:  # the baseline's source nets, by split
        return self.plan.sources().query(f"part == '{BASELINE_PART}'").set_index("split")

    @property
    def boot(self) -> int:  # one seed: every table resamples the same splits and trials
        return self.plan.seed(Purpose.BOOTSTRAP)

    @property
    def spots(self) -> dict[str, tuple[int, int]]:  # the cells the book quotes: n = 5 and 3, k = 1 and 40
        return controls.spots(self.plan.cfg.levels, self.plan.cfg.sizes)

    @cached_property
    def coverage(self) -> pd.DataFrame:
        return intervals.coverage(self.plan.seed(Purpose.COVERAGE))

    @cached_property
    def method(self) -> str:
        return intervals.chosen_method(self.coverage)

    def interval_table(self, rows: pd.DataFrame, recipes, parts: tuple[str, ...]) -> pd.DataFrame:
        """Every statistic of the controls over the splits of `rows`, on intervals that also draw the classes again
        (the test predictions of `parts` give each run's accuracy per class)."""
        cube = Cube.of(rows, list(recipes)).with_classes(self.predictions(parts))
        return controls.interval_table(cube, intervals.CROSSED, self.plan.draws, self.boot)

    @cached_property
    def stored_predictions(self) -> dict[str, dict]:  # the baseline's and the probes', read once
        return {part: self.plan.predictions(part) for part in (BASELINE_PART, PROBES_PART)}

    def predictions(self, parts: tuple[str, ...]) -> dict[int, tuple]:
        """Per split, the test predictions of these parts' runs together (Plan.predictions; they share the split's
        test images)."""
        found = [self.stored_predictions[part] for part in parts]
        out = {}
        for split in found[0]:
            each = [f[split] for f in found if split in f]
            out[split] = (pd.concat([e[0] for e in each], ignore_index=True), np.concatenate([e[1] for e in each]),
                          each[0][2], each[0][3])
        return out

    @cached_property
    def table(self) -> pd.DataFrame:
        return self.interval_table(self.baseline, CORE, (BASELINE_PART,))

    @cached_property
    def probe_table(self) -> pd.DataFrame:
        return self.interval_table(self.probes, STUDY, (BASELINE_PART, PROBES_PART))

    @cached_property
    def readouts(self) -> pd.DataFrame:
        return self.plan.readouts()

    @cached_property
    def readout_table(self) -> pd.DataFrame:
        baseline = self.readouts[self.readouts.part == BASELINE_PART]
        return controls.readout_intervals(baseline, self.method, self.plan.draws, self.boot)

    @cached_property
    def cube(self) -> Cube:  # with the readouts on pixels, and each run's accuracy per class, for the claims
        readouts = self.readouts[self.readouts.part == BASELINE_PART]
        return contrasts.cube(self.baseline, self.plan.cfg.n_classes, CORE, readouts).with_classes(
            self.predictions((BASELINE_PART,)))

    def counts(self) -> dict:
        return {"draws": self.plan.draws, "splits_read": self.baseline.split.nunique(),
                "probe_splits": self.probes.split.nunique()}


def crossed_coverage_section(r: Read):
    """The coverage of intervals over splits alone and over splits and a new draw of the classes, simulated at the
    study's shape: its splits, trials, target classes per split and the pool they were drawn from."""
    S, T = r.cube.shape
    sim = intervals.crossed_coverage(r.plan.seed(Purpose.COVERAGE), S, T, r.plan.cfg.n_classes,
                                     len(r.cube.class_names), reps=intervals.COVERAGE_REPS // 2)
    table = sim.pivot_table(index="scenario", columns="method", values="coverage", sort=False)
    cover = sim.set_index(["scenario", "method"]).coverage
    values = {"class_pool": len(r.cube.class_names), "crossed_reps": intervals.COVERAGE_REPS // 2,
              "target_classes_per_split": r.plan.cfg.n_classes,
              "crossed_worst": float(table[intervals.CROSSED].min()),
              "crossed_worst_scenario": str(table[intervals.CROSSED].idxmin()),
              "splits_only_classes": float(cover.loc[("classes vary most", intervals.SPLITS_ONLY)]),
              "crossed_classes": float(cover.loc[("classes vary most", intervals.CROSSED)])}
    styled = table.style.format("{:.3f}")
    values["crossed_coverage"] = styled
    return values, styled, f"coverage, splits and classes:\n{table.round(2).to_string()}"


def coverage_section(r: Read):
    """The simulated coverage of each interval method, and the method the rule picks."""
    sim = r.coverage
    table = sim.pivot_table(index=["splits", "scenario"], columns="method", values="coverage", sort=False)
    skewed = sim.set_index(["splits", "scenario", "method"]).coverage
    nested = sim[sim.method == "percentile, splits then trials"]  # this book's first method
    styled = table.style.format("{:.3f}", na_rep="")
    return {"interval_method": r.method, "coverage_reps": intervals.COVERAGE_REPS,
            "t_skewed_coverage": float(skewed.loc[(10, "skewed splits", "t")]),
            "nested_worst_10": float(nested[nested.splits == 10].coverage.min()),
            "nested_worst_3": float(nested[nested.splits == 3].coverage.min()),
            "trials_percentile_worst": float(sim[sim.method == "percentile, trials"].coverage.max()),
            "coverage_table": styled}, styled, f"the interval method: {r.method}\n{table.round(2).to_string()}"


def figure2(r: Read):
    """The paper's Figure 2 over the class splits, with 95% intervals."""
    fig = plots.figure2_intervals(controls.of_kind(r.table, "cell"), tables.recipe_runs(r.baseline, BASELINE))
    return {"fig2_splits": fig}, fig


def spreads_section(r: Read):
    """Each level's spread on the validation images: per recipe on the probe splits, where the rule chooses the
    control run on every split; and for the recipes run on every split, over all of them, with the fewest a split
    gave."""
    found = spreads(r.plan)
    probes = found[found.split < r.plan.counts["variant_splits"]]
    table = probes.pivot_table(index="recipe", columns="level", values="spread", sort=False)
    every = found[found.recipe.isin(CORE)].pivot_table(index=["recipe", "split"], columns="level", values="spread")
    c5 = every["C5"].unstack("recipe")
    values = {"lecun_c5_spread": float(table.loc["random-lecun", "C5"]),
              "matched_c5_spread": float(table.loc[MATCHED_CONTROL, "C5"]),
              "trained_c5_spread": float(table.loc[BASELINE, "C5"]),
              "matched_c5_spread_all": float(c5[MATCHED_CONTROL].mean()),
              "matched_c5_spread_least": float(c5[MATCHED_CONTROL].min()),
              "trained_c5_spread_all": float(c5[BASELINE].mean()), "spread_splits_all": len(c5),
              "chosen_control": controls.chosen_control(probes)}
    check = (f"{table.round(3).to_string()}\nthe random control run on every split is the one whose spread on the "
             f"validation images is nearest the trained net's: {values['chosen_control'] == MATCHED_CONTROL}")
    return values, table.style.format("{:.4f}"), c5.round(3), check


def instruments_section(r: Read):
    """Every recipe as an instrument on every split: dead runs, epoch-cap hits; the cells where any occurred."""
    everything = with_probes(r.rows, r.plan.counts["splits"])  # every recipe, every split
    found = controls.instruments(everything, r.plan.cfg.n_classes)
    values = controls.instrument_values(found, everything, [n for n in r.plan.cfg.levels if n > 0][-1])
    values |= controls.most_capped(found, CORE)
    return values, controls.dead_by_recipe(found), found[(found.dead > 0) | (found.dead_before > 0) | (found.cap > 0)]


def recipes_figure(r: Read):
    fig = plots.recipe_panels(controls.of_kind(r.table, "cell"))
    return {"fig_recipes": fig}, fig


def knowledge_section(r: Read) -> tuple[dict, pd.DataFrame]:
    """Frozen minus each control over every split; what freezing a control's layers does by itself, in a sentence."""
    values = {glue_key("capacity", control): controls.capacity_sentence(r.table, control, min(r.plan.cfg.sizes))
              for control in controls.controls(CORE)}
    return values, interval_texts(controls.of_kind(r.table, "knowledge")).unstack("control")


def probe_knowledge(r: Read) -> pd.DataFrame:
    return interval_texts(controls.of_kind(r.probe_table, "knowledge")).unstack("control")


def readouts_section(r: Read) -> tuple[dict, pd.DataFrame]:
    """The training-free readouts' accuracy per recipe, n and k; LeCun-scale random features against the pixels."""
    probe = controls.readout_intervals(with_probes(r.readouts, r.plan.counts["variant_splits"]), r.method,
                                       r.plan.draws, r.boot)
    read = interval_texts(controls.of_kind(probe, "readout"), ".3f").xs("nearest-mean", level="readout")
    values = {"baseline_sentence": controls.baseline_sentence(r.table, r.readout_table, min(r.plan.cfg.sizes))}
    for end in ("small", "large"):  # LeCun-scale random features against the pixels, over the probe splits
        n, k = r.spots[f"top_{end}"]
        values |= {f"lecun_readout_top_{end}": read.loc[("random-lecun", n, k)],
                   f"pixels_readout_{end}": read.loc[(BASELINE, 0, k)]}
    return values, interval_texts(controls.of_kind(r.readout_table, "readout"), ".3f").unstack("recipe")


def knowledge_ways(r: Read, fmt: str = "+.3f") -> pd.DataFrame:
    """The knowledge term from trained runs and from each readout, at the cells the book quotes."""
    return controls.knowledge_at(r.table, r.readout_table, list(r.spots.values()), fmt=fmt)


def knowledge_ways_section(r: Read) -> tuple[dict, pd.DataFrame]:
    at = knowledge_ways(r)
    return controls.knowledge_values(at, r.spots), at


def agreement_section(r: Read):
    """Whether each readout agrees in direction with the trained runs, per control, n and k."""
    found = controls.agreement(r.table, r.readout_table)
    rules = [c for c in found.columns if c.endswith("agrees")]
    values = {"agree_cells": len(found), **{glue_key(*rule.split(" ")): int(found[rule].sum()) for rule in rules}}
    check = ("cells where each readout agrees in direction with the trained runs: "
             f"{ {rule: f'{int(found[rule].sum())} of {len(found)}' for rule in rules} }")
    return values, found[~found[rules].all(axis=1)], check


def tuning_section(r: Read):
    """The fine-tuned recipes' mean validation accuracy above n=0 (what the rule reads) beside their test accuracy,
    and whether the rate run on every split is the one the rule picks on the validation images."""
    above = r.probes[r.probes.n > 0]
    means = above.groupby("recipe")[["validation_accuracy", "test_accuracy"]].mean()
    means = means.loc[controls.tuned(means.index)].rename(columns=lambda c: f"mean {c.replace('_', ' ')}, n >= 1")
    chosen = controls.chosen_rate(r.probes)
    values = {"chosen_rate": chosen, "chosen_rate_is_tuned": "is" if chosen == TUNED else "is not"}
    return values, means, f"the fine-tuning run on every split is the one the rule picks: {chosen == TUNED}"


def tuning_table(r: Read) -> pd.DataFrame:
    return interval_texts(controls.of_kind(r.probe_table, "tuning")).unstack("recipe")


def forgetting_section(r: Read):
    """What each fine-tuned recipe forgets of the source task, against the source net's own held-out accuracy: every
    rate on the probe splits, and the rate run on every split over all of them."""
    held_out = r.nets.held_out_accuracy
    lost = controls.of_kind(controls.forgetting_intervals(r.probes, held_out, r.method, r.plan.draws, r.boot),
                            "forgetting")
    every = controls.of_kind(controls.forgetting_intervals(r.baseline[r.baseline.recipe.isin([BASELINE, TUNED])],
                                                           held_out, r.method, r.plan.draws, r.boot), "forgetting")
    values = controls.forgetting_values(lost, r.spots)
    values |= {f"{key}_all": text for key, text in controls.forgetting_values(every, r.spots).items()}
    values["forgetting_caps"] = controls.forgetting_caps(r.probes, r.spots)
    return (values, interval_texts(lost).unstack("recipe"), interval_texts(every).unstack("recipe"),
            interval_texts(lost, "+.2f").unstack("recipe").to_string())


def split0_section(r: Read):
    """The paper's sweep (a plainly trained source net) against the study's split 0 (an engine-trained one): whether
    the sweep's claims get the same verdicts (how far the runs moved is the record wing's comparison,
    ktlib.record.plans.Plan.against_paper_sweep)."""
    where = Path(r.plan.cfg.results_dir)
    _, paper_rows = read_results(where / RESULTS_FILE)
    split0 = tables.recipe_runs(r.baseline[r.baseline.split == 0], BASELINE)
    readouts = r.readouts[(r.readouts.part == BASELINE_PART) & (r.readouts.split == 0)].drop(columns="split")

    def one_split(runs, read):  # the sweep's claims on one split's runs, as the variance notebook judges them
        cube = contrasts.cube(runs.drop(columns="split", errors="ignore"), r.plan.cfg.n_classes, [BASELINE], read)
        return verdicts.within_splits(cube, claims.SWEEP_CLAIMS)[1].iloc[0]

    both = pd.DataFrame({"paper sweep (plain source net)": one_split(paper_rows, read_readouts(where)[1]),
                         "study split 0 (engine source net)": one_split(split0, readouts)})
    same = both.iloc[:, 0] == both.iloc[:, 1]
    return ({"split0_same_verdicts": int(same.sum()), "split0_claims": len(both)}, both,
            f"the same verdicts, whichever trained the source net: {bool(same.all())}")


def verdicts_section(r: Read):
    """Each claim on every split, and over the splits: judged on intervals that also cover a new draw of the classes
    (CROSSED), beside the verdict on the splits alone; the study's own claims on the paper's split."""
    which = {**claims.SWEEP_CLAIMS, **claims.STUDY_CLAIMS}
    by_split, split_verdicts = verdicts.within_splits(r.cube, which)
    over, over_verdicts = verdicts.across_splits(r.cube, which, intervals.CROSSED, r.plan.draws, r.boot)
    alone, alone_verdicts = verdicts.across_splits(r.cube, which, intervals.SPLITS_ONLY, r.plan.draws, r.boot)
    study_only = list(claims.STUDY_CLAIMS)  # their verdict on the paper's split comes from here, not notebook 03
    shared = r.cube.shared_classes()
    values = verdicts.claim_values(over, over_verdicts, "_over")
    values |= {f"{key}_splits_verdict": v for key, v in alone_verdicts.items()}
    values |= {f"{key}_tally": verdicts.tally(column, independent=False) for key, column in split_verdicts.items()}
    values |= verdicts.claim_values(by_split[by_split.split == 0], split_verdicts.loc[0, study_only])
    values |= {"shared_targets_pair": shared, "crossed_method": intervals.CROSSED,
               "splits_method": intervals.SPLITS_ONLY}
    shown = pd.DataFrame({"paper's split": split_verdicts.loc[0], "splits where it holds": split_verdicts.apply(
        verdicts.tally, independent=False), "over splits and classes": over_verdicts,
        "over splits alone": alone_verdicts})
    widening = ((over.high - over.low) / (alone.high - alone.low).to_numpy())[over.by_class.astype(bool)]
    values |= {"crossed_widening_min": float(widening.min()), "crossed_widening_max": float(widening.max())}
    check = (f"{split_verdicts.T.to_string()}\n{shown.iloc[:, 2:].to_string()}\ntarget classes a pair of splits "
             f"shares: {shared:.2f}; the class redraw widens intervals {widening.min():.2f} to {widening.max():.2f} "
             f"times")
    return values, shown, verdicts.shown(over), check


def level_steps_section(r: Read) -> tuple[dict, pd.DataFrame]:
    """Each retained level's own step at every k, over splits and a new draw of the classes, as a table and in
    words."""
    steps = verdicts.level_steps(r.cube, (intervals.CROSSED, r.plan.draws, r.boot))
    return ({"level_steps_over_sentence": verdicts.steps_sentence(steps)},
            steps.drop(columns="split").set_index("step"))


def best_level_section(r: Read):
    """How often each n is chosen (best on the validation images) at the largest k, over bootstrap draws of splits
    and trials."""
    k_large, top = max(r.cube.sizes), max(r.cube.levels)
    shares = contrasts.best_level_shares(r.cube, k_large, r.plan.draws, r.boot)
    return {"k_largest_study": k_large,
            "best_n_shares": ", ".join(f"n = {n} in {s:.0%} of draws" for n, s in shares.items()),
            "top_train_large_study": float(r.cube.at("train_accuracy", top, k_large).mean())}, shares


def maturity_section(r: Read):
    """Per split: the k=1 gain of the top n beside its source net's epochs and held-out accuracy, with Spearman's
    rho."""
    nets = r.nets
    gain = pd.Series(contrasts.contrasts_k1_rises(r.cube)[0].per_split(r.cube), index=r.cube.splits_of_rows())
    table = pd.DataFrame({"k=1 gain of n=5": gain, "source epochs": nets.epochs,
                          "held-out accuracy": nets.held_out_accuracy})
    values = {}
    for name, column in (("rho_epochs", "source epochs"), ("rho_held_out", "held-out accuracy")):
        rho, low, high = intervals.spearman_interval(table[column], table["k=1 gain of n=5"])
        values[name] = f"{rho:+.2f} [{low:+.2f}, {high:+.2f}]"
    return values, table


def variants_section(r: Read):
    """Whether any of our protocol's choices decides a verdict: each variant's verdicts against the baseline's on the
    splits where both ran, beside the same protocol with other seeds (the rate at which verdicts move by chance);
    and the epoch-cap hits of each."""
    frozen = protocol(r.rows)
    frozen = frozen[(frozen.recipe == BASELINE) & (frozen.split < r.plan.counts["variant_splits"])]
    cubes = {variant: contrasts.cube(runs, r.plan.cfg.n_classes, [BASELINE], r.readouts[r.readouts.part == variant])
             for variant, runs in frozen.groupby("part")}
    changes = verdicts.variant_changes(cubes, claims.SWEEP_CLAIMS)
    caps = frozen[frozen.stopped_by == "cap"].groupby("part").size()
    values = {"variant_splits_read": r.rows[r.rows.part.isin(VARIANTS)].split.nunique(),
              **verdicts.variant_values(changes),
              "caps_patience_steps": int(caps.get("patience-steps", 0)),  # the variant against ours
              "caps_frozen_baseline_variant_splits": int(caps.get(BASELINE_PART, 0))}
    rates = verdicts.flip_rates(changes)
    return values, changes, rates, f"{changes[['variant', 'claim', 'variant verdicts']].to_string(index=False)}\n" \
                                   f"{rates.to_string()}"
