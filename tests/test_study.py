"""The study's analysis on synthetic runs whose answer is known: intervals, controls, claims by split, confusions."""
import itertools

import numpy as np
import pandas as pd
import pytest

from ktlib.analysis import claims, confusions, contrasts, controls, verdicts
from ktlib.analysis.intervals import Cube, estimate
from ktlib.recipes import BASELINE, TUNED
from ktlib.record.studies import RESEEDED_PART
from ktlib.record.tables import recipe_runs, training_hours

CORE = ["frozen", TUNED, "random-matched", "shuffled"]


def study_rows(acc, splits=4, trials=5, levels=range(6), sizes=(1, 5, 10, 20, 40), recipes=CORE):
    """Tidy study rows with test accuracy acc(recipe, n, k, split, trial); the n=0 runs once, as stored."""
    out = []
    for split, trial, n, k in itertools.product(range(splits), range(trials), levels, sizes):
        for recipe in (recipes if n > 0 else [BASELINE]):
            a = acc(recipe, n, k, split, trial)
            out.append({"split": split, "trial": trial, "recipe": recipe, "n": n, "k": k, "test_accuracy": a,
                        "validation_accuracy": a, "train_accuracy": min(1.0, a + 0.3), "epochs": 100 - 10 * n,
                        "seconds": 1.0, "part": "baseline", "test_curve": f"1:0 {2 ** (10 - n)}:{a}"})
    return pd.DataFrame(out)


def test_the_n0_runs_are_shared_by_every_recipes_curve():
    rows = study_rows(lambda r, n, k, s, t: 0.5, splits=1, levels=[0, 5], sizes=[1])
    for recipe in CORE:
        c = recipe_runs(rows, recipe)
        assert set(c.recipe) == {recipe} and (c.n == 0).sum() == 5 and (c.n == 5).sum() == 5


def test_an_interval_spans_the_spread_between_splits_not_only_between_trials():
    """Trials agree within a split, splits differ: resampling trials alone would give a zero-width interval."""
    rows = study_rows(lambda r, n, k, s, t: 0.3 + 0.1 * s, levels=[0, 1], sizes=[1], recipes=["frozen"])
    for method in ("t", "percentile, splits then trials"):
        table = estimate(Cube.of(rows), {"mean": lambda t: float(t["frozen"].test.loc[0, 1])}, method, 500, 0)
        row = table.loc["mean"]
        assert row.estimate == pytest.approx(0.45)
        assert row.low < 0.4 and row.high > 0.5 and row.low >= 0.2 and row.high <= 0.7


def test_a_paired_difference_keeps_its_pairing_through_the_resampling():
    """n=1 is n=0 plus 0.05 in every split and trial, however noisy n=0 is: the difference's interval is
    a point."""
    rng = np.random.default_rng(0)
    noise = {(s, t): rng.normal(0, 0.05) for s in range(4) for t in range(5)}
    rows = study_rows(lambda r, n, k, s, t: 0.5 + noise[s, t] + 0.05 * n, levels=[0, 1], sizes=[1],
                      recipes=["frozen"])
    table = controls.of_kind(controls.interval_table(Cube.of(rows), "t", 300, 1), "gain").loc[("frozen", 1, 1)]
    assert table.estimate == pytest.approx(0.05) and table.high - table.low < 1e-9
    cell = controls.of_kind(controls.interval_table(Cube.of(rows), "t", 300, 1), "cell").loc[("frozen", 0, 1)]
    assert cell.high - cell.low > 0.02


def test_the_same_seed_gives_the_same_intervals():
    rows = study_rows(lambda r, n, k, s, t: 0.3 + 0.01 * ((s * 7 + t * 3 + n) % 5), levels=[0, 1], sizes=[1, 5])
    a, b = (controls.interval_table(Cube.of(rows), "percentile, splits then trials", 100, 7) for _ in range(2))
    assert a.equals(b)


def knowledge_rows(split_fails: int | None = None):
    """Frozen transfer helps at every n, the random control hurts, shuffled does nothing, fine-tuning helps most; in
    one split (if given) accuracy falls with n, so the claims fail there."""
    def acc(recipe, n, k, s, t):
        base = {1: 0.3, 5: 0.5, 10: 0.6, 20: 0.65, 40: 0.7}[k] + 0.001 * t
        if s == split_fails:
            return base - 0.01 * n
        per_level = {"frozen": 0.02, "random-matched": -0.02, "shuffled": 0, TUNED: 0.04}[recipe]
        return base + per_level * n * (1 if k == 1 else 0.3)
    return study_rows(acc)


