import numpy as np
import pytest
import torch

from ktlib.compute.model import (
    C3_TABLE,
    PAPER_FREE_PARAMETERS,
    build,
    connections,
    forward_flops,
    free_parameters,
    predict,
    scaled_tanh,
    target_codes,
    training_flops,
)


def test_free_parameters_match_table_1_layer_by_layer():
    counts = free_parameters(build(0))
    assert counts == PAPER_FREE_PARAMETERS
    assert sum(counts.values()) == 52256  # the total the paper prints, a check on our copy of its rows


def test_free_parameters_are_all_tensor_entries_except_masked_c3_weights():
    net = build(0)
    masked_out = int((net.C3.mask == 0).sum())
    assert masked_out == (16 * 6 - 60) * 25  # 60 of the 96 map pairs are connected
    assert sum(p.numel() for p in net.parameters()) - masked_out == 52256


def test_c3_follows_lecuns_connection_table():
    mask = build(0).C3.mask[:, :, 0, 0]
    assert [tuple(np.flatnonzero(row.numpy())) for row in mask] == [tuple(sorted(t)) for t in C3_TABLE]
    assert mask.sum(1).tolist() == [3] * 6 + [4] * 9 + [6]


def test_masked_c3_weights_stay_zero_through_training():
    net = build(0)
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    for _ in range(3):
        loss = net(torch.randn(4, 1, 32, 32)).pow(2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert (net.C3.weight[net.C3.mask == 0] == 0).all()


def test_shapes_through_the_layers():
    net, x = build(0), torch.zeros(3, 1, 32, 32)
    shapes = [tuple(net.features(x, n).shape[1:]) for n in range(1, 7)]
    assert shapes == [(6, 28, 28), (6, 14, 14), (16, 10, 10), (16, 5, 5), (120, 1, 1), (20, 1, 1)]
    assert net(x).shape == (3, 20)


def test_forward_from_a_level_equals_the_full_forward():
    net, x = build(1), torch.randn(2, 1, 32, 32)
    for n in range(6):
        torch.testing.assert_close(net(net.features(x, n), start=n), net(x))


def test_scaled_tanh_maps_plus_minus_one_to_itself():
    assert scaled_tanh(torch.tensor([1.0, -1.0])).tolist() == pytest.approx([1.0, -1.0], abs=1e-4)


def test_initialisation_is_lecun_fan_in_uniform_and_seeded():
    net = build(3)
    assert net.C1.weight.abs().max() <= 2.4 / 25
    assert net.C5.weight.abs().max() <= 2.4 / 400 and net.C5.weight.abs().max() > 0.9 * 2.4 / 400
    c3_bound = 2.4 / (net.C3.mask.flatten(1).sum(1) )
    assert (net.C3.weight.abs().amax((1, 2, 3)) <= c3_bound).all()
    assert net.S2.coef.abs().max() <= 0.6
    for a, b in zip(build(3).state_dict().values(), net.state_dict().values()):
        assert torch.equal(a, b)
    assert not torch.equal(build(4).C1.weight, net.C1.weight)


def test_random_codes_are_distinct_plus_minus_one_and_seeded():
    codes = target_codes(20, 20, seed=5)
    assert codes.shape == (20, 20) and set(codes.unique().tolist()) == {-1.0, 1.0}
    assert len(torch.unique(codes, dim=0)) == 20
    assert torch.equal(codes, target_codes(20, 20, seed=5)) and not torch.equal(codes, target_codes(20, 20, seed=6))
    assert len(torch.unique(target_codes(4, 2, seed=0), dim=0)) == 4  # every code used: still distinct


def test_one_of_n_codes():
    codes = target_codes(5, 5, scheme="one-of-n")
    assert torch.equal(codes, torch.eye(5) * 2 - 1)


@pytest.mark.parametrize("args, message", [
    ((5, 4, 0, "one-of-n"), "one-of-N codes need bits == classes"),
    ((5, 2, 0, "random"), "2 bits cannot give 5 distinct codes"),
    ((5, 5, 0, "gray"), "unknown code scheme"),
])
def test_bad_code_requests_are_clear_errors(args, message):
    with pytest.raises(ValueError, match=message):
        target_codes(*args)


def test_prediction_is_the_nearest_code():
    codes = target_codes(20, 20, seed=0)
    noisy = codes[[3, 7, 19]] * 0.6 + 0.3 * torch.randn(3, 20, generator=torch.Generator().manual_seed(0))
    assert predict(noisy, codes).tolist() == [3, 7, 19]


def test_connections_are_lecuns_counts_and_give_the_training_flops():
    conn = connections(build(0))
    # LeCun et al. (1998) count 122,304, 5,880, 151,600, 2,000 and 48,120 connections for C1 to C5
    assert conn == {"C1": 122304, "S2": 5880, "C3": 151600, "S4": 2000, "C5": 48120, "F6": 2420}
    assert forward_flops(conn, 0) == 2 * 332324 and forward_flops(conn, 5) == 2 * 2420
    # frozen C1-C5: only F6's forward pass and weight gradients, nothing below it
    assert training_flops(conn, 5) == 2 * 2 * 2420
    assert training_flops(conn, 0) == 2 * (2 * 332324 + 332324 - 122304)
