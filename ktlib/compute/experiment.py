"""What a configuration fixes before anything trains: the class split, the seeds, the image sets, the codes, the grid
of runs, and the fields of each run's row that are known before it trains (`Experiment.determined`; the row itself is
made by ktlib.compute.train.row)."""
from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass, field
from typing import Callable, NamedTuple

import numpy as np
import torch

from ktlib.compute import data as D
from ktlib.compute import maps
from ktlib.compute.model import Net, free_parameters, reference, target_codes, trainable_parameters
from ktlib.compute.train import retained
from ktlib.compute.transfer import copy_source
from ktlib.config import Config, Purpose, derive_seed
from ktlib.recipes import BASELINE, PARTIAL_MAPS, first_trained
from ktlib.recipes import recipe as recipe_of


class RunKey(NamedTuple):
    """Which run a row is: the retained levels n, the images per class k, the trial, and the transfer recipe
    (ktlib.recipes; the n=0 runs, shared by all, are stored under the baseline's)."""
    n: int
    k: int
    trial: int
    recipe: str = BASELINE

    @classmethod
    def of(cls, row: dict) -> "RunKey":
        """The key of a row (a dict with the key's fields, and others)."""
        return cls(*(row[f] for f in cls._fields))


KEY = list(RunKey._fields)
def grid(cfg: Config) -> list[RunKey]:
    """Every run of the configuration's grid, n and recipe varying fastest (so a trial's set is drawn once in
    a row); the n=0 run, which copies nothing, once per trial, under the baseline recipe."""
    return [RunKey(n, k, t, r) for k in cfg.sizes for t in range(cfg.trials) for n in cfg.levels
            for r in (recipes_at(cfg, n) if n > 0 else [BASELINE])]


def recipes_at(cfg: Config, n: int) -> list[str]:
    """The recipes run at level n > 0: all of them, or the paper's and the fine-tuned ones alone where
    control_levels leaves the controls out; a partial recipe only at its own level."""
    return [r for r in cfg.recipes if recipe_of(r).level in (None, n)
            and (cfg.control_levels is None or n in cfg.control_levels or not recipe_of(r).control)]


def partial_parameters(name: str, n: int) -> int | None:
    """The free parameters a run of this recipe trains; for a partial recipe at C5, whose maps all hold as many, those
    of the maps it does not keep; None for one at C3, whose maps differ (C3's connection table), so the count depends
    on which maps its scores keep (the run's row has it, from its net)."""
    r = recipe_of(name)
    whole = trainable_parameters(first_trained(name, n))
    if r.level is None:
        return whole
    if r.level == 5:
        return whole - r.kept * free_parameters(reference())["C5"] // PARTIAL_MAPS["C5"]
    return None


def source_trainer(cfg: Config) -> str:
    """What trains the source net: "plain" (train.train), or the engine's kernels, "native" or "batched"."""
    return cfg.engine if cfg.source_training == "engine" and cfg.engine != "plain" else "plain"


