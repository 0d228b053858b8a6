"""The selection study: how each selection of the source classes is made from the data alone, the transferability
scores, the study's layout over draws of the targets, and its contrasts."""
import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from ktlib.analysis import claims, contrasts, verdicts
from ktlib.analysis.intervals import Cube
from ktlib.compute import data, selection
from ktlib.compute.experiment import Experiment
from ktlib.config import Config
from ktlib.record import files, studies
from ktlib.record.plans import Plan


@pytest.fixture(scope="module")
def plan(real_dir, tmp_path_factory) -> Plan:
    cfg = Config.for_profile("paper", data_dir=str(real_dir), results_dir=str(tmp_path_factory.mktemp("selection")))
    return studies.plan("selection", cfg)


# ---------------------------------------------------------------- making the selections

def test_spanning_takes_one_class_of_each_cluster_before_a_second_of_any():
    centres = np.array([[0.0, 0], [10, 0], [0, 10]])
    points = np.concatenate([centres + np.random.default_rng(i).normal(0, 0.1, centres.shape) for i in range(4)])
    chosen = selection.spanning(points, 3)
    assert sorted(i % 3 for i in chosen) == [0, 1, 2]
    assert selection.coverage_cost(selection.distances(points, points), chosen) < \
        selection.coverage_cost(selection.distances(points, points), [0, 3, 6])


def test_near_and_far_rank_by_distance_and_near_keeps_to_the_classes_allowed():
    d = np.array([3.0, 1.0, 2.0, 5.0, 4.0])
    assert selection.nearest(d, 2) == [1, 2]
    assert selection.nearest(d, 2, far=True) == [3, 4]
    assert selection.nearest(d, 2, allowed=np.array([1, 0, 1, 1, 1], bool)) == [0, 2]
    with pytest.raises(data.DataError, match="only 1 classes"):
        selection.nearest(d, 2, allowed=np.array([1, 0, 0, 0, 0], bool))


def test_every_selection_of_a_draw_takes_20_pool_classes_and_near_without_twins_takes_no_twin(plan, real_dir):
    emnist = data.opened(str(real_dir))[0]
    pool = set(data.eligible(emnist, data.ORDER_POOL_IMAGES)[0])
    made = studies.selections(plan.cfg, emnist, 0)
    assert set(made.chosen) == set(studies.SELECTIONS)
    for name, classes in made.chosen.items():
        assert len(set(classes)) == 20 and set(classes) <= pool and not set(classes) & set(made.targets), name
        assert made.table.loc[name, "twins"] == selection.twins_in(emnist, list(classes), list(made.targets))
    assert made.table.loc[studies.UNTWINNED, "twins"] == 0 < made.table.loc[studies.NEAR, "twins"]
    assert made.table.loc[studies.NEAR, "distance to the targets (probe)"] < \
        made.table.loc[studies.FAR, "distance to the targets (probe)"]
    again = studies.selections(plan.cfg, emnist, 0)
    assert again.chosen == made.chosen and again.targets == made.targets  # from the data alone: made again, the same


def test_each_draw_has_its_own_targets_and_random_selections_and_the_same_spanning_ones(plan, real_dir):
    emnist = data.opened(str(real_dir))[0]
    a, b = (studies.selections(plan.cfg, emnist, d) for d in (0, 1))
    assert a.targets != b.targets
    assert a.chosen[f"{studies.RANDOM}0"] != b.chosen[f"{studies.RANDOM}0"]
    assert all(a.chosen[f"{studies.SPANNING}{s}"] == b.chosen[f"{studies.SPANNING}{s}"] for s in studies.SPACES)


def test_the_probe_net_is_refused_when_it_is_not_the_pinned_one(monkeypatch):
    studies.probe_net.cache_clear()
    monkeypatch.setattr(studies, "PROBE_SHA256", "0" * 64)
    with pytest.raises(files.ResultsError, match="not the probe net"):
        studies.probe_net()
    studies.probe_net.cache_clear()


# ---------------------------------------------------------------- the study's layout

def test_a_draws_selections_share_targets_seeds_and_trials_and_only_the_first_runs_n0(plan):
    configs = plan.configs()
    assert len(configs) == len(studies.SELECTIONS) * studies.SELECTION_DRAWS
    for draw in range(studies.SELECTION_DRAWS):
        mine = [(name, c) for name, c in configs if c.split == draw]
        assert {c.target_chars for _, c in mine} == {mine[0][1].target_chars}
        assert len({c.source_chars for _, c in mine}) > 1
        assert [name for name, c in mine if 0 in c.levels] == [studies.SELECTIONS[0]]
        assert all(c.sizes == list(studies.SELECTION_SIZES) and c.recipes == ["frozen"] for _, c in mine)
        exps = [Experiment.load(c) for _, c in mine[:2]]
        assert exps[0].trial_seed(40, 3) == exps[1].trial_seed(40, 3)
        assert exps[0].source_seed(0) == exps[1].source_seed(0)  # the same source seeds: only the classes differ
    assert "/spanning-pixels/draw-1" in configs[1][1].results_dir


# ---------------------------------------------------------------- transferability

