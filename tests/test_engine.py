"""The engine against the plain path: same gradients, same training, same features, within rounding."""
import threading

import pytest
import torch
import torch.nn.functional as F

from ktlib.compute import engine, native, stacked
from ktlib.compute.model import LAYERS, TANH_A, build, predict, target_codes
from ktlib.compute.train import ReachAccuracy, evaluate, train
from ktlib.compute.transfer import layer_lrs, trainable, transfer
from ktlib.recipes import RECIPES


@pytest.fixture(scope="module")
def source():
    return build(123)


def weights(net) -> torch.Tensor:
    """A net's trainable parameters, flattened in the engine's order."""
    return torch.cat([p.detach().flatten() for p in trainable(net)])


def images(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 32, 32, generator=g) * 1.275 - 0.1  # the inputs' range, background to ink


def toy(n=40, classes=4, seed=0):
    """Separable images: one bright block per class, on noise."""
    y = torch.arange(n) % classes
    x = images(n, seed) * 0.1 - 0.1
    for i, c in enumerate(y.tolist()):
        x[i, 0, 4 + 6 * c: 9 + 6 * c, 6:26] = 1.175
    return x, y, target_codes(classes, 20, seed=0)


KERNELS = ["native", "batched"]

# kernels.c's Adam step is written as PyTorch 2.13's fused CPU kernel computes it with its AVX-512 code; elsewhere
# PyTorch runs other code, which has not been compared
TORCHS_AVX512 = pytest.mark.skipif(torch.backends.cpu.get_cpu_capability() != "AVX512",
                                   reason="the C step is PyTorch's AVX-512 code's")