def test_the_controls_separate_knowledge_from_capacity():
    table = controls.interval_table(Cube.of(knowledge_rows()), "t", 200, 0)
    knowledge = controls.of_kind(table, "knowledge")
    assert knowledge.loc[("random-matched", 5, 1)].estimate == pytest.approx(0.2)  # frozen +0.10, control -0.10
    assert knowledge.loc[("shuffled", 5, 1)].estimate == pytest.approx(0.1)
    gain = controls.of_kind(table, "gain")
    assert gain.loc[("random-matched", 5, 1)].estimate == pytest.approx(-0.1)
    assert controls.of_kind(table, "tuning").loc[(TUNED, 5, 1)].estimate == pytest.approx(0.1)


def test_each_claim_is_judged_on_each_split_and_tallied():
    rows = knowledge_rows(split_fails=2)
    which = {"k1_rises": claims.SWEEP_CLAIMS["k1_rises"], "fine_tuning": claims.STUDY_CLAIMS["fine_tuning"]}
    _, by_split = verdicts.within_splits(contrasts.cube(rows, 20, CORE), which)
    assert list(by_split.k1_rises) == ["holds", "holds", "fails", "holds"]
    assert verdicts.tally(by_split.k1_rises) == "holds in 3 of 4 splits [0.19, 0.99]; fails in 1"
    assert by_split.fine_tuning.loc[0] == "holds"  # best against best: +0.1 at k=1, +0.03 elsewhere, all > 0.02
    assert verdicts.tally(by_split.k1_rises, independent=False) == "holds in 3 of 4 splits; fails in 1"


def test_over_splits_every_claim_gets_a_verdict_from_its_intervals():
    rows = knowledge_rows(split_fails=3)
    which = {**claims.SWEEP_CLAIMS, **claims.STUDY_CLAIMS}
    table, over = verdicts.across_splits(contrasts.cube(rows, 20, CORE), which, "t", 200, 0)
    assert list(over.index) == list(which)
    assert over["k1_rises"] == "undecided"  # three splits rise, one is flat: four values, wide t intervals
    assert set(table.outcome) <= {verdicts.BEYOND, verdicts.SHORT, verdicts.STRADDLES}


def test_a_variant_that_changes_a_verdict_is_counted():
    rows = knowledge_rows()
    variant = knowledge_rows(split_fails=0)
    variant = variant[(variant.split == 0) & (variant.recipe == BASELINE)]
    cubes = {"baseline": contrasts.cube(rows, 20, [BASELINE]), "budget": contrasts.cube(variant, 20, [BASELINE])}
    changes = verdicts.variant_changes(cubes, {"k1_rises": claims.SWEEP_CLAIMS["k1_rises"]})
    assert changes.set_index("claim").loc["k1_rises", "changed"] == 1
    assert changes.set_index("claim").loc["k1_rises", "changed on"] == [0]


def test_a_group_of_trials_costs_its_slowest_run_once_and_plain_runs_add_up():
    rows = study_rows(lambda r, n, k, s, t: 0.5, splits=1, trials=3, levels=[0], sizes=[1, 5])
    rows = rows.sort_values(["k", "trial"]).reset_index(drop=True)  # k=1's three trials, then k=5's
    rows["seconds"] = [3600.0, 7200.0, 1800.0, 360.0, 720.0, 180.0]
    assert training_hours(rows, "native") == pytest.approx(2.0 + 0.2)
    assert training_hours(rows, "plain") == pytest.approx(3.5 + 0.35)


# ---------------------------------------------------------------- errors

def test_the_confusion_matrix_rows_are_shares_of_each_true_class():
    labels = np.array([0, 0, 1, 1, 2, 2])
    predicted = np.array([[0, 1, 1, 1, 2, 0], [0, 0, 1, 1, 2, 2]])
    m = confusions.confusion(predicted, labels, "abc")
    assert np.allclose(m.sum(axis=1), 1)
    assert m.loc["a", "b"] == 0.25 and m.loc["c", "c"] == 0.75
    assert confusions.per_class(predicted, labels, "abc").to_dict() == {"a": 0.75, "b": 1.0, "c": 0.75}


