"""The experiment's configuration: every knob, checked when it is made, and the seeds derived from it."""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from enum import IntEnum
from numbers import Integral

import numpy as np

from ktlib import paths
from ktlib.recipes import RECIPES, check_recipe, recipe


@dataclass(frozen=True)
class Profile:
    """A named size of the whole pipeline: the fields it changes, and the study's class splits, the splits its
    probes and variants run on, and its bootstrap draws."""
    changes: dict
    splits: int
    variant_splits: int
    draws: int
    orders: int  # the breadth study's nesting orders of the source classes (ktlib.record.studies.BREADTH)
    source_steps: int  # the optimiser steps of each source net of the breadth study's equal-length series


# paper: the paper's protocol; smoke: the same pipeline shrunk to seconds
# The breadth study's equal-length series trains every source net 4,096 steps: between the 1,500-2,750 steps the
# paper's rule gave its 20-class sources and the 17,000-21,000 it gave all 39 classes in the record of issue 25, and
# what 50 nets can take in the study's 45 minutes (about 5 s each); fixed before any net of the series trained.
PROFILES = {"paper": Profile({}, 10, 3, 2000, 5, 4096),
            "smoke": Profile(dict(source_per_class=40, source_max_epochs=2, levels=[0, 5], sizes=[1], trials=1,
                                  test_per_class=10, max_epochs=30), 2, 1, 200, 2, 16)}
# ktlib.compute.engine with its C kernels (the default) or its PyTorch ones, or train.train one run at a time
ENGINES = ("native", "batched", "plain")
CODE_SCHEMES = ("random", "one-of-n")
# converged: each run trains until it fits its set or its loss plateaus (train.Converged), at most max_epochs;
# budget: every run trains exactly max_epochs epochs (the protocol's sensitivity check)
STOPPING = ("converged", "budget")
# how the source net is trained: by train.train (the paper sweep's record), or by the configured engine, which
# computes the same steps to rounding, far faster (the study's many source nets); "plain" engines train plainly
SOURCE_TRAINING = ("plain", "engine")
# what the stopping rule's patience counts: epochs, which at k=1 are 1 optimiser step each and at k=40 are 25, or
# optimiser steps, the same number at every k (a variant of the study)
PATIENCE_UNITS = ("epochs", "steps")
LAYERS = ("C1", "S2", "C3", "S4", "C5", "F6")  # the net's layers by name, bottom up: n retains the first n
PAPER_SOURCE_ACCURACY = 0.9438  # the training accuracy the paper's source net reached
TOLERANCE = 0.03  # a re-run reproduces the record when no cell mean moves by more than this (the Claims page glues it)
# Trials, class splits and nesting orders each draw their images and initial weights from a 31-bit seed (derive_seed):
# among n of them two share a seed, and so are one run counted twice, with a chance of about n^2 / 2^32 (0.02% at
# 1,000, 2% at 10,000). A replicate count is refused above this, before anything is allocated for it.
MAX_REPLICATES = 1000
NATIVE_MAX_BATCH, NATIVE_CODE_BITS = 32, 20  # what ktlib/compute/kernels.c is built for (ktlib.compute.native)


class Purpose(IntEnum):
    """What a derived seed is for. The values are fixed: a new purpose takes a new value, and no other seed moves."""
    SPLIT = 0
    SOURCE_DATA = 1
    SOURCE_INIT = 2
    SOURCE_CODES = 3
    TARGET_CODES = 4
    TEST_DATA = 5
    TRIAL = 6
    SPLIT_SEED = 7     # the seed of class split s > 0, from which all of that split's seeds derive
    RANDOM_SOURCE = 8  # the untrained nets the random recipes copy from
    SOURCE_TEST = 9    # held-out images of the source classes
    BOOTSTRAP = 10     # the resampling of the study's intervals
    SHUFFLE = 11       # the permutations of the shuffled recipe's weights
    COVERAGE = 12      # the simulation that chooses how intervals over splits are made
    SOURCE_ORDER = 13  # a nesting order of the source classes (and the seeds of the source nets drawn from it)
    FIXED_TARGETS = 14  # the breadth study's target classes, the same for every source net
    VALIDATION = 15    # the target classes' validation images: test-file images that the test set does not hold
    RESEED = 16        # a reseeded replicate's source net and trials (Config.reseed)
    MAP_CHOICE = 17    # a partial recipe's random order of a level's maps (ktlib.compute.maps.choice_seed)
    SELECTION_TARGETS = 18  # the selection study's target classes, one draw per replicate
    SELECTION_RANDOM = 19   # the selection study's random selections of the source classes