@pytest.mark.parametrize("kernels", KERNELS)
@pytest.mark.parametrize("n", range(6))
def test_gradients_equal_autograd_on_the_plain_net(source, n, kernels):
    net = transfer(source, n, seed=7)
    x, y = images(20, 1), torch.arange(20) % 5  # 20 images: a full vector of the native kernels and 4 more
    codes = target_codes(5, 20, seed=1)
    F.mse_loss(net(x), codes[y]).backward()
    expected = torch.cat([p.grad.flatten() for p in trainable(net)])

    theta = stacked.stack([net], n)
    batch = torch.randperm(20, generator=torch.Generator().manual_seed(0))[None]  # shuffled, as in training
    grad = engine.KERNELS[kernels](net, n).gradients(theta, stacked.frozen_inputs(source, x)[n][None],
                                                     codes[y][None], batch, torch.empty_like(theta))
    # the engine's parameters are 2S times the net's, so their gradients are the net's divided by 2S
    torch.testing.assert_close(grad[0] * stacked.ZS, expected, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("kernels", KERNELS)
@pytest.mark.parametrize("n", range(6))
def test_outputs_equal_the_plain_nets(source, n, kernels):
    nets = [transfer(source, n, seed=s) for s in (1, 2)]
    x = images(37, 5)
    theta = stacked.stack(nets, n)
    out = engine.KERNELS[kernels](nets[0], n).outputs(theta, stacked.frozen_inputs(source, x)[n], shared=True)
    torch.testing.assert_close(out, torch.stack([net(x) for net in nets]), rtol=0, atol=1e-5)


@pytest.mark.parametrize("kernels", KERNELS)
@pytest.mark.parametrize("n", range(6))
def test_training_follows_the_plain_path(source, n, kernels):
    """Three epochs of two runs side by side: the same losses, weights and test accuracy as one at a time."""
    x, y, codes = toy()
    xt, yt, _ = toy(seed=1)
    seeds, never = [3, 4], ReachAccuracy(1.01)
    plain = [transfer(source, n, s) for s in seeds]
    histories = [train(net, x, y, codes, seed=s, stop=never, max_epochs=3, batch_size=8).history
                 for net, s in zip(plain, seeds)]

    feats = torch.stack([stacked.frozen_inputs(source, x)[n]] * 2)
    runs = engine.train_runs([transfer(source, n, s) for s in seeds], n, feats, torch.stack([y, y]), codes,
                             seeds, never, 3, (stacked.frozen_inputs(source, xt)[n], yt), batch_size=8,
                             kernels=kernels)
    for net, history, run in zip(plain, histories, runs):
        assert [h.train_loss for h in run.history] == pytest.approx([h.train_loss for h in history], rel=1e-5)
        assert [h.train_accuracy for h in run.history] == [h.train_accuracy for h in history]
        assert run.stopped_by == "cap"
        diff = (run.weights - weights(net)).abs()
        # Adam steps a weight by about lr whatever its gradient's size, so a weight whose gradient is
        # rounding noise may step either way: a quarter step is the bound for any one weight
        assert diff.max() < 0.25e-3 and diff.mean() < 1e-6
        assert run.test_accuracy == evaluate(net, xt, yt, codes)[0]


def test_each_run_stops_by_its_own_rule_and_then_stops_updating(source):
    x, y, codes = toy(n=48)
    seeds, rule = [0, 1, 2], ReachAccuracy(0.75)
    plain = [transfer(source, 3, s) for s in seeds]
    lengths = [len(train(net, x, y, codes, seed=s, stop=rule, max_epochs=60, batch_size=8).history)
               for net, s in zip(plain, seeds)]
    assert len(set(lengths)) > 1, "the runs should stop at different epochs for this test to mean anything"
    finished = []
    feats = stacked.frozen_inputs(source, x)[3]
    runs = engine.train_runs([transfer(source, 3, s) for s in seeds], 3, torch.stack([feats] * 3),
                             torch.stack([y] * 3), codes, seeds, rule, 60, (feats, y), batch_size=8,
                             on_run=lambda i, run: finished.append((i, len(run.history))))
    assert [len(r.history) for r in runs] == lengths and {r.stopped_by for r in runs} == {"reached"}
    assert sorted(finished, key=lambda f: f[1]) == sorted(enumerate(lengths), key=lambda f: f[1])
    for net, run in zip(plain, runs):  # a run that stopped early kept the weights it stopped with
        diff = (run.weights - weights(net)).abs()
        assert diff.max() < 0.25e-3 and diff.mean() < 1e-6


@pytest.mark.parametrize("n", range(6))
def test_frozen_inputs_are_the_plain_nets_layer_outputs(source, n):
    x = images(10, 2)
    expected = source.features(x, n)
    if LAYERS[n] in ("S2", "S4"):  # a sub-sampling layer's input is the sum over each 2x2 tile
        expected = F.avg_pool2d(expected, 2) * 4
    torch.testing.assert_close(stacked.frozen_inputs(source, x)[n], expected.flatten(1) if n == 5 else expected,
                               rtol=1e-5, atol=1e-5)


def test_feature_cache_is_keyed_by_the_source_weights_and_the_images(source):
    cache, x = stacked.FeatureCache(), images(6, 3)
    first = cache.get(source, x, 4)
    assert all(torch.equal(cache.get(source, x.clone(), n), f) for n, f in enumerate(stacked.frozen_inputs(source, x)))
    assert (cache.hits, cache.misses) == (6, 1)  # the same bytes: served from the cache, every level as computed
    changed = build(123)
    with torch.no_grad():
        changed.C1.bias[0] += 1e-3
    assert not torch.equal(cache.get(changed, x, 4), first) and cache.misses == 2
    other = x.clone()
    other[0, 0, 0, 0] += 1e-3
    cache.get(source, other, 4)
    assert cache.misses == 3
    assert torch.equal(cache.get(source, x, 4), first)  # and the original entry is still served


def test_c1_as_24_stride_2_maps_is_c1_at_the_four_tile_positions():
    w, b, x = torch.randn(1, 6, 1, 5, 5), torch.randn(1, 6), images(3, 4)
    w24, b24 = stacked.phase_kernels(w, b)
    phased = F.conv2d(x, w24[0], b24[0], stride=2).view(3, 4, 6, 14, 14)
    full = F.conv2d(x, w[0], b[0])
    for p, (i, j) in enumerate(stacked.PHASES):
        torch.testing.assert_close(phased[:, p], full[..., i::2, j::2])
    gw, gb = torch.randn_like(w24), torch.randn_like(b24)  # the gradient map is the adjoint
    back_w, back_b = stacked.phase_kernel_grads(gw, gb)
    torch.testing.assert_close((w24 * gw).sum() + (b24 * gb).sum(), (w * back_w).sum() + (b * back_b).sum())


def test_a_cancelled_group_stops_at_the_next_epoch(source):
    x, y, codes = toy()
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(engine.Cancelled, match="2 of 2 runs unfinished"):
        engine.train_runs([transfer(source, 5, s) for s in (0, 1)], 5,
                          torch.stack([stacked.frozen_inputs(source, x)[5]] * 2), torch.stack([y, y]), codes,
                          [0, 1], ReachAccuracy(1.01), 10, (stacked.frozen_inputs(source, x)[5], y), cancel=cancel)


def test_the_native_kernels_refuse_what_they_are_not_built_for(source):
    x, y, codes = toy()
    feats = torch.stack([stacked.frozen_inputs(source, x)[5]])
    narrow = build(123, code_bits=12)
    with pytest.raises(ValueError, match="20 code bits, not 12"):
        engine.train_runs([transfer(narrow, 5, 0)], 5, feats, y[None], codes[:, :12], [0], ReachAccuracy(1.01), 1,
                          (feats[0], y))
    net = transfer(source, 5, 0)
    theta = stacked.stack([net], 5)
    with pytest.raises(ValueError, match="at most 32"):
        engine.NativeKernels(net, 5).gradients(theta, feats, codes[y][None], torch.arange(40)[None],
                                               torch.empty_like(theta))


@pytest.mark.parametrize("kernels", KERNELS)
@pytest.mark.parametrize("n", [1, 3, 5])
def test_fine_tuning_follows_the_plain_path(source, n, kernels):
    """A fine-tuned run is the whole net trained from copied weights: the engine from layer 0, the plain path
    with nothing frozen; three epochs agree as frozen runs do."""
    x, y, codes = toy()
    xt, yt, _ = toy(seed=1)
    never = ReachAccuracy(1.01)
    plain = transfer(source, n, 3, "fine-tuned")
    assert len(trainable(plain)) == len(list(plain.parameters()))  # nothing frozen
    history = train(plain, x, y, codes, seed=3, stop=never, max_epochs=3, batch_size=8).history
    run, = engine.train_runs([transfer(source, n, 3, "fine-tuned")], 0, x[None], y[None], codes, [3], never, 3,
                             (xt, yt), batch_size=8, kernels=kernels)
    assert [h.train_loss for h in run.history] == pytest.approx([h.train_loss for h in history], rel=1e-5)
    diff = (run.weights - weights(plain)).abs()
    assert diff.max() < 0.25e-3 and diff.mean() < 1e-6
    assert run.test_accuracy == evaluate(plain, xt, yt, codes)[0]


@pytest.mark.parametrize("kernels", KERNELS)
@pytest.mark.parametrize("recipe, n", [("fine-tuned-lr0.1", 2), ("fine-tuned-lr0.01", 5)])
def test_fine_tuning_the_copied_layers_at_a_lower_rate_follows_the_plain_path(source, recipe, n, kernels):
    """The copied layers at a share of the rate: a parameter group of their own in both paths."""
    x, y, codes = toy()
    xt, yt, _ = toy(seed=1)
    never, lrs = ReachAccuracy(1.01), layer_lrs(recipe, n, 1e-3)
    assert lrs[:n] == [pytest.approx(RECIPES[recipe].lr_factor * 1e-3)] * n and lrs[n:] == [1e-3] * (6 - n)
    plain = transfer(source, n, 3, recipe)
    history = train(plain, x, y, codes, seed=3, stop=never, max_epochs=3, lr=lrs, batch_size=8).history
    run, = engine.train_runs([transfer(source, n, 3, recipe)], 0, x[None], y[None], codes, [3], never, 3,
                             (xt, yt), lr=lrs, batch_size=8, kernels=kernels)
    assert [h.train_loss for h in run.history] == pytest.approx([h.train_loss for h in history], rel=1e-5)
    diff = (run.weights - weights(plain)).abs()
    assert diff.max() < 0.25e-3 and diff.mean() < 1e-6
    moved = (weights(plain) - weights(transfer(source, n, 3, recipe))).abs()
    copied = sum(p.numel() for layer in LAYERS[:n] for p in getattr(plain, layer).parameters())
    fast = transfer(source, n, 3, "fine-tuned")
    train(fast, x, y, codes, seed=3, stop=never, max_epochs=3, batch_size=8)
    assert moved[:copied].abs().max() < (weights(fast) - weights(transfer(source, n, 3, recipe)))[:copied].abs().max()


@pytest.mark.parametrize("in_c", [False, pytest.param(True, marks=TORCHS_AVX512)])
def test_adam_with_a_slower_segment_drops_a_stopped_run_and_steps_the_rest_as_torch_does(in_c):
    """The engine's Adam with two rates, one run dropped after a step, against torch's Adam on each run alone: its step
    PyTorch's, or C's (the native kernels')."""
    g = torch.Generator().manual_seed(0)
    theta = torch.randn(2, 7, generator=g)
    grads = [torch.randn(2, 7, generator=g) for _ in range(3)]
    opt = engine.Adam(theta.clone(), [(3, 1e-4), (4, 1e-3)], native=in_c)
    kept = opt.theta
    for i, grad in enumerate(grads):
        if i == 2:
            kept = opt.keep(torch.tensor([1]))
            grad = grad[1:]
        opt.step(grad.clone())
    alone = theta[1:].clone()
    low, high = alone[:, :3].clone(), alone[:, 3:].clone()
    ref = torch.optim.Adam([{"params": [low], "lr": 1e-4 * stacked.ZS}, {"params": [high], "lr": 1e-3 * stacked.ZS}],
                           eps=1e-8 / stacked.ZS, fused=True)
    for grad in grads:
        low.grad, high.grad = grad[1:, :3].clone(), grad[1:, 3:].clone()
        ref.step()
    assert torch.equal(kept, torch.cat([low, high], 1))


@TORCHS_AVX512
@pytest.mark.parametrize("size", [*range(1, 20), 2420 * 3, 2420 * 4 + 13, 50540 * 5])
def test_the_c_adam_step_is_torchs_fused_step_to_the_bit(size):
    """Sizes with every remainder mod 16 (PyTorch's vectors, then its scalar loop), and those of groups at n=5 (F6's
    parameters for 3 runs, for 4 runs and 13 more) and n=4 (C5's and F6's for 5 runs); gradients from 1e-4 to 1e2 and
    zero, 60 steps."""
    g = torch.Generator().manual_seed(size)
    theta = torch.randn(size, generator=g) * 3
    ours, m, v, count = theta.clone(), torch.zeros(size), torch.zeros(size), torch.zeros((), dtype=torch.float32)
    ref = torch.optim.Adam([theta], lr=1e-3 * stacked.ZS, eps=1e-8 / stacked.ZS, fused=True)
    for step in range(60):
        grad = torch.randn(size, generator=g) * 10.0 ** (step % 7 - 4)
        grad[::5] = 0  # a held map's gradients
        theta.grad = grad.clone()
        ref.step()
        native.library().kt_adam(ours.data_ptr(), grad.data_ptr(), m.data_ptr(), v.data_ptr(), size,
                                 count.data_ptr(), 1e-3 * stacked.ZS, *engine.Adam.BETAS, 1e-8 / stacked.ZS)
        assert torch.equal(ours, theta), step
    assert torch.equal(m, ref.state[theta]["exp_avg"]) and torch.equal(v, ref.state[theta]["exp_avg_sq"])


@pytest.mark.parametrize("n, runs, partial", [(5, 3, False), (5, 4, False), (4, 3, True), (3, 3, False), (0, 3, False)])
def test_an_epoch_in_one_c_call_trains_as_the_step_by_step_loop_does(source, n, runs, partial, monkeypatch):
    """NativeKernels.epoch (kt_epoch: the kernels' steps and C's Adam) against the same kernels' steps one call at a
    time, each followed by the engine's Adam step (C's too, with the native kernels): runs that stop apart (an odd
    count leaves a remainder for Adam's last values), with held maps at C5. On every CPU: which of the two takes an
    epoch depends on how many groups are running then."""
    x, y, codes = toy(n=36)
    xt, yt, _ = toy(seed=1)
    feats, test = stacked.frozen_inputs(source, x)[n], (stacked.frozen_inputs(source, xt)[n], yt)
    frozen = torch.rand(runs, 120, generator=torch.Generator().manual_seed(1)) < 0.5 if partial else None

    rule = ReachAccuracy(0.5 if n in (0, 5) else 0.75)  # reached at different epochs by these runs

    def trained():
        return engine.train_runs([transfer(source, n, s) for s in range(runs)], n, torch.stack([feats] * runs),
                                 torch.stack([y] * runs), codes, list(range(runs)), rule, 12, test, batch_size=8,
                                 frozen=frozen)
    one_call = trained()
    monkeypatch.setattr(engine.NativeKernels, "epoch", engine.step_by_step)
    step_by_step = trained()
    assert len({len(run.history) for run in one_call}) > 1  # the runs stopped apart
    for a, b in zip(one_call, step_by_step):
        assert torch.equal(a.weights, b.weights) and a.curve == b.curve
        assert [(e.train_accuracy, e.train_loss) for e in a.history] == [(e.train_accuracy, e.train_loss)
                                                                         for e in b.history]


def test_threads_that_ask_the_feature_cache_for_one_set_share_its_chunks_each_computed_once(source, monkeypatch):
    """A thread that finds a set begun computes the chunks still untaken, then goes on; the numbers are the set's."""
    sets = [images(20, seed) for seed in range(2)]
    begun, shared, computed = threading.Event(), threading.Event(), []
    real = stacked._chunk_levels

    def watched(net, imgs):
        where = next((s, i) for s, x in enumerate(sets) for i in range(0, 20, 4) if torch.equal(imgs, x[i:i + 4]))
        computed.append((threading.current_thread().name, *where))
        if threading.current_thread().name == "a" and where == (0, 0):  # a holds set 0's first chunk ...
            begun.set()
            shared.wait(10)
        elif where[0] == 0:  # ... until b has taken one of set 0's others
            shared.set()
        return real(net, imgs)
    monkeypatch.setattr(stacked, "_chunk_levels", watched)
    cache, out = stacked.FeatureCache(chunk=4), {}
    first = threading.Thread(target=lambda: out.setdefault("first", cache.get_many(source, sets[:1], 5)), name="a")
    first.start()
    begun.wait(10)
    second = threading.Thread(target=lambda: out.setdefault("second", cache.get_many(source, sets, 5)), name="b")
    second.start()
    first.join(10)
    second.join(10)
    assert sorted(where for _, *where in computed) == [[s, i] for s in (0, 1) for i in range(0, 20, 4)]  # each once
    assert {who for who, s, _ in computed if s == 0} == {"a", "b"} and (cache.misses, cache.hits) == (2, 1)
    monkeypatch.undo()
    assert all(torch.equal(a, stacked.frozen_inputs(source, s)[5]) for a, s in zip(out["second"], sets))
    assert torch.equal(out["first"][0], out["second"][0])


def test_a_feature_set_that_failed_is_computed_again_by_the_next_caller(source, monkeypatch):
    """A chunk that fails: its thread raises, a thread that shares the set sees the same error, and the set is
    computed whole again by the next caller."""
    x, real, calls = images(8, 5), stacked._chunk_levels, []
    second_took, seen = threading.Event(), {}

    def fails_once(net, imgs):
        calls.append(threading.current_thread().name)
        if len(calls) == 1:  # the first chunk, held until the other thread has taken the second, then fails
            second_took.wait(10)
            raise RuntimeError("out of memory")
        if threading.current_thread().name == "b":
            second_took.set()
        return real(net, imgs)
    monkeypatch.setattr(stacked, "_chunk_levels", fails_once)
    cache = stacked.FeatureCache(chunk=4)

    def ask():
        try:
            seen[threading.current_thread().name] = cache.get(source, x, 3)
        except RuntimeError as e:
            seen[threading.current_thread().name] = e
    first = threading.Thread(target=ask, name="a")
    first.start()
    for _ in range(1000):  # until a has taken the first chunk (at most 10 s)
        if calls:
            break
        threading.Event().wait(0.01)
    other = threading.Thread(target=ask, name="b")
    other.start()
    first.join(10)
    other.join(10)
    assert calls == ["a", "b"] and all(str(seen[t]) == "out of memory" for t in "ab")
    assert torch.equal(cache.get(source, x, 3), stacked.frozen_inputs(source, x)[3]) and cache.misses == 2


def test_a_runs_predictions_are_its_test_accuracy(source):
    x, y, codes = toy()
    xt, yt, _ = toy(seed=1)
    feats = stacked.frozen_inputs(source, x)[4]
    runs = engine.train_runs([transfer(source, 4, s) for s in (0, 1)], 4, torch.stack([feats] * 2),
                             torch.stack([y] * 2), codes, [0, 1], ReachAccuracy(1.01), 2,
                             (stacked.frozen_inputs(source, xt)[4], yt), batch_size=8)
    for run in runs:
        assert run.predictions.shape == yt.shape
        assert (run.predictions == yt).float().mean().item() == pytest.approx(run.test_accuracy)


def test_a_net_loaded_with_a_runs_weights_computes_what_the_run_did(source):
    x, y, codes = toy()
    xt, yt, _ = toy(seed=1)
    run, = engine.train_runs([build(5)], 0, x[None], y[None], codes, [5], ReachAccuracy(1.01), 2, (xt, yt),
                             batch_size=8)
    net = stacked.load(build(6), 0, run.weights)
    assert evaluate(net, xt, yt, codes)[0] == run.test_accuracy


def test_frozen_inputs_do_not_depend_on_the_threads_the_process_has(source):
    """On more threads oneDNN may sum in another order; the features are computed on one, as groups are."""
    images = torch.randn(700, 1, 32, 32, generator=torch.Generator().manual_seed(4))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = stacked.frozen_inputs(source, images)
        torch.set_num_threads(4)
        four = stacked.frozen_inputs(source, images)
        assert torch.get_num_threads() == 4  # and it leaves the caller's setting alone
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(a, b) for a, b in zip(one, four))