@dataclass
class Experiment:
    """Data and class split fixed by a config: everything the runs share."""
    cfg: Config
    data: D.Emnist
    split: D.ClassSplit
    checksums: dict

    @classmethod
    def load(cls, cfg: Config) -> "Experiment":
        """The data at cfg.data_dir (read once per process) and the config's class split."""
        data, checksums = D.opened(cfg.data_dir)
        order = None if cfg.source_order is None else derive_seed(cfg.split_seed(), Purpose.SOURCE_ORDER,
                                                                  cfg.source_order)
        split = D.split_classes(data, derive_seed(cfg.split_seed(), Purpose.SPLIT), cfg.n_classes,
                                cfg.source_per_class, max(cfg.sizes), cfg.test_per_class, cfg.source_chars,
                                cfg.target_chars, cfg.source_size, order)
        need = 2 * cfg.test_per_class  # test and validation images, disjoint
        short = [data.mapping[c] for c in split.target if data.counts("test")[c] < need]
        if short:
            raise D.DataError(f"target classes {short} have fewer than {need} test-file images: test_per_class="
                              f"{cfg.test_per_class} test images and as many validation images per class")
        return cls(cfg, data, split, checksums)

    def chars(self, role: str) -> str:
        return "".join(self.data.mapping[c] for c in getattr(self.split, role))

    def codes(self, role: str) -> torch.Tensor:
        if role == "source":
            return target_codes(self.cfg.source_count(), self.cfg.code_bits, self.source_seed(Purpose.SOURCE_CODES),
                                self.cfg.code_scheme)
        return target_codes(self.cfg.n_classes, self.cfg.code_bits, self.seed(Purpose.TARGET_CODES),
                            self.cfg.code_scheme)

    def seed(self, purpose: Purpose, *keys: int) -> int:
        """The seed of one purpose in this class split."""
        return derive_seed(self.cfg.split_seed(), purpose, *keys)

    def source_seed(self, purpose: Purpose) -> int:
        """The seed of one purpose of the source net (and the nets the controls draw from it): the split's, and
        with a nesting order, that order's own, so that each order's source nets are independent of another's
        while the targets' sets and seeds stay the same for all."""
        seed = self.seed(purpose) if self.cfg.source_order is None else self.seed(purpose, self.cfg.source_order)
        return self.reseeded(seed)

    def reseeded(self, seed: int) -> int:
        """A seed of the source net or of a trial, drawn again for a reseeded replicate (Config.reseed); itself for
        the split's own seeds."""
        return seed if not self.cfg.reseed else derive_seed(seed, Purpose.RESEED, self.cfg.reseed)

    def source_set(self) -> D.Subset:
        return D.draw(self.data.train, self.split.source, self.cfg.source_per_class,
                      self.source_seed(Purpose.SOURCE_DATA))

    def source_test_set(self) -> D.Subset:
        """Held-out images of the source classes, from the test file (as many as test_per_class, or all a
        class has when fewer)."""
        per_class = min([self.cfg.test_per_class] + [self.data.counts("test")[c] for c in self.split.source])
        return D.draw(self.data.test, self.split.source, per_class, self.source_seed(Purpose.SOURCE_TEST))

    def test_set(self) -> D.Subset:
        return D.draw(self.data.test, self.split.target, self.cfg.test_per_class, self.seed(Purpose.TEST_DATA))

    def validation_set(self) -> D.Subset:
        """As many images of each target class as the test set has, from the test file's images the test set does
        not hold: every choice is made on these, and the test images only judge (its index: into those images)."""
        rest = np.ones(len(self.data.test.labels), bool)
        rest[self.test_set().index] = False
        pool = D.Split(self.data.test.images[rest], self.data.test.labels[rest])
        return D.draw(pool, self.split.target, self.cfg.test_per_class, self.seed(Purpose.VALIDATION))

    def trial_set(self, k: int, trial: int) -> tuple[D.Subset, int]:
        """The k-per-class training set of one trial and that trial's seed (shared by every n and recipe)."""
        seed = self.trial_seed(k, trial)
        return D.draw(self.data.train, self.split.target, k, seed), seed

    def trial_seed(self, k: int, trial: int) -> int:
        """The seed of one trial's training set and initial weights, shared by every n and recipe."""
        return self.reseeded(self.seed(Purpose.TRIAL, k, trial))

    def copies(self, source: Net) -> dict[str, Net]:
        """The nets this configuration's recipes copy from: the trained source net, and the controls drawn
        from it and this split's seeds (the random ones all from one draw, so they differ only in scale; random-spread
        is scaled on the source classes' held-out images)."""
        kinds = {recipe_of(r).copies for r in self.cfg.recipes} | {"trained"}
        held = torch.from_numpy(self.source_test_set().x) if "random-spread" in kinds else None
        return {kind: copy_source(kind, source, self.source_seed(Purpose.SHUFFLE if kind == "shuffled"
                                                                 else Purpose.RANDOM_SOURCE), held)
                for kind in sorted(kinds)}

    def determined(self, key: RunKey) -> dict:
        """The fields of a run's row that its key and this experiment fix before it trains: which layers it keeps,
        its trial's seed (the one trial_set draws with), and what it trains."""
        return {"retained": retained(key.n), "seed": self.trial_seed(key.k, key.trial),
                "trainable_parameters": partial_parameters(key.recipe, key.n)}

    def task(self, source: Net) -> "Task":
        """What the runs of this experiment share, for an executor."""
        test, held, valid = self.test_set(), self.source_test_set(), self.validation_set()
        # each (k, trial) set drawn once: every n and recipe, and every group holding it, trains on the same
        sets = functools.lru_cache(maxsize=None)(self.trial_set)
        return Task(self.cfg, source, sets, (torch.from_numpy(test.x), torch.from_numpy(test.y)),
                    self.codes("target"), self.copies(source), (torch.from_numpy(held.x), torch.from_numpy(held.y)),
                    self.codes("source"), self.checksums, (torch.from_numpy(valid.x), torch.from_numpy(valid.y)))

    def source_config(self) -> dict:
        """Everything that determines the source net: its fields of the config, its classes, the data."""
        c = self.cfg
        trainer = {} if source_trainer(c) == "plain" else {"source_trainer": source_trainer(c)}
        if c.source_order is not None:  # its seeds are the order's (source_seed)
            trainer["source_order"] = c.source_order
        if c.reseed:  # and a reseeded replicate's, its own
            trainer["reseed"] = c.reseed
        if c.source_steps is not None:  # trained for a number of steps, not to the paper's accuracy
            trainer["source_steps"] = c.source_steps
        return dict(seed=c.split_seed(), n_classes=c.n_classes, code_bits=c.code_bits, code_scheme=c.code_scheme,
                    source_per_class=c.source_per_class, source_accuracy=c.source_accuracy,
                    source_max_epochs=c.source_max_epochs, lr=c.lr, batch_size=c.batch_size,
                    source=self.chars("source"), checksums=self.checksums, **trainer)

    def source_key(self) -> str:
        return hashlib.sha256(json.dumps(self.source_config(), sort_keys=True).encode()).hexdigest()

    def record(self) -> dict:
        """What a results file's header says about the experiment, for the same-experiment check."""
        return {"config": self.cfg.experiment(), "data_checksums": self.checksums,
                "source_classes": self.chars("source"), "target_classes": self.chars("target")}