def derive_seed(seed: int, purpose: Purpose, *keys: int) -> int:
    """An independent 31-bit seed for each purpose (and keys within it, such as k and trial)."""
    return int(np.random.SeedSequence([seed, int(purpose), *keys]).generate_state(1)[0] >> 1)


@dataclass
class Config:
    """Every knob of the experiment; field names are the notebooks' papermill parameters."""
    seed: int = 0
    split: int = 0                         # which class split: 0 is the seed's own (the paper's), others derive
    data_dir: str | None = None            # None: $KTLIB_DATA_DIR, then ./data/emnist (ktlib.paths)
    results_dir: str | None = None         # None: $KTLIB_RESULTS_DIR, then ./results/<profile>
    profile: str = "paper"
    # classes and codes
    n_classes: int = 20
    source_chars: str | None = None        # None: drawn by seed among classes with enough images
    target_chars: str | None = None
    source_size: int | None = None         # how many classes the source net learns; None: n_classes (the targets)
    reseed: int = 0                        # 0: the split's own seeds; r > 0: its source net and every trial's
                                           # images and initial weights drawn again, the classes, their codes and
                                           # the test and validation images kept (the study's chance baseline)
    source_order: int | None = None        # None: the source classes drawn by the split's seed; o: the first
                                           # source_size of nesting order o (ktlib.compute.data.nesting_order), whose
                                           # seed also draws the source net's (so the sizes of one order nest)
    code_bits: int = 20
    code_scheme: str = "random"            # or "one-of-n" (needs code_bits == n_classes == the source classes)
    # source net: trained until it reaches the paper's training accuracy
    source_per_class: int = 400
    source_accuracy: float = PAPER_SOURCE_ACCURACY
    source_max_epochs: int = 100
    source_steps: int | None = None        # None: trained by the paper's rule, to source_accuracy; s: for the whole
                                           # epochs nearest s optimiser steps, whatever it reaches (ktlib.compute.
                                           # source.source_epochs), so that source nets of any size train as long
    source_training: str = "plain"         # or "engine": the same steps by the engine's kernels, ~17x faster
    # target nets: the grid, each run trained to convergence
    levels: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4, 5])
    sizes: list[int] = field(default_factory=lambda: [1, 5, 10, 20, 40])
    trials: int = 5
    test_per_class: int = 50
    max_epochs: int = 1000
    stopping: str = "converged"            # or "budget": every run trains max_epochs epochs
    recipes: list[str] = field(default_factory=lambda: ["frozen"])  # how layers 1..n are made (recipes.RECIPES)
    control_levels: list[int] | None = None  # None: the controls' recipes at every level; else only at these
    patience: int = 20                     # in patience_unit
    patience_unit: str = "epochs"          # or "steps"
    min_steps: int = 500                   # no plateau stop before this many optimiser steps: at every k, a run
                                           # gets the same chance to begin learning
    min_improvement: float = 0.01
    loss_floor: float = 1e-3
    # optimiser
    lr: float = 1e-3
    batch_size: int = 32
    # how the runs are computed: the engine's numbers equal the plain path's within rounding, not bit for bit
    engine: str = "native"
    workers: int | None = None             # engine threads, one core each; None: the usable cores
    cluster: str | None = None             # None: those threads; "local:N" or "tcp://HOST:PORT": Dask (cluster_target)

    def __post_init__(self):
        """Refuse, before any work, anything that could fail later; make every path absolute."""
        _choice("profile", self.profile, tuple(PROFILES))
        _choice("engine", self.engine, ENGINES)
        _choice("code_scheme", self.code_scheme, CODE_SCHEMES)
        _choice("stopping", self.stopping, STOPPING)
        _choice("source_training", self.source_training, SOURCE_TRAINING)
        _choice("patience_unit", self.patience_unit, PATIENCE_UNITS)
        self.seed = _integer("seed", self.seed, 0)
        self.split = _integer("split", self.split, 0)
        self.reseed = _integer("reseed", self.reseed, 0)
        if isinstance(self.recipes, str) or not self.recipes:
            raise ValueError(f"recipes must be a non-empty list of {tuple(RECIPES)}, got {self.recipes!r}")
        given = list(dict.fromkeys(check_recipe(r) for r in self.recipes))
        self.recipes = [r for r in RECIPES if r in given] + [r for r in given if r not in RECIPES]  # partial: as given
        for name in ("n_classes", "code_bits", "source_per_class", "source_max_epochs", "test_per_class",
                     "max_epochs", "patience", "batch_size"):
            setattr(self, name, _integer(name, getattr(self, name), 1))
        self.trials = replicates("trials", self.trials, None)
        self.source_accuracy = _number("source_accuracy", self.source_accuracy, 0, 1, "in (0, 1]", low_open=True)
        self.min_improvement = _number("min_improvement", self.min_improvement, 0, 1, "in [0, 1)", high_open=True)
        self.loss_floor = _number("loss_floor", self.loss_floor, 0, math.inf, ">= 0")
        self.lr = _number("lr", self.lr, 0, math.inf, "> 0", low_open=True)
        self.min_steps = _integer("min_steps", self.min_steps, 0)
        for name in ("source_chars", "target_chars"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), str):
                raise ValueError(f"{name} must be a string of characters or None, got {getattr(self, name)!r}")
        self.levels = sorted({check_levels(n) for n in self.levels})
        outside = [r for r in self.recipes if recipe(r).level not in (None, *self.levels)]
        if outside:
            raise ValueError(f"the partial recipes {outside} run at a level that levels={self.levels} leaves out")
        if self.control_levels is not None:
            if isinstance(self.control_levels, (str, int)) or not self.control_levels:
                raise ValueError(f"control_levels must be None or a non-empty list of levels, got {self.control_levels!r}")
            self.control_levels = sorted({check_levels(n) for n in self.control_levels})
        if self.source_size is not None:
            self.source_size = _integer("source_size", self.source_size, 2)
        if self.source_steps is not None:
            self.source_steps = _integer("source_steps", self.source_steps, 1)
        if self.source_order is not None:
            self.source_order = _integer("source_order", self.source_order, 0)
            if self.source_chars is not None:
                raise ValueError(f"source_order={self.source_order} draws the source classes; "
                                 f"source_chars={self.source_chars!r} names them: give one of the two")
        if None not in (self.source_size, self.source_chars) and len(self.source_chars) != self.source_size:
            raise ValueError(f"source_chars={self.source_chars!r} names {len(self.source_chars)} classes, "
                             f"source_size={self.source_size}")
        if not self.levels or not self.sizes or not all(is_integer(k) and k >= 1 for k in self.sizes):
            raise ValueError(f"levels and sizes must be non-empty, sizes integers >= 1; got {self.levels}, {self.sizes}")
        self.sizes = sorted({int(k) for k in self.sizes})
        if self.workers is not None:
            self.workers = _integer("workers", self.workers, 1)
        self._where = None if self.cluster is None else cluster_target(self.cluster)
        if self.cluster is not None:
            if self.engine == "plain":
                raise ValueError(f"cluster={self.cluster!r} runs the engine's groups; engine='plain' runs one run "
                                 f"at a time in this process: use engine='native' or 'batched', or no cluster")
        if self.code_scheme == "one-of-n" and not self.code_bits == self.n_classes == self.source_count():
            raise ValueError(f"code_bits must equal n_classes ({self.n_classes}) and the source classes "
                             f"({self.source_count()}) for one-of-N codes, got {self.code_bits}")
        if self.code_scheme == "random" and max(self.n_classes, self.source_count()) > 2 ** self.code_bits:
            raise ValueError(f"code_bits={self.code_bits} cannot give {max(self.n_classes, self.source_count())} "
                             f"distinct codes")
        if self.engine == "native":  # what kernels.c is built for
            if self.batch_size > NATIVE_MAX_BATCH:
                raise ValueError(f"batch_size={self.batch_size}: the native engine takes batches of at most "
                                 f"{NATIVE_MAX_BATCH}; use engine='batched' or 'plain'")
            if self.code_bits != NATIVE_CODE_BITS:
                raise ValueError(f"code_bits={self.code_bits}: the native engine is built for {NATIVE_CODE_BITS} "
                                 f"code bits; use engine='batched' or 'plain'")
        self.data_dir = str(paths.data_dir(self.data_dir))
        self.results_dir = str(paths.results_dir(self.results_dir, self.profile))

    @classmethod
    def for_profile(cls, profile: str = "paper", **overrides) -> "Config":
        """The paper's protocol, or `smoke`: the same pipeline shrunk to seconds (PROFILES)."""
        _choice("profile", profile, tuple(PROFILES))
        return cls(profile=profile, **{**PROFILES[profile].changes, **overrides})

    @classmethod
    def for_notebook(cls, profile: str, seed: int, data_dir: str | None, results_dir: str | None,
                     engine: str, cluster: str | None) -> "Config":
        """A notebook's papermill parameters as a Config. Their paths, and the defaults, are taken from the
        directory papermill or Jupyter was started in, not from the kernel's working directory (ktlib.paths)."""
        _choice("profile", profile, tuple(PROFILES))
        base = paths.launch_dir()
        return cls.for_profile(profile, seed=seed, engine=engine, cluster=cluster or None,
                               data_dir=str(paths.data_dir(data_dir, base)),
                               results_dir=str(paths.results_dir(results_dir, profile, base)))

    def source_count(self) -> int:
        """How many classes the source net learns: source_size, else as many as source_chars names, else
        n_classes (as many as the targets, the paper's design)."""
        if self.source_size is not None:
            return self.source_size
        return len(self.source_chars) if self.source_chars is not None else self.n_classes

    def split_seed(self) -> int:
        """The seed every seed of this class split derives from: the config's own for split 0 (so split 0 is
        the paper's sweep, unchanged), an independent one for each other split."""
        return self.seed if self.split == 0 else derive_seed(self.seed, Purpose.SPLIT_SEED, self.split)

    @property
    def where(self) -> tuple[str, int | str] | None:
        """Where the engine's groups run: None (this process's threads), ("local", N) or ("address", scheduler)."""
        return self._where

    def worker_count(self) -> int:
        """The engine's worker threads: `workers`, else the cores this process may use."""
        return self.workers or cores()

    def experiment(self) -> dict:
        """The fields that determine the numbers (not where files live, nor which cores compute them)."""
        d = dataclasses.asdict(self)
        for where in ("data_dir", "results_dir", "workers", "cluster"):
            d.pop(where)
        if not self.reseed:  # the split's own seeds: a record made before reseeding existed says the same
            d.pop("reseed")
        if self.source_steps is None:  # the paper's rule: so says a record made before the equal-length series
            d.pop("source_steps")
        return d

    @classmethod
    def of_experiment(cls, fields: dict) -> "Config":
        """The configuration a results file's header records (`experiment()`)."""
        return cls(**fields)


