"""How verdicts are made: interval methods and their coverage, the verdict rule, tallies, and the classes as a
source of variation."""
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from ktlib.analysis import claims, contrasts, intervals, verdicts
from ktlib.analysis.contrasts import FAILS, HOLDS, NOT_MEASURED, PARTLY_ACROSS, PARTLY_SHORT, UNDECIDED


def test_an_interval_beyond_short_of_or_holding_its_margin():
    assert verdicts.outcome(0.03, 0.05, 0.02, above=True) == verdicts.BEYOND
    assert verdicts.outcome(0.00, 0.01, 0.02, above=True) == verdicts.SHORT
    assert verdicts.outcome(0.01, 0.03, 0.02, above=True) == verdicts.STRADDLES
    assert verdicts.outcome(-0.2, -0.1, 0.0, above=False) == verdicts.BEYOND  # the claim puts it below
    assert verdicts.outcome(0.1, 0.2, 0.0, above=False) == verdicts.SHORT


def test_the_verdict_rule_holds_partly_fails_or_is_undecided_and_partly_says_how_the_rest_fall():
    B, S, X = verdicts.BEYOND, verdicts.SHORT, verdicts.STRADDLES
    assert verdicts.verdict([B, B]) == HOLDS
    assert verdicts.verdict([B, X, S]) == PARTLY_SHORT
    assert verdicts.verdict([B, X, X]) == PARTLY_ACROSS
    assert verdicts.verdict([S, S]) == FAILS
    assert verdicts.verdict([S, X]) == UNDECIDED
    assert verdicts.verdict([]) == NOT_MEASURED


def test_a_tally_carries_its_exact_interval():
    tally = verdicts.tally(pd.Series(["holds"] * 3 + [PARTLY_ACROSS] * 7))
    assert tally == "holds in 3 of 10 splits [0.07, 0.65]; partly, undecided elsewhere in 7"
    assert intervals.clopper_pearson(0, 10) == (0.0, pytest.approx(0.3085, abs=1e-4))
    assert intervals.clopper_pearson(10, 10) == (pytest.approx(0.6915, abs=1e-4), 1.0)


def test_the_jackknife_t_interval_of_a_mean_is_the_t_interval():
    x = np.array([0.1, 0.4, 0.2, 0.35, 0.15])
    left_out = np.array([np.delete(x, j).mean() for j in range(5)])
    assert np.allclose(intervals.jackknife_t(x.mean(), left_out), intervals.t_interval(x))
    half = stats.t.ppf(0.975, 4) * x.std(ddof=1) / np.sqrt(5)
    assert np.allclose(intervals.t_interval(x), (x.mean() - half, x.mean() + half))


def test_bca_without_bias_or_skew_gives_the_percentile_interval():
    draws = np.random.default_rng(0).normal(size=20001)
    symmetric = np.linspace(-1, 1, 10)  # a jackknife with no skew: no acceleration
    bca = intervals.bca_interval(np.median(draws), draws, symmetric)
    assert np.allclose(bca, intervals.percentile_interval(draws), atol=0.02)


def test_the_coverage_simulation_repeats_for_a_seed_and_t_covers_normal_data():
    a = intervals.coverage(3, shapes=((10, 5),), reps=400, draws=200)
    b = intervals.coverage(3, shapes=((10, 5),), reps=400, draws=200)
    assert a.equals(b)
    t = a.set_index(["scenario", "method"]).coverage.loc[("normal", "t")]
    assert abs(t - 0.95) < 3 * np.sqrt(0.95 * 0.05 / 400)  # within Monte Carlo error of its nominal 95%


def test_the_chosen_method_is_the_one_nearest_95_percent_in_its_worst_case():
    table = pd.DataFrame({"splits": 10, "scenario": ["a", "a", "b", "b", "a"],
                          "method": ["wide", "narrow", "wide", "narrow", "one split"],
                          "coverage": [0.99, 0.94, 0.99, 0.90, 0.95]}).assign(
        splits=lambda d: np.where(d.method == "one split", 1, 10))
    assert intervals.chosen_method(table) == "wide"  # 0.04 from 95% at worst, against 0.05
    assert intervals.chosen_method(table.assign(coverage=[0.99, 0.94, 0.99, 0.93, 0.95])) == "narrow"


def test_a_class_hard_in_every_split_widens_the_crossed_interval():
    """Six splits of six classes from a pool of twelve, each class's own effect shared by every split that holds it."""
    rng = np.random.default_rng(1)
    hard = {c: rng.normal(0, 0.05) for c in "ABCDEFGHIJKL"}
    draws = ["ABCDEF", "CDEFGH", "EFGHIJ", "GHIJKL", "ABIJKL", "ACEGIK"]
    by_class = np.zeros((6, 2, 2, 1, 6))  # (splits, trials, n, k, classes): n=1 gains 0.1 plus its class's effect
    for s, classes in enumerate(draws):
        by_class[s, :, 1, 0] = 0.5 + np.array([0.1 + hard[c] for c in classes]) + rng.normal(0, 0.005, (2, 6))
        by_class[s, :, 0, 0] = 0.5
    test = by_class.mean(-1)
    cube = intervals.Cube({"frozen": {"test_accuracy": test}}, [0, 1], [1], by_class={"frozen": by_class},
                          class_ids=np.array([["ABCDEFGHIJKL".index(c) for c in cs] for cs in draws]),
                          class_names=list("ABCDEFGHIJKL"))
    gain = {"gain": claims.SweepClaim("", lambda c: [contrasts.Contrast("n=1 - n=0", lambda x: (
        x.at("test_accuracy", 1, 1) - x.at("test_accuracy", 0, 1)).mean(1))])}
    crossed = verdicts.across_splits(cube, gain, intervals.CROSSED, 2000, 0)[0].iloc[0]
    alone = verdicts.across_splits(cube, gain, intervals.SPLITS_ONLY, 2000, 0)[0].iloc[0]
    assert crossed.estimate == alone.estimate and crossed.by_class
    assert crossed.high - crossed.low > 1.5 * (alone.high - alone.low)
    # the controls' tables make the same interval from cell means
    stat = {"gain": lambda t: float(t["frozen"].test.loc[1, 1] - t["frozen"].test.loc[0, 1])}
    table = intervals.estimate(cube, stat, intervals.CROSSED, 2000, 0).loc["gain"]
    assert table.estimate == pytest.approx(crossed.estimate)
    assert table.high - table.low == pytest.approx(crossed.high - crossed.low, rel=0.1)


