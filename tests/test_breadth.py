"""The breadth study: nested source classes on fixed targets, its layout, and its contrasts."""
import dataclasses

import numpy as np
import pandas as pd
import pytest

from ktlib.analysis import breadth, claims, contrasts
from ktlib.analysis.intervals import Cube
from ktlib.compute.experiment import Experiment, grid
from ktlib.config import Config, Purpose
from ktlib.recipes import BASELINE, MATCHED_CONTROL
from ktlib.record import files, layout, studies
from ktlib.record.plans import Plan


@pytest.fixture(scope="module")
def plan(real_dir, tmp_path_factory) -> Plan:
    cfg = Config.for_profile("smoke", data_dir=str(real_dir), results_dir=str(tmp_path_factory.mktemp("breadth")))
    return studies.plan("breadth", cfg)


def test_the_sources_of_one_order_nest_and_every_sweep_has_the_same_targets(plan):
    exps = {(name, cfg.source_order): Experiment.load(cfg) for name, cfg in plan.configs()}
    targets = {exp.chars("target") for exp in exps.values()}
    assert len(targets) == 1 and len(next(iter(targets))) == plan.cfg.n_classes
    for order in range(plan.counts["orders"]):
        sources = [set(exps[f"{studies.ORDERED}{m}", order].chars("source")) for m in breadth.sizes(plan)]
        assert [len(s) for s in sources] == list(breadth.sizes(plan))
        assert all(a < b for a, b in zip(sources, sources[1:]))
        assert not sources[-1] & set(next(iter(targets)))
    first, second = (exps[f"{studies.ORDERED}{breadth.sizes(plan)[0]}", o].chars("source") for o in (0, 1))
    assert first != second  # the orders differ


def test_the_largest_source_is_every_class_with_the_papers_images_and_the_control_keeps_the_images_fixed(plan):
    assert breadth.sizes(plan)[:-1] == studies.NESTED and breadth.sizes(plan)[-1] == 39  # the shared subset's pool
    assert breadth.fixed_images(plan) == round(plan.cfg.n_classes * plan.cfg.source_per_class / 39)
    controls = [cfg for name, cfg in plan.configs() if name == studies.ORDERED + studies.FIXED]
    assert len(controls) == plan.counts["orders"]
    assert all(c.source_per_class == breadth.fixed_images(plan) and c.source_size == 39 for c in controls)


def test_an_order_changes_the_source_nets_seeds_and_nothing_of_the_targets(plan):
    (_, a), (_, b) = [(n, c) for n, c in plan.configs() if n == f"{studies.ORDERED}{breadth.sizes(plan)[0]}"][:2]
    x, y = Experiment.load(a), Experiment.load(b)
    assert x.source_seed(Purpose.SOURCE_INIT) != y.source_seed(Purpose.SOURCE_INIT)
    assert x.source_key() != y.source_key()
    assert x.seed(Purpose.TRIAL, 1, 0) == y.seed(Purpose.TRIAL, 1, 0)
    np.testing.assert_array_equal(x.test_set().x, y.test_set().x)
    np.testing.assert_array_equal(x.trial_set(1, 0)[0].x, y.trial_set(1, 0)[0].x)


def test_only_the_first_sweep_runs_n0_and_the_capacity_control_runs_only_at_its_levels(plan):
    configs = [cfg for _, cfg in plan.configs()]
    assert 0 in configs[0].levels and all(0 not in cfg.levels for cfg in configs[1:])
    cfg = dataclasses.replace(configs[0], levels=[0, 1, 2, 3, 4, 5])
    controls = {key.n for key in grid(cfg) if key.recipe == MATCHED_CONTROL}
    assert controls == set(studies.CAPACITY_LEVELS)
    assert {key.n for key in grid(cfg) if key.recipe == BASELINE} == set(range(6))


def test_a_breadth_sweep_lives_under_order_and_a_scan_without_its_plan_finds_it(tmp_path):
    where = layout.sweep_dir(tmp_path, f"{studies.ORDERED}{5}", 3, "order")
    assert where == tmp_path / "classes-5" / "order-3"
    assert layout.sweep_dir(tmp_path, "baseline", 3) == tmp_path / "baseline" / "split-3"
    for d in (where, layout.sweep_dir(tmp_path, "baseline", 0), tmp_path / "classes-5" / "trial-0",
              tmp_path / "classes-5" / "order-x"):
        d.mkdir(parents=True)
        (d / files.RESULTS_FILE).write_text("")
    found = [(p, s) for p, s, _ in layout.study_sweeps(tmp_path)]
    assert sorted(found) == [("baseline", 0), ("classes-5", 3)]  # neither a trial- nor an order-x directory is one
    with pytest.raises(ValueError, match="replicates"):
        layout.sweep_dir(tmp_path, "baseline", 0, "trial")


