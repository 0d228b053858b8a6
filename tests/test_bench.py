"""The benchmark's ceiling and its model of a Dask cluster: what they compute (no timing is asserted)."""
import math
import sys

from conftest import ROOT

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
