"""The breadth study: nested source classes on fixed targets, apart from their images, training length and twins; its
layout, its capacity control and its contrasts."""
import dataclasses

import numpy as np
import pandas as pd
import pytest

from ktlib.analysis import breadth, claims, contrasts
from ktlib.analysis.intervals import Cube
from ktlib.compute import data
from ktlib.compute.experiment import Experiment, grid
from ktlib.config import Config, Purpose
from ktlib.recipes import BASELINE, SPREAD_CONTROL
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
        sources = [set(exps[f"{studies.ORDERED}{m}", order].chars("source")) for m in breadth.rule_sizes(plan)]
        assert [len(s) for s in sources] == list(breadth.rule_sizes(plan))
        assert all(a < b for a, b in zip(sources, sources[1:]))
        assert not sources[-1] & set(next(iter(targets)))
    first, second = (exps[f"{studies.ORDERED}{breadth.rule_sizes(plan)[0]}", o].chars("source") for o in (0, 1))
    assert first != second  # the orders differ


def test_the_grid_holds_the_total_images_fixed_along_its_diagonals_and_every_class_count_on_each_row(plan):
    cells = studies.equal_cells([5, 10, 20, 39], 400)
    assert cells == [(5, 400), (10, 200), (10, 400), (20, 100), (20, 200), (20, 400), (39, 51), (39, 103), (39, 205),
                     (39, 400)]
    by_total = {}
    for m, p in cells:
        by_total.setdefault(round(np.log2(m * p / 2000)), []).append(m)
    assert by_total == {0: [5, 10, 20, 39], 1: [10, 20, 39], 2: [20, 39], 3: [39]}  # three diagonals of two or more
    equal = [cfg for name, cfg in plan.configs() if name.startswith(studies.EQUAL)]
    assert len(equal) == len(cells) * plan.counts["orders"]
    assert {cfg.source_steps for cfg in equal} == {ktlib_profiles()["smoke"].source_steps}
    assert all(cfg.recipes == [BASELINE] for cfg in equal)


def ktlib_profiles():
    from ktlib.config import PROFILES
    return PROFILES


def test_the_largest_source_is_every_class_with_the_papers_images_and_runs_at_the_largest_k_too(plan):
    assert breadth.rule_sizes(plan)[:-1] == studies.NESTED and breadth.rule_sizes(plan)[-1] == 39  # the subset's pool
    large = [cfg for name, cfg in plan.configs() if name.startswith(studies.LARGE)]
    assert len(large) == plan.counts["orders"] and all(c.sizes == [studies.LARGE_K] for c in large)
    assert all(c.source_size == 39 and c.source_per_class == plan.cfg.source_per_class for c in large)