def test_case_pairs_and_the_errors_that_swap_case():
    classes = "IKikw"
    assert confusions.case_pairs(classes) == [("I", "i"), ("K", "k")]
    labels = np.array([0, 1, 2, 3, 4])                 # I K i k w
    predicted = np.array([[2, 1, 0, 4, 4]])            # I->i, i->I swapped; k->w a plain error
    s = confusions.case_summary(predicted, labels, classes)
    assert s["pairs"] == 2 and s["pair_classes"] == 4
    assert s["errors_to_other_case"] == pytest.approx(2 / 3)
    assert s["lost_to_case"] == pytest.approx(2 / 5) and s["other_accuracy"] == 1.0


def test_the_case_table_summarises_every_split_k_and_n_and_its_values_name_the_paper_splits_pairs():
    keys = pd.DataFrame({"n": [0, 5], "k": [1, 1], "trial": [0, 0], "recipe": ["frozen", "frozen"]})
    labels = np.array([0, 1, 2, 3, 4])                 # I K i k w
    predicted = np.array([[2, 1, 0, 4, 4], [0, 1, 2, 3, 4]])  # n=0: two swaps and a plain error; n=5: all right
    stored = {0: (keys, predicted, labels, "IKikw"), 1: (keys, predicted[::-1].copy(), labels, "abcde")}
    cases = confusions.case_table(stored, [1], [0, 5], "frozen")
    assert cases[["split", "k", "n"]].values.tolist() == [[0, 1, 0], [0, 1, 5], [1, 1, 0], [1, 1, 5]]
    values = confusions.case_values(cases, "IKikw")
    assert values["paper_pairs"] == "I/i, K/k" and values["splits_with_pairs"] == 1 and values["splits_read"] == 2
    assert values["lost_max"] == pytest.approx(2 / 5 / 2)  # n=0 at k=1: 2/5 on split 0, none on split 1
    assert values["lost_min"] == 0.0


def test_the_instruments_values_count_dead_runs_and_caps_by_recipe_and_level():
    rows = pd.DataFrame({"recipe": ["frozen", "frozen", "random-lecun", "fine-tuned-lr0.1"], "n": [5, 3, 5, 3],
                         "k": [1] * 4, "split": [0, 0, 0, 1], "train_accuracy": [1.0, 0.1, 0.1, 1.0],
                         "stopped_by": ["fit", "cap", "plateau", "cap"], "epochs": [50, 90, 40, 60],
                         "epoch_rule_epochs": [30, float("nan"), 40, 20], "epoch_rule_train_accuracy": [1.0] * 4})
    values = controls.instrument_values(controls.instruments(rows, classes=20), rows, top=5)
    assert (values["dead_now"], values["dead_lecun"], values["dead_others"], values["dead_frozen"]) == (2, 1, 1, 1)
    assert values["dead_fine_tuned_lr01"] == 0  # a recipe's name made a glue key
    assert (values["caps"], values["caps_top"], values["caps_others_below"], values["caps_lecun_below"]) == (2, 0, 2, 0)
    assert (values["epoch_rule_sooner"], values["epoch_rule_sooner_paper_frozen"]) == (2, 1)


def test_the_quoted_cells_are_the_top_and_middle_levels_at_the_ends_of_k():
    assert controls.spots([0, 1, 2, 3, 4, 5], [1, 5, 10, 20, 40]) == {
        "top_small": (5, 1), "top_large": (5, 40), "mid_small": (3, 1), "mid_large": (3, 40)}
    assert set(controls.spots([0, 5], [1]).values()) == {(5, 1)}  # the smoke profile's grid