def _cpu_flags() -> set[str]:
    return set(native.cpu().get("flags", "").split())


# what each fallback must compile to on an x86 CPU: the build a CPU without AVX-512 gets, and a build with no
# machine-specific instruction at all
FALLBACKS = {"no-avx512": "avx2", "portable": "sse2"}


@pytest.mark.skipif(not {"avx2", "fma"} <= _cpu_flags(), reason="the fallbacks are x86 builds")
@pytest.mark.parametrize("target", FALLBACKS)
@pytest.mark.parametrize("n", range(6))
def test_the_kernels_built_without_avx512_give_autograds_gradients(source, n, target, monkeypatch):
    monkeypatch.setenv(native.TARGET_ENV, target)
    assert native.vectors() == FALLBACKS[target]  # the fallback is the library that computes below
    test_gradients_equal_autograd_on_the_plain_net(source, n, "native")
    test_outputs_equal_the_plain_nets(source, n, "native")


@pytest.mark.skipif("avx512f" not in _cpu_flags(), reason="this CPU has no AVX-512")
def test_on_a_cpu_with_avx512_the_kernels_use_it(monkeypatch):
    monkeypatch.delenv(native.TARGET_ENV, raising=False)
    assert native.vectors() == "avx512"


def test_an_unknown_kernel_target_is_one_clear_error(monkeypatch):
    monkeypatch.setenv(native.TARGET_ENV, "avx1024")
    with pytest.raises(native.NativeUnavailable, match=r"\$KTLIB_NATIVE_TARGET='avx1024' is not one of native, "):
        native.library()


