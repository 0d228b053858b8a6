"""The engine's groups on a real Dask cluster on loopback: the same numbers, faults survived, errors named."""
import contextlib
import dataclasses
import logging
import os
import re
import signal
import socket
import threading
import time
from pathlib import Path

import pytest
from conftest import dry_run, ktlib_cli, run, write_emnist
from distributed import Client, LocalCluster
from test_sweep import NUMBERS, small

import ktlib
from ktlib import config
from ktlib.compute import cluster, executors, experiment, native
from ktlib.compute import data as D
from ktlib.recipes import RECIPES
from ktlib.record import files, studies

ROWS = NUMBERS + ["recipe"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_emnist(tmp_path_factory.mktemp("emnist"), {"train": 14, "test": 10})


@contextlib.contextmanager
def loopback(workers: int, **env):
    """A LocalCluster of worker processes (with these environment variables) on loopback; this process's
    environment, which Dask's nannies write to, is put back afterwards."""
    saved = dict(os.environ)
    try:
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                          dashboard_address="127.0.0.1:0", env=env) as local:
            yield local
    finally:
        cluster.restore_environment(saved)


@pytest.fixture(scope="module")
def scheduler():
    """A running cluster to join by its address, as on SLURM: two worker processes behind nannies."""
    with loopback(2) as local, Client(local) as client:
        yield local.scheduler_address, client


def in_order(rows):
    return rows[ROWS].sort_values(["recipe", "n", "k", "trial"], ignore_index=True)


# --------------------------------------------------------------------------- the choice

def test_the_cluster_is_not_part_of_the_experiment_and_a_bad_one_is_refused_naming_the_field():
    assert "cluster" not in ktlib.Config(cluster="local:2").experiment()
    assert ktlib.Config(cluster="local:2").experiment() == ktlib.Config().experiment()
    assert config.cluster_target("tcp://10.0.0.5:8786") == ("address", "tcp://10.0.0.5:8786")
    for bad in ("local:0", "local:two", "10.0.0.5:8786", "tcp://host", 2):
        with pytest.raises(ValueError, match="cluster must be None, 'local:N'"):
            ktlib.Config(cluster=bad)
    with pytest.raises(ValueError, match="engine='plain' runs one run at a time"):
        ktlib.Config(cluster="local:2", engine="plain")


def test_a_scheduler_that_does_not_answer_is_one_error_before_the_source_net_is_trained(tmp_path, data_dir):
    cfg = small(tmp_path, data_dir, cluster="tcp://127.0.0.1:1")
    with pytest.raises(RuntimeError, match=r"cluster='tcp://127\.0\.0\.1:1': no Dask scheduler answered there"):
        ktlib.run(cfg, progress=False)
    assert not Path(cfg.results_dir).exists()  # nothing is made before the cluster answers


@contextlib.contextmanager
def server(greeting: bytes | None):
    """A TCP server on loopback that, to each connection, writes `greeting` (None: nothing) and then waits."""
    listener = socket.create_server(("127.0.0.1", 0))
    held = []

    def serve():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            held.append(conn)
            if greeting is not None:
                conn.sendall(greeting)

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield f"tcp://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()
        for conn in held:
            conn.close()