def test_the_spearman_interval_holds_the_correlation_and_narrows_with_more_points():
    x = np.arange(10.0)
    y = x + np.random.default_rng(0).normal(0, 3, 10)
    rho, low, high = intervals.spearman_interval(x, y)
    assert -1 < low < rho < high < 1
    rho40, low40, high40 = intervals.spearman_interval(np.arange(40.0), np.arange(40.0) + np.tile(y - x, 4))
    assert high40 - low40 < high - low


def test_the_claims_page_shows_a_claims_failing_contrasts_first_and_all_of_them_when_it_has_many():
    rows = [{"split": "all", "claim": "c", "contrast": f"c{i}", "estimate": e, "low": lo, "high": hi, "margin": 0.0,
             "side": "above", "decides": True, "outcome": verdicts.outcome(lo, hi, 0.0, True), "fmt": "+.2f"}
            for i, (e, lo, hi) in enumerate([(0.5, 0.4, 0.6), (0.1, -0.1, 0.3), (-0.2, -0.3, -0.1)])]
    table = pd.DataFrame(rows)
    assert verdicts.measured(table, "c").split("; ")[0].startswith("c2: -0.20")  # short first, then across
    assert verdicts.measured(table, "c").split("; ")[1].startswith("c1: +0.10")
    many = pd.concat([table] + [table.iloc[[0]].assign(contrast=f"more{i}") for i in range(6)])
    text = verdicts.measured(many, "c")
    assert text.startswith("7 of 9 contrasts beyond their margins; the others: c2: -0.20") and "c1: +0.10" in text


def test_a_cube_reweighted_by_a_draw_of_the_classes_weighs_each_split_by_the_classes_drawn():
    rows = pd.DataFrame([{"split": s, "trial": t, "recipe": "frozen", "n": n, "k": 1, "test_accuracy": 0.5,
                          "train_accuracy": 1.0, "epochs": 1} for s in (0, 1) for t in (0, 1) for n in (0, 1)])
    cube = intervals.Cube.of(rows)
    labels = np.repeat([0, 1], 10)
    keys = pd.DataFrame({"n": [0, 0, 1, 1], "k": 1, "trial": [0, 1, 0, 1], "recipe": "frozen"})
    right = np.concatenate([np.ones(10), np.zeros(10)])  # every image of the first class right, of the second wrong
    predicted = np.where(right.astype(bool), labels, 1 - labels)[None].repeat(4, 0)
    c = cube.with_classes({0: (keys, predicted, labels, "ab"), 1: (keys, predicted, labels, "bc")})
    assert c.class_names == ["a", "b", "c"] and c.class_ids.tolist() == [[0, 1], [1, 2]]
    assert c.reweighted(np.array([1, 1, 1])).at("test_accuracy", 1, 1).tolist() == [[0.5, 0.5], [0.5, 0.5]]
    # drawing a twice and b once: split 0 (a right, b wrong) rises to 2/3; split 1 holds only b (right there)
    assert c.reweighted(np.array([2, 1, 0])).at("test_accuracy", 1, 1)[:, 0].tolist() == [2 / 3, 1.0]
    assert c.resampled(np.array([1, 1])).class_ids.tolist() == [[1, 2], [1, 2]]
    assert c.shared_classes() == 1.0


def test_the_crossed_interval_covers_a_new_draw_of_the_classes_where_the_splits_alone_do_not():
    table = intervals.crossed_coverage(0, reps=200, draws=300).set_index(["scenario", "method"]).coverage
    assert table.loc[("classes vary most", intervals.CROSSED)] >= 0.92
    assert table.loc[("classes vary most", intervals.SPLITS_ONLY)] <= 0.88


def test_a_grid_of_one_trial_has_no_level_step_measured_and_says_so():
    """The smoke profile: one trial per cell gives no interval, so no step."""
    one_trial = intervals.Cube({"frozen": {v: np.full((1, 1, 2, 1), 0.5) for v in intervals.VALUES}}, levels=[0, 5], sizes=[1])
    steps = verdicts.level_steps(one_trial)
    assert steps.empty and verdicts.steps_sentence(steps) == contrasts.NOT_MEASURED


def test_each_levels_step_is_told_in_words_by_the_layer_it_adds():
    steps = pd.DataFrame({"split": 0, "step": ["n=1 - n=0 at k=1", "n=2 - n=1 at k=1", "n=5 - n=4 at k=1",
                                               "n=5 - n=4 at k=40"],
                          "the level": [verdicts.STEP_WORDS[o] for o in (verdicts.BEYOND, verdicts.STRADDLES,
                                                                         verdicts.BEYOND, verdicts.SHORT)]})
    assert verdicts.steps_sentence(steps) == ("at k=1, C1 and C5 each help, S2 cannot be told from zero; "
                                              "at k=40, C5 costs")