def test_equal_steps_train_every_source_net_as_long_to_within_half_an_epoch():
    from ktlib.compute.source import source_epochs
    cfg = Config(source_steps=4096)
    for images in (2000, 4000, 8000, 15600, 1989):
        per_epoch = -(-images // cfg.batch_size)
        assert abs(source_epochs(cfg, images) * per_epoch - 4096) <= per_epoch / 2
    assert source_epochs(Config(), 2000) == Config().source_max_epochs  # the paper's rule: its cap
    assert "source_steps" not in Config().experiment()  # a record made before the series says the same


def test_an_order_changes_the_source_nets_seeds_and_nothing_of_the_targets(plan):
    (_, a), (_, b) = [(n, c) for n, c in plan.configs() if n == f"{studies.ORDERED}{breadth.rule_sizes(plan)[0]}"][:2]
    x, y = Experiment.load(a), Experiment.load(b)
    assert x.source_seed(Purpose.SOURCE_INIT) != y.source_seed(Purpose.SOURCE_INIT)
    assert x.source_key() != y.source_key()
    assert x.seed(Purpose.TRIAL, 1, 0) == y.seed(Purpose.TRIAL, 1, 0)
    np.testing.assert_array_equal(x.test_set().x, y.test_set().x)
    np.testing.assert_array_equal(x.trial_set(1, 0)[0].x, y.trial_set(1, 0)[0].x)


def test_the_n0_runs_of_each_k_run_once_and_the_capacity_control_runs_only_at_its_levels(plan):
    configs = plan.configs()
    runs_zero = [(name, cfg.sizes) for name, cfg in configs if 0 in cfg.levels]
    assert [name for name, _ in runs_zero] == [configs[0][0], f"{studies.LARGE}39"]  # the first sweep; k=100's first
    cfg = dataclasses.replace(configs[0][1], levels=[0, 1, 2, 3, 4, 5])
    controls = {key.n for key in grid(cfg) if key.recipe == SPREAD_CONTROL}
    assert controls == set(studies.CAPACITY_LEVELS)
    assert {key.n for key in grid(cfg) if key.recipe == BASELINE} == set(range(6))


def test_every_sweep_reads_the_n0_runs_and_predictions_of_its_own_k_and_trials(plan):
    plan.run(progress=False)
    rows = plan.runs()
    for name, cfg in plan.configs():
        mine = rows[(rows.part == name) & (rows.order == cfg.source_order) & (rows.n == 0)]
        assert sorted(set(mine.k)) == cfg.sizes and len(mine) == len(cfg.sizes) * cfg.trials
        keys = plan.predictions(name)[cfg.source_order][0]
        assert len(keys[keys.n == 0]) == len(mine)


def test_the_largest_source_trains_once_and_serves_both_its_parts(plan):
    plan.run(progress=False)
    nets = plan.sources().set_index(["part", "order"])
    for order in range(plan.counts["orders"]):
        assert nets.state_sha256[f"{studies.ORDERED}39", order] == nets.state_sha256[f"{studies.LARGE}39", order]
    record = files.read_source_record(layout.sweep_dir(plan.root, f"{studies.LARGE}39", 0, "order"))
    assert record["same_as"] == "../../classes-39/order-0"


@pytest.mark.parametrize("part", ["classes-5", "classes-10", "classes-20", "classes-39"])
def test_the_spread_control_matches_the_trained_nets_spread_within_a_tenth_at_every_level(plan, part):
    from ktlib.compute import stacked
    from ktlib.compute.transfer import copy_source
    from ktlib.record import sweep
    cfg = dict(plan.configs())[part]
    exp = Experiment.load(cfg)
    net = sweep.source_net(exp, False)[0]
    images = torch_images(exp.source_test_set().x)
    control = copy_source("random-spread", net, 5, images)
    want = [stacked.spread(f) for f in stacked.frozen_inputs(net, images)]
    got = [stacked.spread(f) for f in stacked.frozen_inputs(control, images)]
    np.testing.assert_allclose(got[1:], want[1:], rtol=0.1)
    lecun = [stacked.spread(f) for f in stacked.frozen_inputs(copy_source("random-lecun", net, 5), images)]
    assert not np.allclose(lecun[1:], want[1:], rtol=0.1)  # the scaling did something


def torch_images(x):
    import torch
    return torch.from_numpy(x)


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
    assert words["capacity_levels"] == "3 and 5" and words["sizes_count"] == len(breadth.rule_sizes(plan)) == 4


def test_a_twin_is_the_same_letter_in_the_other_case():
    assert data.twin("c") == "C" and data.twin("G") == "g" and data.twin("7") is None


def grid_cube(class_slope: float, image_slope: float, orders: int = 4, trials: int = 3, noise: float = 0.0,
              seed: int = 0) -> Cube:
    """A grid cube whose best level's gain is 0.3 + class_slope x log2(m / 5) + image_slope x log2(m p / 2000), n=0
    at 0.5, noise per run."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for m, p in studies.equal_cells([5, 10, 20, 40], 400):
        test = np.full((orders, trials, 3, 2), 0.5) + rng.normal(0, noise, (orders, trials, 3, 2))
        test[:, :, 2] += 0.3 + class_slope * np.log2(m / 5) + image_slope * np.log2(m * p / 2000)  # n=2 is best
        test[:, :, 1] += 0.05
        arrays[m, p] = {v: test for v in ("test_accuracy", "train_accuracy", "epochs", "validation_accuracy")}
    return Cube(arrays, [0, 1, 2], [1, 40], list(range(orders)), keyed_by="source cell", replicate="order")


def test_a_class_step_holds_the_total_images_and_an_image_step_the_classes():
    c = grid_cube(0.03, 0.01)
    assert contrasts.class_steps(c)[:3] == [((5, 400), (10, 200)), ((10, 200), (20, 100)), ((20, 100), (40, 50))]
    assert all(a[0] == b[0] and b[1] == 2 * a[1] for a, b in contrasts.image_steps(c))
    for k in c.sizes:
        for a, b in contrasts.class_steps(c):
            np.testing.assert_allclose(contrasts.step_gain(c, a, b, k)(c), 0.03)
        for a, b in contrasts.image_steps(c):
            np.testing.assert_allclose(contrasts.step_gain(c, a, b, k)(c), 0.01)
        fx = contrasts.effects(c, k)
        np.testing.assert_allclose(fx["class effect"](c), 0.03, atol=1e-12)
        np.testing.assert_allclose(fx["image effect"](c), 0.01, atol=1e-12)


def test_the_class_claims_hold_for_a_growing_gain_and_fail_for_a_shrinking_one_whatever_the_images_do():
    from ktlib.analysis import verdicts
    grid = {k: claims.BREADTH_CLAIMS[k] for k in ("breadth_grows", "breadth_persists")}
    for slope, expected in ((0.03, contrasts.HOLDS), (-0.03, contrasts.FAILS)):
        for images in (-0.02, 0.0, 0.02):
            _, judged = verdicts.across_splits(grid_cube(slope, images, noise=0.005), grid, "t", 200, 0)
            assert set(judged) == {expected}
    _, judged = verdicts.across_splits(grid_cube(0.0, 0.02, noise=0.005), claims.BREADTH_CLAIMS, "t", 200, 0)
    assert judged["breadth_images"] == contrasts.HOLDS and judged["breadth_reaches"] == contrasts.NOT_MEASURED


def test_bartlett_and_baxters_prediction_holds_only_where_transfer_is_not_clearly_worse_than_n0():
    from ktlib.analysis import verdicts
    for gap, expected in ((0.0, contrasts.HOLDS), (-0.1, contrasts.FAILS)):
        test = np.full((4, 3, 2, 1), 0.8) + np.random.default_rng(0).normal(0, 0.002, (4, 3, 2, 1))
        test[:, :, 1] += gap
        c = Cube({39: {v: test for v in ("test_accuracy", "train_accuracy", "epochs", "validation_accuracy")}},
                 [0, 5], [100], list(range(4)), keyed_by="largest source", replicate="order")
        reach = {"breadth_reaches": claims.BREADTH_CLAIMS["breadth_reaches"]}
        assert verdicts.across_splits(c, reach, "t", 200, 0)[1]["breadth_reaches"] == expected


def rule_cube(gain: float = 0.1, orders: int = 4, trials: int = 3) -> Cube:
    """A rule-series cube whose best level (n=2) gains `gain` over n=0 at every source size and k."""
    arrays = {}
    for m in (5, 10, 20, 39):
        test = np.full((orders, trials, 3, 2), 0.5)
        test[:, :, 2] += gain
        arrays[m] = {v: test.copy() for v in ("test_accuracy", "train_accuracy", "epochs", "validation_accuracy")}
    return Cube(arrays, [0, 1, 2], [1, 40], list(range(orders)), keyed_by="source", replicate="order")


def test_transfer_stops_paying_at_the_first_k_whose_best_gain_misses_the_margin():
    c = rule_cube()
    for m in c.arrays:
        c.arrays[m]["test_accuracy"][:, :, 1:, 1] -= 0.09  # the best gain at k=40 falls to 0.01
    table = breadth.stops_paying(c)
    assert (table == 40).all().all()
    assert breadth.stops_paying(rule_cube()).isna().all().all()  # pays at every k


def test_the_capacity_contrast_pairs_each_frozen_run_with_its_control():
    rows = pd.DataFrame([dict(classes=m, n=n, k=1, order=o, trial=t, recipe=r, test_accuracy=acc)
                         for m in (5, 39) for n in (3, 5) for o in range(3) for t in range(2)
                         for r, acc in ((BASELINE, 0.6 + 0.01 * o), (SPREAD_CONTROL, 0.4 + 0.01 * o))])
    table = breadth.knowledge(rows)
    np.testing.assert_allclose(table.estimate, 0.2)
    assert len(table) == 4 and (table.high - table.low < 1e-9).all()


def test_a_source_whose_control_spread_falls_under_half_the_trained_nets_at_any_level_is_excluded():
    ratios = pd.DataFrame({"C1": [1.0, 1.0, 0.9], "C5": [1.1, 0.49, 1.0]},
                          index=pd.MultiIndex.from_tuples([(5, 0), (5, 1), (39, 0)], names=["classes", "order"]))
    assert breadth.excluded(ratios) == [5]