def test_a_variants_values_name_the_claims_it_changed_and_read_its_moves_against_the_reseeded_baselines():
    def variant(name, changed):
        return pd.DataFrame({"variant": name, "claim": list(claims.SWEEP_CLAIMS)[:10], "splits": "0, 1, 2",
                             "baseline": "holds, holds, holds", "variant verdicts": "holds, fails, holds",
                             "changed": changed, "changed on": [[0, 2][:c] for c in changed]})
    changes = pd.concat([variant("budget", [2] * 10), variant("one-of-n", [0] * 10),
                         variant(RESEEDED_PART, [1] + [0] * 9)], ignore_index=True)
    values = verdicts.variant_values(changes)
    assert (values["budget_changed_count"], values["one_of_n_changed"], values["one_of_n_changed_split0"]) == (
        20, "none", "none")
    assert values["budget_changed_split0"].startswith("Rises with n, ")  # the claims by their names on the page
    assert values["reseeded_flip_rate"].startswith("1 of 30, 3% [")
    assert values["variants_sentence"].startswith("The same protocol with other seeds moved 1 of 30 verdicts")
    assert values["variants_sentence"].endswith("moved more (Fisher's exact test, one-sided): there the protocol "
                                                "decides verdicts.")
    assert "budget (p = " in values["variants_sentence"] and "one-of-n" not in values["variants_sentence"]


def test_a_run_is_dead_at_twice_chance_and_the_epoch_rule_replay_counts_before():
    rows = pd.DataFrame({"recipe": ["frozen"] * 4, "n": [5] * 4, "k": [1] * 4,
                         "train_accuracy": [0.1, 0.11, 1.0, 1.0], "stopped_by": ["plateau", "plateau", "fit", "cap"],
                         "epoch_rule_train_accuracy": [0.05, 0.05, 0.05, float("nan")]})
    table = controls.instruments(rows, classes=20).loc[("frozen", 5, 1)]
    assert (table.runs, table.dead, table.dead_before, table.cap) == (4, 1, 3, 1)


def test_the_instruments_count_per_any_grouping_such_as_the_breadth_studys_sources():
    rows = pd.DataFrame({"source": ["5", "5", "39", "39"], "recipe": ["frozen", "random-matched"] * 2, "n": [5] * 4,
                         "k": [1] * 4, "train_accuracy": [1.0, 0.1, 1.0, 1.0],
                         "stopped_by": ["fit", "plateau", "cap", "fit"], "epoch_rule_train_accuracy": [1.0] * 4})
    table = controls.instruments(rows, classes=20, by=("source", "recipe"))
    assert table.index.names == ["source", "recipe"]
    assert table.loc[("5", "random-matched"), ["runs", "dead", "cap"]].tolist() == [1, 1, 0]
    assert table.loc[("39", "frozen"), ["runs", "dead", "cap"]].tolist() == [1, 0, 1]


def test_the_chosen_control_is_the_random_one_whose_spread_is_nearest_the_trained_nets():
    spreads = pd.DataFrame([{"split": 0, "n": n, "recipe": r, "spread": v * (n + 1), "images": "validation"}
                            for n in range(6) for r, v in [("frozen", 1.0), ("random-matched", 0.8),
                                                           ("random-normal", 1.5), ("random-lecun", 0.01),
                                                           ("shuffled", 1.0)]])
    assert controls.chosen_control(spreads) == "random-matched"  # shuffled is not a random control
    assert controls.chosen_control(spreads.assign(spread=lambda d: d.spread.where(d.recipe != "random-normal",
                                                                                   0.9 * (d.n + 1)))) == "random-normal"


def test_the_chosen_rate_is_the_fine_tuning_recipe_with_the_best_mean():
    rows = study_rows(lambda r, n, k, s, t: {"fine-tuned": 0.5, "fine-tuned-lr0.01": 0.52}.get(r, 0.6),
                      recipes=["frozen", "fine-tuned", "fine-tuned-lr0.01"], splits=1)
    assert controls.chosen_rate(rows) == "fine-tuned-lr0.01"  # frozen is higher, but does not fine-tune


def test_readouts_agree_in_direction_where_both_intervals_exclude_zero():
    rows = knowledge_rows()
    table = controls.interval_table(Cube.of(rows), "t", 100, 0)
    readouts = pd.concat([rows[rows.recipe != TUNED].assign(readout=rule) for rule in ("nearest-mean", "other")])
    flipped = readouts.assign(test_accuracy=lambda d: d.test_accuracy.where(
        (d.readout != "other") | (d.recipe != "random-matched"), d.test_accuracy + 0.5))
    read = controls.readout_intervals(flipped, "t", 100, 0)
    agree = controls.agreement(table, read)
    assert agree.loc[("random-matched", 5, 1), "nearest-mean agrees"]
    assert not agree.loc[("random-matched", 5, 1), "other agrees"]  # the control now reads out better
    assert agree.loc[("shuffled", 5, 1), "other agrees"]


