"""The executor on Dask: the engine's groups as tasks, on a LocalCluster of N worker processes or a running
scheduler."""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import socket
import struct
import sys
import tempfile
import threading
import time
import uuid
from collections import OrderedDict

from ktlib.compute import data as D
from ktlib.compute import stacked, train
from ktlib.compute.executors import Group, check, failed, group_inputs, group_text, groups, train_group
from ktlib.compute.experiment import Experiment, RunKey, Task
from ktlib.compute.model import build, state_hash
from ktlib.config import Config

CONNECT_SECONDS = 10     # to reach a scheduler, and for it to greet us as Dask schedulers do
WORKER_SECONDS = 600     # the longest a cluster may have no worker (a batch queue may take a while to start one)
WORKER_SECONDS_ENV = "KTLIB_WORKER_SECONDS"  # sets it
HANDSHAKE_BYTES = 2**20  # a scheduler's greeting is a few hundred bytes; its first 8 bytes say how many
POLL_SECONDS = 0.5       # how often a waiting client looks at the cluster
TASKS_PER_WORKER = 8     # sweeps whose data, nets and test set a worker keeps (a study's sweeps interleave)
FEATURES_PER_WORKER = 64  # image sets whose frozen-layer features a worker keeps (all levels of each)


def worker_seconds() -> float:
    """How long a cluster may have no worker before the run stops: $KTLIB_WORKER_SECONDS, else WORKER_SECONDS."""
    value = os.environ.get(WORKER_SECONDS_ENV)
    if value is None:
        return WORKER_SECONDS
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0
    if not 0 < seconds < math.inf:
        raise ValueError(f"${WORKER_SECONDS_ENV} must be a finite number of seconds > 0, got {value!r}")
    return seconds


def greets_as_dask(address: str) -> None:
    """Connect to a tcp:// scheduler address and read its greeting, within CONNECT_SECONDS: something that is not
    a Dask scheduler (a dashboard, a web server) is refused here, before Dask waits on it or reads its bytes as
    frame lengths. The scheduler takes the closed connection as a client that left."""
    host, port = address.removeprefix("tcp://").rsplit(":", 1)
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_SECONDS) as sock:
            first = sock.recv(8)
    except TimeoutError:
        raise RuntimeError(f"cluster={address!r}: it accepted a connection but sent nothing in {CONNECT_SECONDS} s, "
                           f"as a Dask scheduler does at once: not a scheduler (a dashboard's port?)") from None
    except OSError as e:
        raise RuntimeError(f"cluster={address!r}: no Dask scheduler answered there ({e.strerror or e})") from None
    if len(first) < 8 or struct.unpack("<Q", first)[0] > HANDSHAKE_BYTES:
        raise RuntimeError(f"cluster={address!r}: it does not speak Dask's protocol (it sent {first!r}); give a "
                           f"scheduler's address, tcp://HOST:PORT") from None


@contextlib.contextmanager
def connect(cfg: Config):
    """A `Dask` executor on the configuration's cluster (cfg.where: a LocalCluster of N processes, stopped on
    leaving, or a scheduler's address)."""
    from distributed import Client, LocalCluster  # here: the in-process default needs no Dask

    spec, (kind, target) = cfg.cluster, cfg.where
    worker_seconds()  # a bad $KTLIB_WORKER_SECONDS is refused now, before a cluster starts
    if kind == "address" and target.startswith("tls://"):
        from distributed.security import Security

        if Security().get_connection_args("client")["ssl_context"] is None:
            raise RuntimeError(f"cluster={spec!r}: a tls:// scheduler needs TLS certificates in Dask's configuration "
                               f"(distributed.comm.tls.ca-file, .client.cert and .client.key), and none is set; set "
                               f"them, or reach the scheduler by tcp://")
    with contextlib.ExitStack() as stack:
        stack.callback(restore_environment, dict(os.environ))
        log = stack.enter_context(logged_to_file())
        if kind == "local":  # one thread per process: the engine's groups run on one core each
            try:
                local = stack.enter_context(LocalCluster(n_workers=target, threads_per_worker=1, processes=True,
                                                         host="127.0.0.1", dashboard_address="127.0.0.1:0",
                                                         silence_logs=logging.CRITICAL))
            except (RuntimeError, OSError, TimeoutError) as e:  # a worker process that died as it started
                raise RuntimeError(f"cluster={spec!r}: Dask's local cluster did not start ({e}); Dask's log: "
                                   f"{log}") from None
            client = stack.enter_context(Client(local))
        else:
            if target.startswith("tcp://"):
                greets_as_dask(target)
            try:
                client = stack.enter_context(Client(target, timeout=CONNECT_SECONDS))
            except OSError as e:
                raise RuntimeError(f"cluster={spec!r}: no Dask scheduler answered there ({e}); Dask's log: {log}") \
                    from None
        if client.dashboard_link:
            print(f"Dask dashboard: {client.dashboard_link}; its log: {log}", file=sys.stderr)
        yield Dask(client, spec, log)


