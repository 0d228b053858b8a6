"""Partially transferred levels (issue 38): the recipes' names, the nets they make, the maps' scores and choices, and
the engine and the plain path training them alike, the kept maps held to the bit."""
import numpy as np
import pandas as pd
import pytest
import torch

from ktlib.compute import engine, executors, maps, stacked
from ktlib.compute.experiment import RunKey
from ktlib.compute.model import LAYERS, build, target_codes
from ktlib.compute.train import ReachAccuracy, train
from ktlib.compute.transfer import transfer, updated_parameters
from ktlib.config import Config
from ktlib.recipes import first_trained, partial, recipe

from test_engine import images, toy, weights


@pytest.fixture(scope="module")
def source():
    return build(123)


def some(maps_: int, kept: int, seed: int = 0) -> torch.Tensor:
    mask = torch.zeros(maps_, dtype=torch.bool)
    mask[torch.randperm(maps_, generator=torch.Generator().manual_seed(seed))[:kept]] = True
    return mask


def test_a_partial_recipe_is_named_by_its_level_its_kept_maps_and_its_chooser():
    r = recipe("C5-keep30-saliency-reversed")
    assert (r.level, r.kept, r.chooser, r.trains, r.copies) == (5, 30, "saliency-reversed", False, "trained")
    assert recipe(partial("C3", 4, "random7")).chooser == "random7"
    assert first_trained("C5-keep30-mi", 5) == 4 and first_trained("C3-keep4-mi", 3) == 2
    for bad in ("C5-keep0-mi", "C5-keep120-mi", "C3-keep16-mi", "C5-keep30-entropy", "C1-keep3-mi", "C5-keep30-random"):
        with pytest.raises(ValueError):
            recipe(bad)
    with pytest.raises(ValueError, match="runs at n=5"):
        first_trained("C5-keep30-mi", 4)


def test_a_config_refuses_a_partial_recipe_at_a_level_it_does_not_run(tmp_path):
    with pytest.raises(ValueError, match="leaves out"):
        Config.for_profile("smoke", data_dir=str(tmp_path), levels=[0, 4], recipes=["frozen", "C5-keep30-mi"])


@pytest.mark.parametrize("n", [3, 5])
def test_a_partial_net_copies_the_kept_maps_and_starts_the_others_as_a_fresh_net_does(source, n):
    level = LAYERS[n - 1]
    kept = some(getattr(source, level).bias.numel(), 4)
    net, fresh = transfer(source, n, 9, f"{level}-keep4-mi", kept), build(9)
    mine, theirs, new = getattr(net, level), getattr(source, level), getattr(fresh, level)
    assert torch.equal(mine.weight[kept], theirs.weight[kept]) and torch.equal(mine.bias[kept], theirs.bias[kept])
    assert torch.equal(mine.weight[~kept], new.weight[~kept]) and torch.equal(mine.bias[~kept], new.bias[~kept])
    assert all(not p.requires_grad for layer in net.layers()[:n - 1] for p in layer.parameters())
    assert all(p.requires_grad for layer in net.layers()[n - 1:] for p in layer.parameters())
    whole = transfer(source, n - 1, 9)
    frozen_free = int(getattr(mine, "mask", torch.ones_like(mine.weight))[kept].sum()) + int(kept.sum())
    assert updated_parameters(net) == updated_parameters(whole) - frozen_free


def test_a_partial_net_without_its_kept_maps_is_refused(source):
    with pytest.raises(ValueError, match="needs the maps it keeps"):
        transfer(source, 5, 9, "C5-keep4-mi")