def cores() -> int:
    """The cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# Where the engine's groups run, besides this process's threads (ktlib.compute.cluster): a Dask LocalCluster of N
# worker processes started here, or the scheduler of a running cluster (dask-jobqueue's on SLURM, say).
def cluster_target(spec) -> tuple[str, int | str]:
    """("local", N) or ("address", the scheduler's address), from a `cluster` value; anything else is refused."""
    if isinstance(spec, str) and spec.startswith("local:"):
        count = spec.split(":", 1)[1]
        if count.isdigit() and 1 <= int(count) <= cores():
            return "local", int(count)
        if count.isdigit() and int(count) > cores():  # N processes on this machine: more than its cores only queue
            raise ValueError(f"cluster {spec!r} would start {count} worker processes here, where {cores()} cores "
                             f"are available: use local:1 to local:{cores()}, or a scheduler's address")
    elif isinstance(spec, str) and spec.startswith(("tcp://", "tls://")) and spec.rsplit(":", 1)[-1].isdigit():
        return "address", spec
    raise ValueError(f"cluster must be None, 'local:N' (N >= 1 worker processes), or a running scheduler's "
                     f"address, 'tcp://HOST:PORT' (or tls://); got {spec!r}")


def is_integer(value) -> bool:
    """True for Python and numpy integers (a DataFrame's n is numpy's), False for bools and floats."""
    return isinstance(value, Integral) and not isinstance(value, bool)


def check_levels(n: int) -> int:
    """n itself as a Python int, or a clear error when it is not a level count 0..5."""
    if not is_integer(n) or not 0 <= n <= len(LAYERS) - 1:
        why = f"; n={len(LAYERS)} would leave nothing to train" if n == len(LAYERS) else ""
        raise ValueError(f"n (retained levels) must be an integer in 0..{len(LAYERS) - 1}, got {n!r}{why}")
    return int(n)


def _choice(name: str, value, allowed: tuple) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")


def replicates(name: str, value, default: int | None) -> int:
    """A number of trials, or a study's of splits or orders: `value`, or `default` when it is None, checked as an
    integer from 1 to MAX_REPLICATES."""
    value = _integer(name, default if value is None else value, 1)
    if value > MAX_REPLICATES:
        chance = lambda n: f"{min(1.0, n ** 2 / 2 ** 32):.2%}"  # noqa: E731
        raise ValueError(f"{name}={value}: at most {MAX_REPLICATES}. Each draws its images and initial weights from a "
                         f"31-bit seed, and two that share one are one run counted twice: the chance of that is about "
                         f"{name}^2 / 2^32, {chance(MAX_REPLICATES)} at {MAX_REPLICATES} and {chance(value)} at {value}")
    return value


def _integer(name: str, value, low: int) -> int:
    if not is_integer(value) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _number(name: str, value, low: float, high: float, rule: str, low_open=False, high_open=False) -> float:
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) \
        and math.isfinite(value) and (low < value if low_open else low <= value) \
        and (value < high if high_open else value <= high)
    if not ok:
        raise ValueError(f"{name} must be a number {rule}, got {value!r}")
    return value if isinstance(value, (int, float)) else value.item()