def test_leep_is_zero_for_a_source_that_names_the_target_and_log_of_chance_for_one_that_says_nothing():
    codes = torch.tensor([[1.0, -1], [-1, 1]]) * 20  # far apart: the probabilities are near one-hot
    y = torch.tensor([0, 0, 1, 1])
    assert selection.leep(codes[y], codes, y) == pytest.approx(0, abs=1e-9)
    assert selection.leep(torch.zeros(4, 2), codes, y) == pytest.approx(np.log(0.5))


def test_the_h_score_counts_the_between_class_directions_and_ncm_needs_two_images_per_class():
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    onehot = torch.nn.functional.one_hot(y).double()
    assert selection.h_score(onehot, y) == pytest.approx(2)  # centred one-hot: 2 directions, all between classes
    noisy = onehot + torch.tensor([[0.1, 0, 0], [-0.1, 0, 0]] * 3)
    assert selection.ncm_leave_one_out(noisy, y) == 1.0
    assert np.isnan(selection.ncm_leave_one_out(onehot[::2], y[::2]))


# ---------------------------------------------------------------- the contrasts

def selection_cube(gains: dict[str, float], draws: int = 3, trials: int = 3, noise: float = 0.002) -> Cube:
    """A cube keyed by selection: n=0 at 0.5, each selection's n=5 at 0.5 + its gain (best on validation too), its
    scores equal to its gain."""
    rng = np.random.default_rng(0)
    arrays = {}
    for name, gain in gains.items():
        test = np.full((draws, trials, 2, 2), 0.5) + rng.normal(0, noise, (draws, trials, 2, 2))
        test[:, :, 1] += gain
        score = np.full_like(test, gain)
        arrays[name] = {"test_accuracy": test, "validation_accuracy": test, "train_accuracy": test, "epochs": test,
                        **{s: score for s in contrasts.TRANSFERABILITY}}
    return Cube(arrays, [0, 5], [1, 40], list(range(draws)), keyed_by="selection", replicate="draw")


def gains(spanning: float, near: float, untwinned: float) -> dict[str, float]:
    return {"spanning-pixels": spanning, "spanning-probe": spanning, "near": near, "near-untwinned": untwinned,
            "far": 0.1, **{f"random{r}": 0.1 + 0.001 * r for r in range(10)}}


def test_the_selection_claims_hold_for_clear_gains_and_near_fails_to_hold_when_only_its_twins_help():
    judged = verdicts.across_splits(selection_cube(gains(0.2, 0.3, 0.25)), claims.SELECTION_CLAIMS, "t", 200, 0)[1]
    assert set(judged) == {contrasts.HOLDS}
    judged = verdicts.across_splits(selection_cube(gains(0.1, 0.3, 0.1)), claims.SELECTION_CLAIMS, "t", 200, 0)[1]
    assert judged["selection_spanning"] == contrasts.FAILS
    assert judged["selection_near_far"] == contrasts.PARTLY_SHORT


def test_a_score_that_ranks_the_selections_as_their_gains_has_tau_one_and_a_reversed_one_minus_one():
    c = selection_cube(gains(0.2, 0.3, 0.25), noise=0.0)
    tau = contrasts.score_tau("leep", 1)
    np.testing.assert_allclose(tau(c), 1.0)
    flipped = dataclasses.replace(c, arrays={s: {**v, "leep": -v["leep"]} for s, v in c.arrays.items()})
    np.testing.assert_allclose(tau(flipped), -1.0)


# ---------------------------------------------------------------- the analysis

def test_each_draws_n0_runs_serve_every_selection_of_that_draw_and_no_other():
    from ktlib.analysis.selection import with_zero
    first, other = studies.SELECTIONS[:2]
    rows = pd.DataFrame([{"part": first, "draw": d, "n": 0, "k": 1, "trial": 0, "test_accuracy": 0.1 * (d + 1)}
                         for d in (0, 1)] +
                        [{"part": p, "draw": d, "n": 5, "k": 1, "trial": 0, "test_accuracy": 0.5}
                         for p in (first, other) for d in (0, 1)])
    out = with_zero(rows)
    mine = out[(out.part == other) & (out.n == 0)].set_index("draw").test_accuracy
    assert mine.to_dict() == {0: 0.1, 1: 0.2}
    assert set(out.recipe[out.n == 0]) == {"frozen"} and set(out.recipe[out.n == 5]) == {first, other}
    assert len(out[out.n == 0]) == 2 * len(studies.SELECTIONS)


def test_the_pooled_tau_is_one_for_a_score_that_orders_the_gains_in_every_group_and_nan_on_too_few_nets():
    from ktlib.analysis.selection import pooled_tau
    table = pd.DataFrame({"cluster": np.repeat(["a", "b", "c"], 4), "score": np.arange(12.0),
                          "gain": np.arange(12.0) / 10})
    np.testing.assert_allclose(pooled_tau(table, "score", "gain", 50, 0), 1.0)
    assert all(np.isnan(pooled_tau(table.iloc[:1], "score", "gain", 50, 0)))


def test_the_rowwise_kendall_tau_is_scipys_tau_b_ties_included():
    from scipy import stats
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 4, (6, 15)).astype(float), rng.normal(size=(6, 15))
    y[:, :3] = 0.0  # ties in both
    np.testing.assert_allclose(contrasts.kendall_tau(x, y), [stats.kendalltau(a, b).statistic for a, b in zip(x, y)])
    assert np.isnan(contrasts.kendall_tau(np.ones(5), np.arange(5.0)))
