"""The benchmark's ceiling, the arithmetic it counts, and its model of a Dask cluster: what they compute (no timing is
asserted)."""
import math
import sys

import pytest
import torch
from conftest import ROOT

from ktlib.compute import engine, stacked
from ktlib.compute.model import build, target_codes
from ktlib.compute.train import Never
from ktlib.compute.transfer import transfer

sys.path.insert(0, str(ROOT / "benchmarks"))  # as `python benchmarks/bench.py` finds its modules
import costs  # noqa: E402
import peak  # noqa: E402


def test_the_fma_peak_is_measured_at_each_vector_width_on_each_thread():
    rates = peak.fma_peak(threads=2, seconds=0.01)
    assert list(rates) == list(peak.WIDTHS)
    assert all(math.isfinite(r) and r > 0 for r in rates.values())


def test_a_source_net_as_a_task_lets_its_sweep_start_without_waiting_for_the_others():
    sweeps = [(10.0, [5.0, 3.0]), (10.0, [4.0])]
    # trained by the client one after another: the second sweep waits until 20 s
    assert costs.simulate(sweeps, 2) == 24.0
    # as tasks, both nets train at once on the two workers, and every group follows at 10 s
    assert costs.simulate_sources_as_tasks(sweeps, 2) == 17.0
    # on one worker the nets take its time too
    assert costs.simulate_sources_as_tasks(sweeps, 1) == 32.0


@pytest.mark.parametrize("images, epochs", [(8, 9), (20, 7), (40, 12)])  # one, three and five steps an epoch
def test_the_curve_readings_counted_are_the_test_passes_a_run_makes(images, epochs, monkeypatch):
    gen, source, n = torch.Generator().manual_seed(images), build(5), 5
    x, y = torch.rand(1, images, 120, 1, 1, generator=gen), torch.randint(0, 4, (1, images), generator=gen)
    test = (torch.rand(30, 120, 1, 1, generator=gen), torch.randint(0, 4, (30,), generator=gen))
    passes = []
    evaluate = engine.evaluate
    monkeypatch.setattr(engine, "evaluate", lambda *a, shared=False, **kw: (
        passes.append(shared) or evaluate(*a, shared=shared, **kw)))
    with stacked.torch_threads():
        engine.train_runs([transfer(source, n, 0, "frozen", None)], n, x, y, target_codes(4, 20, seed=0), [0],
                          Never(), epochs, test, batch_size=8, validation=test)
    # every pass over a shared set: the curve's readings, then the final test and the validation pass
    assert passes.count(True) == costs.curve_readings(epochs, math.ceil(images / 8)) + 2