@pytest.mark.parametrize("greeting, says", [
    (None, "it accepted a connection but sent nothing in 1 s"),  # as a dashboard's HTTP port does
    (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", "it does not speak Dask's protocol (it sent b'HTTP/1.1'"),
])
def test_an_address_that_is_not_a_dask_scheduler_is_one_error_and_nothing_is_made(tmp_path, data_dir, monkeypatch,
                                                                                 greeting, says):
    monkeypatch.setattr(cluster, "CONNECT_SECONDS", 1)
    with server(greeting) as address:
        cfg = small(tmp_path, data_dir, cluster=address)
        start = time.monotonic()
        with pytest.raises(RuntimeError, match=re.escape(f"cluster={address!r}: {says}")):
            ktlib.run(cfg, progress=False)
    assert time.monotonic() - start < 30 and not Path(cfg.results_dir).exists()


def test_a_real_schedulers_dashboard_port_is_refused_within_the_connect_timeout(tmp_path, data_dir, monkeypatch,
                                                                               scheduler):
    monkeypatch.setattr(cluster, "CONNECT_SECONDS", 1)
    port = scheduler[1].dashboard_link.split(":")[2].split("/")[0]
    cfg = small(tmp_path, data_dir, cluster=f"tcp://127.0.0.1:{port}")
    with pytest.raises(RuntimeError, match="sent nothing in 1 s, as a Dask scheduler does at once: not a scheduler"):
        ktlib.run(cfg, progress=False)
    assert not Path(cfg.results_dir).exists()


def test_a_cluster_left_without_workers_stops_with_one_error_naming_the_runs_left(tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv(cluster.WORKER_SECONDS_ENV, "2")
    cfg = small(tmp_path, data_dir, levels=[5], sizes=[2], trials=2)
    exp, source, _ = ktlib.record.sweep.train_or_load_source(cfg, progress=False)
    with loopback(1) as local, cluster.connect(dataclasses.replace(cfg, cluster=local.scheduler_address)) as pool:
        pool.check(cfg.engine)
        local.scale(0)  # every worker gone, as when they are killed faster than their nannies restart them
        while pool.client.scheduler_info()["workers"]:
            time.sleep(0.1)
        pool.submit(exp.task(source), experiment.grid(cfg), lambda row: None)
        start = time.monotonic()
        with pytest.raises(RuntimeError, match=r"has had no worker for 2 s \(\$KTLIB_WORKER_SECONDS\): 1 groups of "
                                               r"runs were still to do \(frozen n=5 k=2\); the runs saved so far stay"):
            pool.drain()
        assert time.monotonic() - start < 30 and not pool.pending


def test_dasks_own_log_goes_to_a_file_that_the_errors_name_and_not_to_the_terminal(tmp_path, data_dir, monkeypatch,
                                                                                   capfd):
    monkeypatch.setenv(cluster.WORKER_SECONDS_ENV, "2")
    cfg = small(tmp_path, data_dir, levels=[5], sizes=[2], trials=2)
    exp, source, _ = ktlib.record.sweep.train_or_load_source(cfg, progress=False)
    with cluster.connect(dataclasses.replace(cfg, cluster="local:1")) as pool:
        pool.check(cfg.engine)
        os.kill(next(iter(pool.client.run(os.getpid).values())), signal.SIGKILL)  # its nanny logs it, starts another
        try:
            raise RuntimeError("a worker's own error")
        except RuntimeError:  # as a nanny logs a worker that died as it started: a traceback, at ERROR
            logging.getLogger("distributed.nanny").exception("Failed to start worker")
        log = Path(pool.log)
        deadline = time.monotonic() + 30
        while "was killed by signal 9" not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        pool.client.cluster.scale(0)
        while pool.client.scheduler_info()["workers"]:
            time.sleep(0.1)
        pool.submit(exp.task(source), experiment.grid(cfg), lambda row: None)
        with pytest.raises(RuntimeError, match=re.escape(f"the same command resumes (Dask's log: {log})")):
            pool.drain()
    err = capfd.readouterr().err
    assert "Traceback" not in err and "distributed" not in err and "a worker's own error" not in err, err
    assert "Dask dashboard: http://127.0.0.1:" in err and f"its log: {log}" in err
    assert "Traceback" in log.read_text() and "a worker's own error" in log.read_text()


def test_a_tls_scheduler_without_certificates_is_one_error_before_any_work(tmp_path, smoke_data):
    out = run(ktlib_cli(*dry_run(smoke_data, tmp_path / "r", "--scheduler", "tls://127.0.0.1:9")))
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert "cluster='tls://127.0.0.1:9': a tls:// scheduler needs TLS certificates in Dask's configuration" in out.stderr
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("seconds", ["inf", "nan", "-1", "soon"])
def test_a_bad_worker_wait_is_refused_before_a_cluster_starts(tmp_path, smoke_data, seconds):
    out = run(ktlib_cli(*dry_run(smoke_data, tmp_path / "r", "--cluster", "local:1")),
              env={**os.environ, cluster.WORKER_SECONDS_ENV: seconds})
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert f"$KTLIB_WORKER_SECONDS must be a finite number of seconds > 0, got {seconds!r}" in out.stderr
    assert "Dask dashboard" not in out.stderr and not (tmp_path / "r").exists()


@pytest.mark.parametrize("flag, value", [("--cluster", "tcp://127.0.0.1:8786"), ("--scheduler", "local:2")])
def test_the_cli_refuses_a_cluster_flag_with_the_other_flags_value(tmp_path, data_dir, flag, value):
    out = run(ktlib_cli(*dry_run(data_dir, tmp_path / "r", flag, value)))
    assert out.returncode == 2 and f"{flag} takes" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "r").exists()


# --------------------------------------------------------------------------- the same numbers

def test_a_sweep_on_a_local_cluster_gives_the_in_process_numbers(tmp_path, data_dir):
    environment = dict(os.environ)
    here = ktlib.run(small(tmp_path / "here", data_dir, recipes=list(RECIPES)), progress=False)
    there = ktlib.run(small(tmp_path / "there", data_dir, recipes=list(RECIPES), cluster="local:2"),
                      progress=False)
    assert len(there) == len(here) == 2 * 2 * (1 + 2 * len(RECIPES)) and in_order(there).equals(in_order(here))
    meta, _ = files.read_results(tmp_path / "there" / "results" / files.RESULTS_FILE)
    assert meta["cluster"] == "local:2" and meta["workers"] is None
    assert dict(os.environ) == environment  # what Dask's nannies set for their workers is undone here


def test_the_cli_prints_the_dashboard_and_counts_the_study_runs_across_the_cluster(tmp_path, smoke_data):
    out = run(ktlib_cli("study", "--dry-run", "--data-dir", str(smoke_data), "--results-dir", str(tmp_path),
                        "--cluster", "local:2"))
    assert out.returncode == 0, out.stderr
    assert "Dask dashboard: http://127.0.0.1:" in out.stderr
    total = len(ktlib.plan("study", ktlib.Config.for_profile("smoke", data_dir=str(smoke_data),
                                                           results_dir=str(tmp_path))).stored())
    assert "study: 100%" in out.stderr and f"| {total}/{total} " in out.stderr


def test_a_study_on_a_cluster_writes_what_it_writes_in_process(tmp_path, data_dir, scheduler):
    base = dict(data_dir=str(data_dir), source_per_class=10, test_per_class=5, sizes=[1, 2], trials=2)
    here = studies.plan("study", ktlib.Config.for_profile("smoke", results_dir=str(tmp_path / "here"), **base))
    there = studies.plan("study", ktlib.Config.for_profile("smoke", results_dir=str(tmp_path / "there"),
                                                    cluster=scheduler[0], **base))
    a, b = here.run(progress=False), there.run(progress=False)
    key = ["part", "split"]
    assert a[key + ROWS].sort_values(key + ["recipe", "n", "k", "trial"], ignore_index=True).equals(
        b[key + ROWS].sort_values(key + ["recipe", "n", "k", "trial"], ignore_index=True))
    assert here.sources().state_sha256.tolist() == there.sources().state_sha256.tolist()


# --------------------------------------------------------------------------- faults

def test_a_worker_killed_in_the_middle_of_a_task_is_retried_and_the_results_equal_an_unbroken_run(
        tmp_path, data_dir, scheduler):
    address, client = scheduler
    long = dict(levels=[0, 3], sizes=[1, 2], stopping="budget", max_epochs=1500)  # a few seconds per group
    outcome = {}

    def sweep():
        try:
            outcome["rows"] = ktlib.run(small(tmp_path / "killed", data_dir, cluster=address, **long), progress=False)
        except BaseException as e:  # noqa: BLE001 - reported by the assertion below
            outcome["error"] = e

    thread = threading.Thread(target=sweep)
    thread.start()
    deadline, busy = time.monotonic() + 120, []
    while not busy:
        assert thread.is_alive() and time.monotonic() < deadline, outcome
        busy = [w for w, tasks in client.processing().items() if any(str(t).startswith(("frozen", "fine", "random"))
                                                                    for t in tasks)]
        time.sleep(0.01)
    pid = client.run(os.getpid, workers=busy[:1])[busy[0]]
    in_hand = list(client.processing()[busy[0]])
    os.kill(pid, signal.SIGKILL)
    thread.join(timeout=300)
    assert "error" not in outcome, outcome.get("error")
    assert in_hand and busy[0] not in client.scheduler_info()["workers"]  # it died holding a task
    unbroken = ktlib.run(small(tmp_path / "unbroken", data_dir, **long), progress=False)
    assert len(outcome["rows"]) == 8 and in_order(outcome["rows"]).equals(in_order(unbroken))


def test_a_task_that_raises_is_one_error_naming_its_runs_and_the_saved_runs_stay(tmp_path, data_dir, scheduler):
    """A worker that sees other data at the data path than the client does: every task raises."""
    cfg = small(tmp_path, data_dir, cluster=scheduler[0], levels=[5], sizes=[2], trials=2)
    exp, source, _ = ktlib.record.sweep.train_or_load_source(cfg, progress=False)
    saved = []
    with cluster.connect(cfg) as pool:
        other = {**exp.checksums, D.MAPPING_FILE: "0" * 64}
        pool.submit(dataclasses.replace(exp.task(source), checksums=other), experiment.grid(cfg), saved.append)
        with pytest.raises(executors.GroupFailed) as e:
            pool.drain()
    message = str(e.value)
    assert message.startswith("the runs RunKey(n=5, k=2, trial=0..1, recipe='frozen') failed on the cluster tcp://")
    assert f"RuntimeError: the data at {data_dir} on this worker are not the client's: {D.MAPPING_FILE} differ" \
        in message
    assert not saved and not pool.pending


def test_a_worker_without_a_compiler_is_the_native_engines_clear_error_before_any_work(tmp_path, data_dir):
    nothing = tmp_path / "no-compilers"
    nothing.mkdir()
    with loopback(1, PATH=str(nothing), CC="", **{native.CACHE_ENV: str(tmp_path / "cache")}) as local:
        cfg = small(tmp_path, data_dir, cluster=local.scheduler_address)
        with pytest.raises(native.NativeUnavailable, match=r"the Dask worker tcp://127\.0\.0\.1:\d+: the native "
                                                           r"engine needs a C compiler .* use engine='batched'"):
            ktlib.run(cfg, progress=False)
    assert not (Path(cfg.results_dir) / files.RESULTS_FILE).exists()


def test_each_worker_builds_the_native_kernels_in_its_own_cache_directory(tmp_path, data_dir):
    with loopback(1, **{native.CACHE_ENV: str(tmp_path / "worker-cache")}) as local:
        ktlib.run(small(tmp_path, data_dir, cluster=local.scheduler_address), progress=False)
    assert [p.suffix for p in (tmp_path / "worker-cache").iterdir()] == [".so"]