def test_forgetting_is_the_source_accuracy_lost_with_the_runs_copied_layers():
    rows = knowledge_rows()
    rows["source_task_accuracy"] = np.where(rows.recipe == TUNED, 0.9 - 0.01 * rows.n, np.nan)
    table = controls.forgetting_intervals(rows, pd.Series(0.9, index=range(4)), "t", 100, 0)
    lost = controls.of_kind(table, "forgetting")
    assert lost.loc[(TUNED, 5, 1)].estimate == pytest.approx(0.05)
    assert set(lost.index.get_level_values("recipe")) == {TUNED}


def test_no_variant_is_said_to_move_verdicts_when_its_rate_is_within_chances():
    measured = "holds, holds, holds"
    changes = pd.DataFrame({"variant": ["budget"] * 3 + [RESEEDED_PART] * 3, "claim": ["a", "b", "c"] * 2,
                            "splits": "0, 1, 2", "baseline": [measured, measured, "not measured"] * 2,
                            "variant verdicts": "holds, fails, holds", "changed": [1, 1, 0, 1, 0, 0],
                            "changed on": [[0], [1], [], [2], [], []]})
    assert verdicts.flip_rates(changes).pairs.tolist() == [6, 6]  # a claim not measured on one side is left out
    sentence = verdicts.variants_sentence(changes)
    assert sentence.startswith("The same protocol with other seeds moved 1 of 6 verdicts (17% [")
    assert sentence.endswith("these verdicts do not show that our protocol decides them.")  # no claim moved everywhere


def test_the_training_hours_count_each_sweeps_groups_apart_whether_its_replicates_are_splits_or_orders():
    """Two sweeps (orders 0 and 1) of one part, one group each of two runs: each group takes its slower run's time."""
    rows = pd.DataFrame({"part": ["classes-5"] * 4, "order": [0, 0, 1, 1], "recipe": ["frozen"] * 4, "n": [1] * 4,
                         "k": [1] * 4, "seconds": [1800.0, 3600.0, 3600.0, 1800.0]})
    assert training_hours(rows, "native") == 2.0
    assert training_hours(rows.rename(columns={"order": "split"}), "native") == 2.0
    assert training_hours(rows, "plain") == 3.0


def test_a_claim_a_variant_moves_on_every_split_is_named_though_the_pooled_count_is_within_chance():
    measured = "holds, holds, holds"
    changes = pd.DataFrame({"variant": ["budget"] * 2 + [RESEEDED_PART] * 2, "claim": ["gap", "variance"] * 2,
                            "splits": "0, 1, 2", "baseline": measured, "variant verdicts": "fails, fails, fails",
                            "changed": [3, 0, 0, 3], "changed on": [[0, 1, 2], [], [], [0, 1, 2]]})
    assert verdicts.always_moved(changes) == {"budget": [claims.SWEEP_CLAIMS["gap"].title]}
    assert verdicts.variants_sentence(changes).endswith(
        f"budget moved {claims.SWEEP_CLAIMS['gap'].title} on every split, the reseeded baseline on fewer, so on these "
        f"splits that choice decides them.")


def test_the_forgetting_figures_say_how_many_of_their_runs_stopped_at_the_cap():
    rows = pd.DataFrame({"recipe": [TUNED] * 4 + [BASELINE] * 2, "n": [5, 5, 5, 5, 5, 5], "k": [1, 1, 40, 40, 1, 40],
                         "stopped_by": ["converged", "cap", "cap", "cap", "cap", "cap"]})
    assert controls.forgetting_caps(rows, {"top_small": (5, 1), "top_large": (5, 40)}) == \
        f"{TUNED} 1 of 2 at k = 1, 2 of 2 at k = 40"  # the frozen recipe forgets nothing: not listed


def test_the_training_hours_count_a_bundle_of_partial_recipes_as_one_group():
    """The choosers of one level, m and k train side by side (ktlib.compute.executors.bundle): their group takes its
    slowest run's time, once."""
    rows = pd.DataFrame({"part": ["partial-C5"] * 3, "split": [0] * 3, "n": [5] * 3, "k": [1] * 3,
                         "recipe": ["C5-keep30-mi", "C5-keep30-random0", "C5-keep60-mi"],
                         "seconds": [3600.0, 1800.0, 1800.0]})
    assert training_hours(rows, "native") == 1.5