@pytest.mark.parametrize("kernels", ["native", "batched"])
@pytest.mark.parametrize("n", [3, 5])
def test_the_engine_trains_a_partial_level_as_the_plain_path_does_and_holds_its_kept_maps_to_the_bit(source, n,
                                                                                                       kernels):
    level = LAYERS[n - 1]
    x, y, codes = toy()
    xt, yt, _ = toy(seed=1)
    seeds, never = [3, 4], ReachAccuracy(1.01)
    kept = [some(getattr(source, level).bias.numel(), 5, seed) for seed in seeds]
    name = f"{level}-keep5-taylor"
    plain = [transfer(source, n, s, name, m) for s, m in zip(seeds, kept)]
    histories = [train(net, x, y, codes, seed=s, stop=never, max_epochs=3, batch_size=8).history
                 for net, s in zip(plain, seeds)]
    for net, m in zip(plain, kept):  # the plain path holds them
        mine, theirs = getattr(net, level), getattr(source, level)
        assert torch.equal(mine.weight[m], theirs.weight[m]) and torch.equal(mine.bias[m], theirs.bias[m])
        assert not torch.equal(mine.bias[~m], transfer(source, n, 3, name, m).get_submodule(level).bias[~m])

    nets = [transfer(source, n, s, name, m) for s, m in zip(seeds, kept)]
    feats = torch.stack([stacked.frozen_inputs(source, x)[n - 1]] * 2)
    runs = engine.train_runs(nets, n - 1, feats, torch.stack([y, y]), codes, seeds, never, 3,
                             (stacked.frozen_inputs(source, xt)[n - 1], yt), batch_size=8, kernels=kernels,
                             frozen=torch.stack(kept))
    for net, start, history, run, m in zip(plain, nets, histories, runs, kept):
        assert [h.train_loss for h in run.history] == pytest.approx([h.train_loss for h in history], rel=1e-5)
        assert (run.weights - weights(net)).abs().max() < 0.25e-3
        # the engine keeps its parameters times 2S (stacked.ZS): there the kept maps do not move by a bit
        trained = stacked.load(build(0), n - 1, run.weights)
        before = stacked.load(build(0), n - 1, stacked.stack([start], n - 1)[0] / stacked.ZS)
        old, new = getattr(before, level), getattr(trained, level)
        assert torch.equal(new.weight[m], old.weight[m]) and torch.equal(new.bias[m], old.bias[m])
        assert not torch.equal(new.bias[~m], old.bias[~m])


@pytest.fixture(scope="module")
def scored(source):
    x, y = images(40, 2), torch.arange(40) % 4
    return maps.scores(source, 5, x, y, target_codes(4, 20, seed=0)), (source, x, y)


def test_the_ablation_score_is_the_measured_loss_change_from_deleting_a_map(scored):
    s, (source, x, y) = scored
    codes = target_codes(4, 20, seed=0)
    feats = source.features(x, 5).flatten(1).detach()
    w, b = maps.head(feats, codes[y])

    def loss(f):
        return (1.7159 * torch.tanh(2 / 3 * (f @ w.T + b)) - codes[y]).square().mean().item()
    for j in (0, 17, 119):
        deleted = feats.clone()
        deleted[:, j] = 0
        assert s["ablation"][j] == pytest.approx(loss(deleted) - loss(feats), rel=1e-3, abs=1e-7)


def test_saliency_estimates_the_ablation_and_taylor_is_the_square_of_its_first_order_term(scored):
    s, _ = scored
    assert np.corrcoef(s["saliency"], s["ablation"])[0, 1] > 0.95
    assert (s["taylor"] >= 0).all()
    assert set(s) == {"saliency", "taylor", "mi", "ablation"} and all(len(v) == 120 for v in s.values())


def test_mutual_information_is_in_bits_and_cannot_rank_maps_with_one_image_per_class():
    labels = torch.arange(8) % 4
    pooled = torch.stack([labels.float(), torch.tensor([0., 0, 1, 1, 0, 0, 1, 1]), torch.zeros(8)], 1)
    mi = maps.mutual_information(pooled, labels)
    assert mi[0] == pytest.approx(1.0) and mi[2] == 0 and 0 <= mi[1] <= 1
    one = maps.mutual_information(torch.randn(20, 6), torch.arange(20))  # k=1: every median split is 1 bit
    assert np.allclose(one, 1.0)