def test_the_configuration_refuses_an_order_beside_named_sources_and_a_bad_count():
    with pytest.raises(ValueError, match="source_order"):
        Config(source_order=0, source_chars="0123456789ABCDEFGHIJ")
    with pytest.raises(ValueError, match="source_size"):
        Config(source_size=1)
    with pytest.raises(ValueError, match="source_chars"):
        Config(source_size=5, source_chars="012345")
    with pytest.raises(ValueError, match="control_levels"):
        Config(control_levels=[])
    with pytest.raises(ValueError, match="n \\(retained levels\\)"):
        Config(control_levels=[7])


@pytest.mark.parametrize("count", [0, True, 1.5, "2"])
def test_a_study_refuses_a_bad_number_of_orders_or_splits_before_it_reads_any_data(tmp_path, count):
    cfg = Config.for_profile("smoke", data_dir=str(tmp_path / "no-data"), results_dir=str(tmp_path / "results"))
    with pytest.raises(ValueError, match=f"orders must be an integer >= 1, got {count!r}"):
        studies.plan("breadth", cfg, count)
    with pytest.raises(ValueError, match=f"splits must be an integer >= 1, got {count!r}"):
        studies.plan("study", cfg, count)


def test_the_design_names_its_sizes_and_levels_as_a_sentence_lists_them(plan):
    words = breadth.design(plan)
    assert words["source_sizes"] == "5, 10, 20 and all 39" and words["smaller_sizes"] == "5, 10 and 20"
    assert words["capacity_levels"] == "3 and 5" and words["sizes_count"] == len(breadth.sizes(plan)) == 4


def synthetic(slope: float, orders: int = 4, trials: int = 3, noise: float = 0.0, seed: int = 0) -> Cube:
    """A breadth cube whose best level's gain at every k is 0.1 + slope x log2(m / 5), n=0 at 0.5, noise per run."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for m in (5, 10, 20, 40):
        test = np.full((orders, trials, 3, 2), 0.5) + rng.normal(0, noise, (orders, trials, 3, 2))
        test[:, :, 2] += 0.1 + slope * np.log2(m / 5)  # n=2 is best
        test[:, :, 1] += 0.05
        arrays[m] = {v: test for v in ("test_accuracy", "train_accuracy", "epochs", "validation_accuracy")}
    return Cube(arrays, [0, 1, 2], [1, 40], list(range(orders)), keyed_by="source", replicate="order")


def test_each_doubling_of_the_source_classes_adds_the_slope_of_the_best_gain():
    c = synthetic(0.03)
    for k in c.sizes:
        np.testing.assert_allclose(contrasts.per_doubling(c, k)(c), 0.03)
        np.testing.assert_allclose(contrasts.best_gain(c, 40, k)(c), 0.1 + 0.03 * 3)


def test_the_breadth_claims_hold_for_a_growing_gain_and_fail_for_a_shrinking_one():
    from ktlib.analysis import verdicts
    for slope, expected in ((0.03, contrasts.HOLDS), (-0.03, contrasts.FAILS)):
        _, judged = verdicts.across_splits(synthetic(slope, noise=0.005), claims.BREADTH_CLAIMS, "t", 200, 0)
        assert set(judged) == {expected}


def test_transfer_stops_paying_at_the_first_k_whose_best_gain_misses_the_margin():
    c = synthetic(0.0)
    for m in c.arrays:
        c.arrays[m]["test_accuracy"][:, :, 1:, 1] -= 0.09  # the best gain at k=40 falls to 0.01
    table = breadth.stops_paying(c)
    assert (table == 40).all().all()
    assert breadth.stops_paying(synthetic(0.0)).isna().all().all()  # pays at every k


def test_the_capacity_contrast_pairs_each_frozen_run_with_its_control():
    rows = pd.DataFrame([dict(source=s, n=n, k=1, order=o, trial=t, recipe=r, test_accuracy=acc)
                         for s in ("5", "39") for n in (3, 5) for o in range(3) for t in range(2)
                         for r, acc in ((BASELINE, 0.6 + 0.01 * o), (MATCHED_CONTROL, 0.4 + 0.01 * o))])
    table = breadth.knowledge(rows)
    np.testing.assert_allclose(table.estimate, 0.2)
    assert len(table) == 4 and (table.high - table.low < 1e-9).all()