@dataclass
class Task:
    """What every run of a sweep shares: the configuration, the source net, the data, the codes."""
    cfg: Config
    source: Net
    trial_set: Callable[[int, int], tuple[D.Subset, int]]  # (k, trial) -> that trial's training set and seed
    test: tuple[torch.Tensor, torch.Tensor]                # the test images and labels
    codes: torch.Tensor                                    # the target classes' codes
    copies: dict[str, Net]                                 # the nets the recipes copy from (recipes.COPIES)
    source_test: tuple[torch.Tensor, torch.Tensor]         # held-out images and labels of the source classes
    source_codes: torch.Tensor                             # the source classes' codes
    checksums: dict                                        # the data's sha256 sums, for a worker that reads them
    validation: tuple[torch.Tensor, torch.Tensor]          # the validation images and labels, which choices read
    scored: dict = field(default_factory=dict, repr=False)  # (level, k, trial) -> map_scores, computed once

    def map_scores(self, level: int, k: int, trial: int) -> dict[str, np.ndarray]:
        """Each score of each map of the source net's level `level` on one trial's training set (ktlib.compute.maps)."""
        if (level, k, trial) not in self.scored:
            s, _ = self.trial_set(k, trial)
            self.scored[level, k, trial] = maps.scores(self.source, level, torch.from_numpy(s.x),
                                                       torch.from_numpy(s.y), self.codes)
        return self.scored[level, k, trial]

    def kept(self, recipe: str, k: int, trial: int) -> torch.Tensor | None:
        """The maps a partial recipe's run keeps (ktlib.compute.maps.kept_maps); None for any other recipe."""
        level = recipe_of(recipe).level
        if level is None:
            return None
        return maps.kept_maps(recipe, self.map_scores(level, k, trial), self.trial_set(k, trial)[1])

    def copied_from(self, recipe: str) -> Net:
        """The net whose bottom layers a run of this recipe copies."""
        kind = recipe_of(recipe).copies
        if kind not in self.copies:
            raise ValueError(f"a {recipe} run needs the task's {kind!r} net")
        return self.copies[kind]