def test_a_recipe_keeps_its_scores_top_maps_reversed_its_bottom_ones_and_random_draws_differ():
    s = {"saliency": np.arange(120.0), "taylor": np.zeros(120), "mi": np.zeros(120), "ablation": np.zeros(120)}
    top = maps.kept_maps("C5-keep30-saliency", s, 5)
    assert top.nonzero().flatten().tolist() == list(range(90, 120))
    assert maps.kept_maps("C5-keep30-saliency-reversed", s, 5).nonzero().flatten().tolist() == list(range(30))
    draws = [maps.kept_maps(f"C5-keep30-random{r}", s, 5) for r in range(3)]
    assert all(d.sum() == 30 for d in draws) and not torch.equal(draws[0], draws[1])
    assert (maps.kept_maps("C5-keep15-random1", s, 5) <= draws[1]).all()  # one draw's maps nest as m grows
    assert torch.equal(maps.kept_maps("C5-keep30-random1", s, 5), draws[1])  # and come from the trial's seed
    ties = maps.kept_maps("C5-keep30-mi", s, 5)
    assert ties.sum() == 30 and not torch.equal(ties, maps.kept_maps("C5-keep30-random0", s, 5))


def test_the_partial_recipes_of_one_level_and_kept_count_train_in_one_group(tmp_path):
    cfg = Config.for_profile("smoke", data_dir=str(tmp_path), levels=[4, 5], sizes=[1], trials=2,
                             recipes=["frozen", "C5-keep30-mi", "C5-keep30-random0", "C5-keep60-mi"])
    found = executors.groups([RunKey(5, 1, 0, "C5-keep30-mi")], cfg)
    assert found == [(("C5-keep30-mi", "C5-keep30-random0"), 5, 1)]  # computed whole, as a resumed sweep needs
    every = executors.groups([RunKey(n, 1, 0, r) for n, r in [(4, "frozen"), (5, "frozen"), (5, "C5-keep60-mi")]], cfg)
    assert sorted(every, key=str) == sorted([(("frozen",), 4, 1), (("frozen",), 5, 1), (("C5-keep60-mi",), 5, 1)],
                                            key=str)



# ---------------------------------------------------------------- the study, its record and its cube

@pytest.fixture(scope="module")
def study(smoke_data, tmp_path_factory):
    from ktlib.record import studies
    cfg = Config.for_profile("smoke", data_dir=str(smoke_data), results_dir=str(tmp_path_factory.mktemp("partial")))
    plan = studies.plan("partial", cfg, 1)
    plan.run(progress=False)
    return plan