class _FileLog(logging.Handler):
    """Log records appended to a file. Not a logging.StreamHandler, whose level Dask's silence_logs turns down."""

    def __init__(self, path: str):
        super().__init__()
        self.file = open(path, "a", encoding="utf-8")
        self.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.file.write(self.format(record) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()
        super().close()


@contextlib.contextmanager
def logged_to_file():
    """Dask's log in this process (its nannies' and client's: a worker that dies is logged there, with tracebacks)
    kept out of the terminal, in a file of its own for the block; yields the file's path, which errors name."""
    from distributed.utils import silence_logging_cmgr

    fd, path = tempfile.mkstemp(prefix=f"ktlib-dask-{time.strftime('%Y%m%d-%H%M%S')}-", suffix=".log")
    os.close(fd)
    handler, dask_log = _FileLog(path), logging.getLogger("distributed")
    dask_log.addHandler(handler)
    try:
        with silence_logging_cmgr(logging.CRITICAL):  # its own handlers, which write to the terminal
            yield path
    finally:
        dask_log.removeHandler(handler)
        handler.close()


def restore_environment(saved: dict) -> None:
    """Undo what Dask's nannies write into this process's environment for the workers they start
    (OMP_NUM_THREADS=1 and others), which processes this one starts later would inherit."""
    for name in set(os.environ) - set(saved):
        del os.environ[name]
    os.environ.update(saved)


class Dask:
    """Sweeps' groups of runs submitted to a cluster as they are ready; each group's rows come back here, to
    the results files' only writer, as its task completes."""
    remote = True  # its work takes the cluster's cores, not this process's

    def __init__(self, client, spec: str, log: str | None = None):
        from distributed import as_completed

        self.client, self.spec, self.log = client, spec, log
        self.pending: dict = {}  # future -> (config, group, the runs wanted of it, where its rows go)
        self.completed = as_completed()
        self.checked: set[str] = set()

    def check(self, engine_name: str) -> None:
        """Fail before any work if a worker cannot run this engine (each builds or loads the native kernels
        itself, in its own cache directory)."""
        if engine_name in self.checked:
            return
        if not self.client.scheduler_info()["workers"]:
            print(f"waiting for a worker to join {self.spec} ...", file=sys.stderr)
        try:
            self.client.wait_for_workers(1, timeout=worker_seconds())
        except TimeoutError:
            raise RuntimeError(f"cluster={self.spec!r}: no worker joined in {worker_seconds():g} s{self._log()}") \
                from None
        for worker, answer in self.client.run(check, engine_name, on_error="return").items():
            if isinstance(answer, Exception):
                raise type(answer)(f"the Dask worker {worker}: {answer}{self._log()}") from None
        self.checked.add(engine_name)

    def submit(self, task: Task, keys: list[RunKey], on_row) -> None:
        """One task per group holding these runs, longest first; on_row gets each wanted row in `drain`.

        The data reach workers by path (cfg.data_dir, checked against the task's checksums), and the source net as
        a task's result: a worker that dies takes nothing with it that Dask cannot compute again."""
        cfg = task.cfg
        self.check(cfg.engine)
        if not keys:
            return
        tag = uuid.uuid4().hex[:8]
        state = {k: v.clone() for k, v in task.source.state_dict().items()}
        source = (state_hash(task.source), self.client.submit(_value, state, key=f"source-net-split{cfg.split}-{tag}"))
        wanted = set(keys)
        for group in groups(keys, cfg):
            future = self.client.submit(worker_group, cfg, task.checksums, *source, group,
                                        key=f"{group_text(group).replace(' ', '-')}-split{cfg.split}-{tag}")
            self.pending[future] = (cfg, group, wanted, on_row)
            self.completed.add(future)

    def drain(self, block: bool = True) -> None:
        """Hand each finished group's rows to its sweep: until every group is done, or (block=False) only
        those done already. A group that failed stops everything, as one error naming its runs."""
        alone_since = None  # when the cluster last had no worker
        while self.pending and (block or self.completed.has_ready()):
            batch = self.completed.next_batch(block=False)
            if not batch:
                if self.client.scheduler_info(n_workers=1)["workers"]:
                    alone_since = None
                elif alone_since is None:
                    alone_since = time.monotonic()
                elif time.monotonic() - alone_since > worker_seconds():
                    self._stop(f"cluster={self.spec!r} has had no worker for {worker_seconds():g} s "
                               f"(${WORKER_SECONDS_ENV})")
                time.sleep(POLL_SECONDS)
            for future in batch:
                cfg, group, wanted, on_row = self.pending.pop(future)
                try:
                    rows = future.result()
                except Exception as e:  # the task's own error, or KilledWorker once Dask stops retrying
                    self.client.cancel(list(self.pending))
                    self.pending.clear()
                    raise failed(cfg, group, e, f" on the cluster {self.spec}{self._log()}") from e
                for r in rows:
                    if RunKey.of(r) in wanted:
                        on_row(r)

    def _log(self) -> str:
        """Where Dask's own account of it is, for an error to say."""
        return f" (Dask's log: {self.log})" if self.log else ""

    def _stop(self, why: str) -> None:
        """Cancel every task still to do and raise one error naming them; the rows saved so far stay."""
        left = [group for _, group, _, _ in self.pending.values()]
        self.client.cancel(list(self.pending))
        self.pending.clear()
        shown = ", ".join(group_text(g) for g in left[:5]) + (", ..." if len(left) > 5 else "")
        raise RuntimeError(f"{why}: {len(left)} groups of runs were still to do ({shown}); the runs saved so far "
                           f"stay, and the same command resumes{self._log()}") from None


def _value(x):
    return x


# ---------------------------------------------------------------- on a worker

_tasks: OrderedDict = OrderedDict()
_features = stacked.FeatureCache(FEATURES_PER_WORKER)
_lock = threading.Lock()  # a worker given several threads runs several tasks at once


def worker_task(cfg: Config, checksums: dict, source_sha: str, state: dict) -> Task:
    """This worker's Task of a sweep: built from the data at cfg.data_dir, once, and kept for its next groups."""
    key = json.dumps([cfg.experiment(), cfg.data_dir, source_sha], sort_keys=True)
    if key not in _tasks:
        exp = Experiment.load(cfg)  # a clear error if this worker does not see the data
        if exp.checksums != checksums:
            differ = D.differing(exp.checksums, checksums)
            raise RuntimeError(f"the data at {cfg.data_dir} on this worker are not the client's: "
                               f"{', '.join(differ)} differ")
        source = build(0, cfg.code_bits)
        source.load_state_dict(state)
        _tasks[key] = exp.task(source)
        while len(_tasks) > TASKS_PER_WORKER:
            _tasks.popitem(last=False)
    _tasks.move_to_end(key)
    return _tasks[key]


def worker_group(cfg: Config, checksums: dict, source_sha: str, state: dict, group: Group) -> list[dict]:
    """A Dask task: train one group on this worker and return its rows."""
    train.deterministic()  # as the client's sweep is
    with _lock:
        task = worker_task(cfg, checksums, source_sha, state)
        inputs = group_inputs(task, _features, group)
    return train_group(task, group, inputs)