@pytest.fixture
def one_thread():
    """As a group trains (executors.train_group): on more threads, torch may split a long sum differently."""
    with stacked.torch_threads():
        yield


class _Given:
    """Kernels whose outputs are given: evaluate's arithmetic alone, with the nearest codes found as `kernels` find
    them (the native ones: kt_nearest, else model.predict)."""

    def __init__(self, out, kernels="native"):
        self.out, self.kernels = out, kernels

    def classify(self, theta, x, codes, shared=False):
        found = native.nearest(self.out, codes) if self.kernels == "native" else None
        return self.out, predict(self.out, codes) if found is None else found


@pytest.mark.parametrize("kernels", KERNELS)
@pytest.mark.parametrize("images", [20, 100, 200, 400, 800, 1000, 4000])  # k = 1..40, the test set, more
def test_evaluating_all_runs_at_once_gives_each_runs_own_numbers(images, kernels, one_thread):
    g = torch.Generator().manual_seed(images)
    codes = target_codes(20, 20, seed=0)
    for runs in (1, 3, 5):
        out = torch.tanh(torch.randn(runs, images, 20, generator=g) * 2) * 1.7159
        y = torch.randint(0, 20, (runs, images), generator=g)
        accs, losses, preds = engine.evaluate(_Given(out, kernels), torch.zeros(runs, 1), None, y, codes)
        assert engine.evaluate(_Given(out, kernels), torch.zeros(runs, 1), None, y, codes, target=codes[y])[1] == losses
        for r in range(runs):  # run by run, as the plain path computes them: equal, not close
            assert losses[r] == F.mse_loss(out[r], codes[y[r]]).item()
            assert torch.equal(preds[r], torch.cdist(out[r], codes).argmin(1))
            assert accs[r] == (preds[r] == y[r]).sum().item() / images