def test_a_partial_sweep_keeps_every_maps_scores_and_its_runs_keep_what_the_scores_rank_highest(study):
    from ktlib.compute.experiment import Experiment
    from ktlib.record import files
    scores = study.scores()
    for _, cfg in study.configs():
        n = max(cfg.levels)
        mine = scores[scores.part == f"partial-{LAYERS[n - 1]}"]
        maps_ = getattr(build(0), LAYERS[n - 1]).bias.numel()
        assert len(mine) == maps_ * len(cfg.sizes) * cfg.trials and set(mine.n) == {n}
        exp = Experiment.load(cfg)
        task = exp.task(files.saved_source(exp)[0])
        level = LAYERS[n - 1]
        kept = task.kept(f"{level}-keep{maps_ // 4}-ablation", cfg.sizes[0], 0)
        saved = mine[(mine.k == cfg.sizes[0]) & (mine.trial == 0)].sort_values("map").ablation.to_numpy()
        assert set(kept.nonzero().flatten().tolist()) == set(np.argsort(-saved, kind="stable")[:maps_ // 4].tolist())


def test_the_cube_over_m_reads_the_level_below_as_none_kept_and_the_whole_level_as_every_map(study):
    from ktlib.analysis.partial import partial_cube
    rows = study.runs()
    c = partial_cube(rows, "C5")
    assert c.levels == [0, 15, 30, 60, 90, 120] and c.keyed_by == "chooser"
    frozen = rows[(rows.part == "partial-C5") & (rows.recipe == "frozen")]
    k = c.sizes[0]
    for m, n in ((0, 4), (120, 5)):
        want = frozen[(frozen.n == n) & (frozen.k == k)].sort_values("trial").test_accuracy.to_numpy()
        assert all(np.array_equal(c.at("test_accuracy", m, k, chooser)[0], want) for chooser in c.arrays)
    mine = rows[(rows.part == "partial-C5") & (rows.recipe == "C5-keep30-random3") & (rows.k == k)]
    assert np.array_equal(c.at("test_accuracy", 30, k, "random3")[0], mine.sort_values("trial").test_accuracy)


def test_a_scores_file_holds_signed_loss_changes_and_refuses_damage(study, tmp_path):
    import shutil

    from ktlib.record import files
    where = next(w for _, _, w in study.sweeps(needs=files.SCORES_FILE))
    meta, rows = files.read_scores(where)
    copy = tmp_path / "sweep"
    shutil.copytree(where, copy)
    bad = rows.copy()
    bad.loc[0, "mi"] = -1.0  # a mutual information is never negative
    files.write_results(copy / files.SCORES_FILE, meta, bad)
    with pytest.raises(files.ResultsError, match=r"scores.csv:3: mi=-1 is not a finite number >= 0"):
        files.read_scores(copy)
    bad = rows.copy()
    bad.loc[0, "saliency"] = -0.5  # a loss change may be negative: deleting a map may help
    files.write_results(copy / files.SCORES_FILE, meta, bad)
    assert files.read_scores(copy)[1].saliency[0] == -0.5


@pytest.mark.parametrize("kernels", ["native", "batched"])
@pytest.mark.parametrize("n", [3, 5])
def test_the_kernels_hold_the_frozen_maps_gradients_at_zero_and_leave_the_rest_as_they_were(source, n, kernels):
    level = LAYERS[n - 1]
    maps_ = getattr(source, level).bias.numel()
    nets = [transfer(source, n, s, f"{level}-keep3-mi", some(maps_, 3, s)) for s in (1, 2)]
    frozen = torch.stack([getattr(net, level).frozen_maps for net in nets])
    theta = stacked.stack(nets, n - 1)
    x = torch.stack([stacked.frozen_inputs(source, images(20, s))[n - 1] for s in (1, 2)])
    target = target_codes(5, 20, seed=1)[torch.arange(20) % 5].expand(2, -1, -1).contiguous()
    batch = torch.stack([torch.randperm(20, generator=torch.Generator().manual_seed(s)) for s in (1, 2)])
    steps = engine.KERNELS[kernels](nets[0], n - 1)
    whole = steps.gradients(theta, x, target, batch, torch.empty_like(theta)).clone()
    held = steps.gradients(theta, x, target, batch, torch.empty_like(theta), frozen)
    w = getattr(nets[0], level).weight
    per_map, weights = w[0].numel(), w.numel()
    for r in range(2):
        zero = torch.zeros(theta.shape[1], dtype=torch.bool)
        zero[:weights].view(maps_, per_map)[frozen[r]] = True
        zero[weights:weights + maps_][frozen[r]] = True
        assert (held[r][zero] == 0).all() and torch.equal(held[r][~zero], whole[r][~zero])
        assert (whole[r][zero] != 0).any()


def test_scores_that_differ_in_their_last_digits_still_rank_the_maps_as_the_record_does():
    from ktlib.analysis.partial import score_agreement
    rows = [(5, 1, t, m) for t in range(2) for m in range(4)]
    record = pd.DataFrame(rows, columns=["n", "k", "trial", "map"]).assign(
        saliency=[4.0, 3.0, 2.0, 1.0] * 2, taylor=[1e-8, 3e-8, 2e-8, 4e-8] * 2)
    rounded = record.assign(taylor=record.taylor * (1 + 1e-5))  # another CPU's last digits
    assert score_agreement(rounded, record) == {"same ranking": True, "same as the record": False,
                                                "largest relative difference": pytest.approx(1e-5)}
    swapped = record.copy()
    swapped.loc[5, "saliency"], swapped.loc[6, "saliency"] = 2.0, 3.0  # trial 1's maps 1 and 2 change places
    assert score_agreement(swapped, record)["same ranking"] is False
    assert score_agreement(record.sample(frac=1, random_state=0), record)["same as the record"] is True  # row order
