"""The study's analysis on synthetic runs whose answer is known: intervals, controls, claims by split, errors."""
import itertools

import numpy as np
import pandas as pd
import pytest

from ktlib import claims as C
from ktlib import controls, errors
from ktlib.intervals import Cube, bootstrap, curve
from ktlib.transfer import BASELINE, RECIPES


def study_rows(acc, splits=4, trials=5, levels=range(6), sizes=(1, 5, 10, 20, 40), recipes=RECIPES):
    """Tidy study rows with test accuracy acc(recipe, n, k, split, trial); the n=0 runs once, as stored."""
    out = []
    for split, trial, n, k in itertools.product(range(splits), range(trials), levels, sizes):
        for recipe in (recipes if n > 0 else [BASELINE]):
            a = acc(recipe, n, k, split, trial)
            out.append({"split": split, "trial": trial, "recipe": recipe, "n": n, "k": k, "test_accuracy": a,
                        "train_accuracy": min(1.0, a + 0.3), "epochs": 100 - 10 * n, "seconds": 1.0,
                        "variant": "baseline"})
    return pd.DataFrame(out)


def test_the_n0_runs_are_shared_by_every_recipes_curve():
    rows = study_rows(lambda r, n, k, s, t: 0.5, splits=1, levels=[0, 5], sizes=[1])
    for recipe in RECIPES:
        c = curve(rows, recipe)
        assert set(c.recipe) == {recipe} and (c.n == 0).sum() == 5 and (c.n == 5).sum() == 5


def test_an_interval_spans_the_spread_between_splits_not_only_between_trials():
    """Trials agree within a split, splits differ: resampling trials alone would give a zero-width interval."""
    rows = study_rows(lambda r, n, k, s, t: 0.3 + 0.1 * s, levels=[0, 1], sizes=[1], recipes=["frozen"])
    table = bootstrap(Cube.of(rows), {"mean": lambda t: float(t["frozen"].test.loc[0, 1])}, 500, 0).loc["mean"]
    assert table.estimate == pytest.approx(0.45)
    assert table.low < 0.4 and table.high > 0.5 and table.low >= 0.3 and table.high <= 0.6


def test_a_paired_difference_keeps_its_pairing_through_the_resampling():
    """n=1 is n=0 plus 0.05 in every split and trial, however noisy n=0 is: the difference's interval is
    a point."""
    rng = np.random.default_rng(0)
    noise = {(s, t): rng.normal(0, 0.05) for s in range(4) for t in range(5)}
    rows = study_rows(lambda r, n, k, s, t: 0.5 + noise[s, t] + 0.05 * n, levels=[0, 1], sizes=[1],
                      recipes=["frozen"])
    table = controls.part(controls.intervals(Cube.of(rows), {}, 300, 1), "gain").loc[("frozen", 1, 1)]
    assert table.estimate == pytest.approx(0.05) and table.high - table.low < 1e-9
    cell = controls.part(controls.intervals(Cube.of(rows), {}, 300, 1), "cell").loc[("frozen", 0, 1)]
    assert cell.high - cell.low > 0.02


def test_the_same_seed_gives_the_same_intervals():
    rows = study_rows(lambda r, n, k, s, t: 0.3 + 0.01 * ((s * 7 + t * 3 + n) % 5), levels=[0, 1], sizes=[1, 5])
    a, b = (controls.intervals(Cube.of(rows), C.SWEEP_CLAIMS, 100, 7) for _ in range(2))
    assert a.equals(b)


def knowledge_rows(split_fails: int | None = None):
    """Frozen transfer helps at every n, random-frozen hurts, fine-tuning helps most; in one split (if
    given) the curves are flat, so the claims fail there."""
    def acc(recipe, n, k, s, t):
        base = {1: 0.3, 5: 0.5, 10: 0.6, 20: 0.65, 40: 0.7}[k] + 0.001 * t
        if s == split_fails:
            return base
        bonus = {"frozen": 0.02, "random-frozen": -0.02, "fine-tuned": 0.04}[recipe] * n * (1 if k == 1 else 0.3)
        return base + bonus
    return study_rows(acc)


def test_the_controls_separate_knowledge_from_capacity():
    table = controls.intervals(Cube.of(knowledge_rows()), {}, 200, 0)
    knowledge = controls.part(table, "knowledge").loc[(5, 1)]
    assert knowledge.estimate == pytest.approx(0.2)  # frozen +0.10, random-frozen -0.10 at n=5, k=1
    gain = controls.part(table, "gain")
    assert gain.loc[("random-frozen", 5, 1)].estimate == pytest.approx(-0.1)
    assert controls.part(table, "tuning").loc[(5, 1)].estimate == pytest.approx(0.1)