@pytest.mark.parametrize("rows", [7, 25, 26, 800])  # cdist: one way up to 25 rows, another above
def test_the_nearest_codes_the_kernels_vouch_for_are_the_ones_torch_finds(rows):
    """native.nearest against model.predict (torch.cdist, argmin): on outputs spread uniformly over the outputs' range
    and on outputs pulled close to codes; on outputs halfway between two codes, an output or a code that is no number,
    it must leave the choice to torch."""
    gen = torch.Generator().manual_seed(rows)
    codes = target_codes(20, 20, seed=0)
    spread = (torch.rand(5, rows, 20, generator=gen) * 2 - 1) * TANH_A  # the outputs' range
    near = codes[torch.randint(0, 20, (5, rows), generator=gen)] * 0.9 + torch.randn(5, rows, 20, generator=gen) * 0.3
    vouched = 0
    for out in (spread, near, spread[0]):
        found = native.nearest(out, codes)
        if found is not None:
            vouched += 1
            assert torch.equal(found, predict(out, codes))
    assert vouched >= 2  # most sets are vouched for whole: the comparison is not empty
    halfway = spread.clone()
    halfway[2, rows // 2] = (codes[3] + codes[11]) / 2  # exactly as far from both
    assert native.nearest(halfway, codes) is None
    lost = spread.clone()
    lost[0, 0] = float("nan")  # an output that is no number: torch's answer
    assert native.nearest(lost, codes) is None
    assert torch.equal(native.nearest(lost, codes[:1]), predict(lost, codes[:1]))  # one code: always it
    broken = codes.clone()
    broken[5, 0] = float("nan")  # a code that is no number: the whole call is torch's
    assert native.nearest(spread, broken) is None


@pytest.mark.parametrize("classes", [5, 20, 39])  # C finds the codes four at a time, then the rest one by one
@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("n", range(6))
def test_outputs_and_their_nearest_codes_in_one_call_are_the_outputs_and_torchs_nearest_codes(source, n, shared,
                                                                                             classes):
    nets = [transfer(source, n, seed=s) for s in (1, 2, 3)]
    theta, x = stacked.stack(nets, n), stacked.frozen_inputs(source, images(37, 5))[n]
    theta[:, -2420:] *= 30  # F6's weights and biases: outputs out towards +-A, most far nearer one code than the rest
    x = x if shared else torch.stack([x, x.flip(0), x.roll(1, 0)])
    codes = target_codes(classes, 20, seed=0)
    out, found = native.classify(n, theta, x, shared, codes)
    assert torch.equal(out, native.outputs(n, theta, x, shared))
    assert found is not None and torch.equal(found, predict(out, codes)) and torch.equal(found, native.nearest(out, codes))
    broken = codes.clone()
    broken[classes // 2, 0] = float("nan")  # a code that is no number: the whole call is torch's
    assert native.classify(n, theta, x, shared, broken)[1] is None
    assert native.classify(n, theta, x, shared, codes / 0)[1] is None  # codes that are infinite: likewise
    assert torch.equal(native.classify(n, theta, x, shared, codes[:1])[1], torch.zeros(3, 37, dtype=torch.int64))


@pytest.mark.parametrize("parts", [1, 2])
def test_where_the_kernels_cannot_vouch_for_the_nearest_codes_all_are_torchs(monkeypatch, parts):
    """A call, or one of the parts of a split call, that leaves a code unfound: model.predict on all the call's
    outputs at once, so that torch sees the shapes it would unsplit. The other part's answer, here wrong on purpose,
    is not used."""
    codes, g = target_codes(20, 20, seed=0), torch.Generator().manual_seed(0)
    out = torch.tanh(torch.randn(4, 30, 20, generator=g))
    halves = {0: (out[:2], torch.zeros(2, 30, dtype=torch.int64)), 2: (out[2:], None)}
    monkeypatch.setattr(native, "classify", lambda n, theta, x, shared, codes: (out, None) if parts == 1
                        else halves[int(theta[0, 0])])
    asked = []
    monkeypatch.setattr(engine, "predict", lambda o, c: asked.append(tuple(o.shape)) or predict(o, c))
    kernels = engine.NativeKernels(build(0), 5, engine.Helpers(2))
    monkeypatch.setattr(kernels, "_parts", lambda runs, flops: parts)
    got = kernels.classify(torch.arange(4.0)[:, None].expand(4, 2420), torch.zeros(4, 30, 120), codes)
    kernels.helpers.close()
    assert torch.equal(got[0], out) and torch.equal(got[1], predict(out, codes)) and asked == [(4, 30, 20)]
    assert not torch.equal(predict(out[:2], codes), halves[0][1])  # the wrong answer would have shown
