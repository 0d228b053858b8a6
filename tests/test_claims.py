"""The claim verdicts follow the stated thresholds, on synthetic grids whose answer is known."""
import itertools

import pandas as pd
import pytest

from ktlib import claims as C
from ktlib.model import PAPER_FREE_PARAMETERS, build, free_parameters
from ktlib.sweep import COLUMNS, write_results
from ktlib.transfer import TUNED


def grid(acc, epochs=lambda n, k, t: 100, sizes=(1, 5, 10, 20, 40), levels=range(6), trials=5,
         train=lambda n, k, t: 1.0):
    """Tidy rows of the paper's recipe with test accuracy acc(n, k, trial)."""
    return pd.DataFrame([{"n": n, "recipe": "frozen", "k": k, "trial": t, "test_accuracy": acc(n, k, t),
                          "train_accuracy": train(n, k, t), "epochs": epochs(n, k, t),
                          "seconds": epochs(n, k, t) / 100}
                         for n, k, t in itertools.product(levels, sizes, range(trials))])


def paper_like(n, k, t):
    """Transfer helps at small k; at k=40 n=5 is worst and n=3 best; small trial noise."""
    base = {1: 0.3, 5: 0.5, 10: 0.6, 20: 0.65, 40: 0.7}[k]
    gain = 0.02 * n * (1 if k <= 5 else 0.2) - (0.05 if n == 5 and k >= 20 else 0)
    return base + gain + 0.002 * (t - 2)


def test_paper_like_grid_gets_the_papers_verdicts():
    rows = grid(paper_like)
    v = C.verdicts(C.sweep_claims(rows))
    assert v["k1_rises"] == "holds"
    assert v["best_moves_down"] == "holds"
    assert v["c1_s4"] == "partly"          # clear gain (>= 2 points, every trial) only at k = 1 and 5
    assert v["variance"] == "holds"


def test_accuracy_falling_with_n_fails_the_k1_claim():
    assert C.claim_k1_rises(grid(lambda n, k, t: 0.5 - 0.01 * n)).verdict == "fails"


def test_one_swapped_pair_of_neighbours_still_rises():
    order = [0, 2, 1, 3, 4, 5]  # n=1 and n=2 swapped: rank correlation 0.94
    assert C.claim_k1_rises(grid(lambda n, k, t: 0.3 + 0.01 * order[n])).verdict == "holds"


def test_a_gain_in_most_trials_is_not_clear():
    one_bad_trial = lambda n, k, t: 0.5 + (0.05 if n == 4 and t > 0 else 0) - (0.01 if n == 4 and t == 0 else 0)
    assert C.claim_c1_s4(grid(one_bad_trial)).verdict == "fails"  # a mean gain of 0.038, one trial worse
    assert C.claim_c1_s4(grid(lambda n, k, t: 0.5 + (0.03 if n == 4 else 0))).verdict == "holds"


def test_saturation_needs_the_n5_gain_under_half_the_baseline_gain():
    flat5 = lambda n, k, t: {1: 0.3, 5: 0.5, 10: 0.6, 20: 0.65, 40: 0.7}[k] if n < 5 else 0.55 + k / 1000
    assert C.claim_c5_saturates(grid(flat5)).verdict == "holds"
    assert C.claim_c5_saturates(grid(paper_like)).verdict == "fails"


def test_large_spread_fails_the_variance_claim():
    noisy = lambda n, k, t: paper_like(n, k, t) + 0.05 * (-1) ** t
    assert C.claim_variance(grid(noisy)).verdict == "fails"


def test_effort_is_partly_when_only_some_levels_need_fewer_epochs():
    rows = grid(paper_like, epochs=lambda n, k, t: 100 - 10 * n if n < 5 else 300)
    assert C.claim_effort(rows).verdict == "partly"
    assert C.claim_effort(grid(paper_like, epochs=lambda n, k, t: 100 - 10 * n)).verdict == "holds"


def test_the_gap_narrows_when_the_most_retained_net_generalises_closer_to_its_training_accuracy():
    fits_all = grid(paper_like)  # training accuracy 1 everywhere: the gap is 1 - test, smallest where test is best
    assert C.claim_gap(fits_all).verdict == "partly"  # n=5 beats n=0 on test at k <= 10 only
    capped = grid(paper_like, train=lambda n, k, t: paper_like(n, k, t) + (0.01 if n == 5 else 0.3))
    assert C.claim_gap(capped).verdict == "holds"
    assert C.claim_gap(grid(paper_like, train=lambda n, k, t: 1.0 if n == 5 else 0.6)).verdict == "fails"


def test_the_gain_shrinks_when_transfer_helps_less_with_more_data():
    assert C.claim_gain_shrinks(grid(paper_like)).verdict == "holds"
    growing = lambda n, k, t: 0.3 + 0.001 * n * k
    assert C.claim_gain_shrinks(grid(growing)).verdict == "fails"


def test_the_curves_lie_in_the_order_of_k_only_if_every_step_up_is_positive():
    ordered = lambda n, k, t: {1: 0.3, 5: 0.5, 10: 0.6, 20: 0.65, 40: 0.7}[k] + 0.01 * n
    assert C.claim_curve_order(grid(ordered)).verdict == "holds"
    assert C.claim_curve_order(grid(paper_like)).verdict == "partly"  # at n=5, k=20 is no better than k=10
    assert C.claim_curve_order(grid(lambda n, k, t: 0.5 - k / 1000)).verdict == "fails"