def test_each_claim_is_judged_on_each_split_and_tallied():
    rows = knowledge_rows(split_fails=2)
    by_split = controls.verdicts_by_split(rows, {"k1_rises": C.SWEEP_CLAIMS["k1_rises"],
                                                 "fine_tuning": C.STUDY_CLAIMS["fine_tuning"]})
    assert list(by_split.k1_rises) == ["holds", "holds", "fails", "holds"]
    assert controls.tally(by_split.k1_rises) == "holds in 3 of 4 splits (fails in 1)"
    assert by_split.fine_tuning.loc[0] == "holds"  # +0.04 per n at k=1 over frozen's +0.02, every trial


def test_over_splits_gives_every_claim_its_paper_split_verdict_tally_and_interval():
    rows = knowledge_rows(split_fails=3)
    which = {**C.SWEEP_CLAIMS, **C.STUDY_CLAIMS}
    over = controls.over_splits(rows, controls.intervals(Cube.of(rows), which, 100, 0), which)
    assert list(over.index) == list(which)
    assert over.loc["k1_rises", "paper's split"] == "holds"
    assert over.loc["k1_rises", "over splits"] == "holds in 3 of 4 splits (fails in 1)"
    assert over["estimate [95% interval]"].str.fullmatch(r"-?\d+\.\d{3} \[-?\d+\.\d{3}, -?\d+\.\d{3}\]").all()


def test_a_variant_that_changes_a_verdict_is_counted():
    rows = knowledge_rows()
    variant = knowledge_rows(split_fails=0)
    variant = variant[(variant.split == 0) & (variant.recipe == BASELINE)].assign(variant="budget")
    changes = controls.variant_changes(pd.concat([rows, variant]), {"k1_rises": C.SWEEP_CLAIMS["k1_rises"]})
    assert changes.set_index("claim").loc["k1_rises", "changed"] == 1


# ---------------------------------------------------------------- errors

def test_the_confusion_matrix_rows_are_shares_of_each_true_class():
    labels = np.array([0, 0, 1, 1, 2, 2])
    predicted = np.array([[0, 1, 1, 1, 2, 0], [0, 0, 1, 1, 2, 2]])
    m = errors.confusion(predicted, labels, "abc")
    assert np.allclose(m.sum(axis=1), 1)
    assert m.loc["a", "b"] == 0.25 and m.loc["c", "c"] == 0.75
    assert errors.per_class(predicted, labels, "abc").to_dict() == {"a": 0.75, "b": 1.0, "c": 0.75}


def test_case_pairs_and_the_errors_that_swap_case():
    classes = "IKikw"
    assert errors.case_pairs(classes) == [("I", "i"), ("K", "k")]
    labels = np.array([0, 1, 2, 3, 4])                 # I K i k w
    predicted = np.array([[2, 1, 0, 4, 4]])            # I->i, i->I swapped; k->w a plain error
    s = errors.case_summary(predicted, labels, classes)
    assert s["pairs"] == 2 and s["pair_classes"] == 4
    assert s["errors_to_other_case"] == pytest.approx(2 / 3)
    assert s["lost_to_case"] == pytest.approx(2 / 5) and s["other_accuracy"] == 1.0


def test_the_capacity_sentence_follows_the_random_controls_intervals():
    hurts = controls.intervals(Cube.of(knowledge_rows()), {}, 100, 0)
    assert "lowers accuracy at every n" in controls.capacity_sentence(hurts, 1)
    helps = study_rows(lambda r, n, k, s, t: 0.3 + 0.001 * t + (0.05 * n if r != "fine-tuned" else 0), levels=[0, 1],
                       sizes=[1])
    table = controls.intervals(Cube.of(helps), {}, 100, 0)
    assert controls.capacity_sentence(table, 1).startswith("Freezing random layers raises accuracy at n in [1]")


def test_the_variants_sentence_counts_the_pairs_that_changed():
    changes = pd.DataFrame({"changed": [0, 2, 0, 1]})
    assert controls.variants_sentence(changes).startswith("Of the 4 pairs of a variant and a claim, 2 changed")
    assert controls.variants_sentence(changes.assign(changed=0)).startswith("No verdict changed")