def test_fine_tuning_is_better_only_if_clearly_so_at_each_size():
    frozen = grid(paper_like)
    tuned = grid(lambda n, k, t: paper_like(n, k, t) + (0.03 if k == 1 else 0.0)).query("n > 0")
    rows = pd.concat([frozen, tuned.assign(recipe=TUNED)])
    claim = C.claim_fine_tuning(rows)
    assert claim.verdict == "partly" and "clear at k in [1]" in claim.measured
    assert C.sweep_claims(frozen, C.STUDY_CLAIMS)[0].verdict == "not measured"  # no fine-tuned runs


def test_a_grid_without_the_needed_cells_is_marked_not_measured():
    smoke = grid(paper_like, sizes=(1,), levels=(0, 5), trials=1)
    v = C.verdicts(C.sweep_claims(smoke))
    assert v["c1_s4"] == v["c5_saturates"] == v["variance"] == v["best_moves_down"] == "not measured"
    assert v["k1_rises"] == "holds"


def test_table1_and_the_derived_shares_hold_for_our_net():
    counts = free_parameters(build(0))
    assert C.claim_table1(counts).verdict == C.claim_shares(counts).verdict == "holds"
    wrong = {**counts, "C5": counts["C5"] + 1}
    assert C.claim_table1(wrong).verdict == "fails"
    assert C.parameter_table(counts).loc["total", "paper"] == sum(PAPER_FREE_PARAMETERS.values())


def test_source_claim_allows_one_point_either_side_and_reports_the_held_out_accuracy():
    claim = C.claim_source({"train_accuracy": 0.9481, "epochs": 6, "held_out_accuracy": 0.91,
                            "held_out_images": 1000})
    assert claim.verdict == "holds" and "by construction" in claim.measured and "91.00%" in claim.measured
    assert C.claim_source({"train_accuracy": 0.92, "epochs": 100}).verdict == "fails"


def record(tmp_path, rows, meta):
    """rows as a whole results file: the columns a grid here leaves out get placeholder values."""
    path = tmp_path / "sweep.csv"
    filler = {"retained": "-", "seed": 0, "train_accuracy": 1.0, "train_loss": 0.0, "stopped_by": "fit",
              "trainable_parameters": 0, "source_task_accuracy": None, "epoch_rule_epochs": None,
              "epoch_rule_train_accuracy": None, "git_commit": "-"}
    write_results(path, meta, rows.assign(**{c: v for c, v in filler.items() if c not in rows})[COLUMNS])
    return path


META = {"config": {"seed": 0}, "data_checksums": {"a": "1"}, "source_classes": "ab", "target_classes": "cd"}


def test_record_comparison_applies_the_tolerance(tmp_path):
    rows = grid(paper_like)
    path = record(tmp_path, rows, META)
    same = C.compare_with_record(rows, META, path)
    assert same["within"] and same["largest_change"] == pytest.approx(0, abs=1e-9)
    moved = rows.copy()
    moved.loc[(moved.n == 3) & (moved.k == 10), "test_accuracy"] += C.TOLERANCE + 0.01
    out = C.compare_with_record(moved, META, path)
    assert not out["within"] and out["largest_change"] == pytest.approx(C.TOLERANCE + 0.01)
    assert (out["runs"], out["identical_runs"]) == (150, 145)
    assert out["largest_run_change"] == pytest.approx(C.TOLERANCE + 0.01)


def test_a_record_of_the_other_engine_is_compared_when_the_engine_is_ignored(tmp_path):
    path = record(tmp_path, grid(paper_like), {**META, "config": {"seed": 0, "engine": "plain"}})
    mine = {**META, "config": {"seed": 0, "engine": "batched"}}
    assert not C.compare_with_record(grid(paper_like), mine, path)["comparable"]
    assert C.compare_with_record(grid(paper_like), mine, path, ignore=("engine",))["identical_runs"] == 150


def test_record_of_another_experiment_is_not_compared_and_the_fields_are_named(tmp_path):
    path = record(tmp_path, grid(paper_like), META)
    other = {**META, "config": {"seed": 1}, "target_classes": "ce"}
    assert C.compare_with_record(grid(paper_like), other, path) == {
        "comparable": False,
        "reason": "the record is another experiment: config.seed (0 there, 1 now); target_classes ('cd' there, 'ce' now)"}
    assert not C.compare_with_record(grid(paper_like), META, tmp_path / "none.csv")["comparable"]
    older = tmp_path / "older.csv"
    older.write_text(path.read_text().replace("source_task_accuracy,", "lost,"))
    assert "no column ['source_task_accuracy']" in C.compare_with_record(grid(paper_like), META, older)["reason"]
    assert C.compare_with_record(grid(paper_like, trials=4), META, path)["reason"] == \
        "the record has 150 runs, this sweep 120"


def test_summary_counts_the_verdicts_in_words():
    found = [C.Claim("a", "", "holds"), C.Claim("b", "", "holds"), C.Claim("c", "", "partly"),
             C.Claim("d", "", "fails"), C.Claim("e", "", "not measured")]
    assert C.summary(found) == "2 hold, 1 holds in part, 1 fails, 1 not measured"
