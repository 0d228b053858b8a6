"""A study as data, and the one lifecycle and reader of every study. A Design (ktlib.record.studies holds them) names
its parts: each a sweep per replicate (a class split, or a nesting order of the source classes), the study's
configuration with a few fields changed. A Plan is a design on a configuration: its sweeps run on one executor, and
read back as tidy tables, one row per run (or readout, or source net) with its `part` and replicate."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from ktlib.compute import data
from ktlib.config import LAYERS, PROFILES, Config, Profile, Purpose, derive_seed, replicates
from ktlib.record import compare, layout, sweep, tables
from ktlib.record.files import (
    PREDICTIONS_FILE,
    READOUTS_FILE,
    RESULTS_FILE,
    SCORES_FILE,
    read_predictions,
    read_readouts,
    read_results,
    read_scores,
    read_source_record,
)


@dataclass(frozen=True)
class Part:
    """One part of a study: a sweep per replicate of `over` (one of the plan's counts), each the study's
    configuration with `changes` (or with changes(replicate), when they differ from one replicate to the next).
    zero=False: its sweeps run no n=0 runs, which copy nothing; another part's serve."""
    name: str
    over: str = "splits"
    changes: dict | Callable[[int], dict] = field(default_factory=dict)
    zero: bool = True

    def changes_of(self, replicate: int) -> dict:
        return self.changes(replicate) if callable(self.changes) else self.changes


@dataclass(frozen=True)
class Design:
    """A study as data: its command and what it is, what its replicates are, the Config fields all its sweeps set
    (`base`), its parts, and its counts: `count` is the option that sets how many replicates there are (a Profile
    field gives the default), `counts` derives the others from it. `base` and `parts` may be functions of the
    configuration and the data, when the data decide them. shared_zero: the first sweep runs the n=0 runs for all,
    and every sweep reads them back as its own."""
    name: str
    about: str
    base: dict | Callable[[Config, data.Emnist], dict]
    parts: tuple[Part, ...] | Callable[[Config, data.Emnist], tuple[Part, ...]]
    axis: str = "split"
    count: str = "splits"
    counts: Callable[[Profile, int], dict[str, int]] = lambda profile, n: {}
    shared_zero: bool = False
    default: Callable[[Profile], int] | None = None  # its replicates when not given; None: the profile's `count`


@dataclass
class Plan:
    """A design on a configuration: its parts and counts resolved, every sweep's configuration known."""
    design: Design
    cfg: Config
    parts: tuple[Part, ...]
    counts: dict[str, int]
    draws: int  # the bootstrap draws of its analysis (the profile's)

    @classmethod
    def of(cls, design: Design, cfg: Config, count: int | None = None) -> "Plan":
        """The design on `cfg`, with `count` replicates (default: the profile's)."""
        profile = PROFILES[cfg.profile]
        n = replicates(design.count, count, design.default(profile) if design.default else getattr(profile, design.count))
        emnist = data.opened(cfg.data_dir)[0] if callable(design.base) or callable(design.parts) else None
        resolve = lambda value: value(cfg, emnist) if callable(value) else value
        base, parts = dataclasses.replace(cfg, **resolve(design.base)), tuple(resolve(design.parts))
        counts = {design.count: n, **design.counts(profile, n)}
        for part in parts:
            if part.over not in counts:
                raise ValueError(f"the {design.name}'s part {part.name} runs over {part.over!r}, which is none of "
                                 f"its counts ({', '.join(counts)})")
        return cls(design, base, parts, counts, profile.draws)

    @property
    def root(self) -> Path:
        return layout.study_root(self.cfg.results_dir)

    def part(self, name: str) -> Part:
        return next(p for p in self.parts if p.name == name)

    def configs(self) -> list[tuple[str, Config]]:
        """(part, config) of every sweep, part by part, each part's replicates in order."""
        out, covered = [], {}  # shared_zero: k -> how many trials' n=0 runs an earlier sweep runs at k
        for part in self.parts:
            for i in range(self.counts[part.over]):
                changes = part.changes_of(i)
                sizes, trials = changes.get("sizes", self.cfg.sizes), changes.get("trials", self.cfg.trials)
                zero = part.zero and (not self.design.shared_zero or any(covered.get(k, 0) < trials for k in sizes))
                if zero and self.design.shared_zero:
                    covered |= {k: max(covered.get(k, 0), trials) for k in sizes}
                levels = changes.get("levels", self.cfg.levels)  # a part may set its own
                where = layout.sweep_dir(self.root, part.name, i, self.design.axis)
                out.append((part.name, dataclasses.replace(self.cfg, **{
                    **changes, "levels": levels if zero else [n for n in levels if n > 0],
                    "results_dir": str(where), layout.AXES[self.design.axis]: i})))
        return out

    def run(self, progress: bool = True) -> pd.DataFrame:
        """Run (or resume) every sweep on one executor (ktlib.record.sweep.run_sweeps); its runs, tidy."""
        sweep.run_sweeps([cfg for _, cfg in self.configs()], progress, name=self.design.name)
        return self.runs()

    def seed(self, purpose: Purpose = Purpose.BOOTSTRAP) -> int:
        """The seed of one of the analysis's purposes (the bootstrap, the coverage simulation): one seed, so every
        table resamples the same replicates and trials."""
        return derive_seed(self.cfg.seed, purpose)

    # ------------------------------------------------------------ reading back

    def sweeps(self, parts: tuple[str, ...] = (), needs: str = RESULTS_FILE) -> list[tuple[str, int, Path]]:
        """(part, replicate, directory) of each of its sweeps (of `parts` only, if given) that holds `needs`."""
        axis = layout.AXES[self.design.axis]
        return [(name, getattr(cfg, axis), Path(cfg.results_dir)) for name, cfg in self.configs()
                if (not parts or name in parts) and (Path(cfg.results_dir) / needs).exists()]

    def _read(self, read, needs: str, what: str) -> pd.DataFrame:
        """What `read` returns of each sweep holding `needs`, with its `part` and replicate, in one table."""
        frames = [read(where).assign(part=part, **{self.design.axis: i})
                  for part, i, where in self.sweeps(needs=needs)]
        if not frames:
            raise FileNotFoundError(f"{self.root} holds no {what} of the {self.design.name}")
        return pd.concat(frames, ignore_index=True)

    def with_shared_zero(self, table: pd.DataFrame) -> pd.DataFrame:
        """A table as its sweeps store it (`stored`, or the readouts), with shared_zero each sweep given the n=0 rows
        of its own k and trials, from the first sweep that ran them at that k (`configs` says which do)."""
        if not self.design.shared_zero:
            return table
        axis, held = self.design.axis, {(name, i) for name, i, _ in self.sweeps()}
        sweeps = [(name, getattr(cfg, layout.AXES[axis]), cfg) for name, cfg in self.configs()]
        sweeps = [(name, i, cfg) for name, i, cfg in sweeps if (name, i) in held]
        zero, first = table[table.n == 0], {}
        for name, i, _ in sweeps:
            mine = zero[(zero.part == name) & (zero[axis] == i)]
            for k, rows in mine.groupby("k"):
                first.setdefault(k, rows)
        copies = [first[k][first[k].trial < cfg.trials].assign(part=name, **{axis: i})
                  for name, i, cfg in sweeps for k in cfg.sizes if k in first]
        return pd.concat([table[table.n > 0], *copies], ignore_index=True)

    def stored(self) -> pd.DataFrame:
        """Every run as its results file stores it, with its `part` and replicate."""
        return self._read(lambda where: read_results(where / RESULTS_FILE)[1], RESULTS_FILE, "runs")

    def runs(self) -> pd.DataFrame:
        """Every run, tidy: one row per run, with its `part` and replicate; with shared_zero, the n=0 runs
        under every sweep."""
        return self.with_shared_zero(self.stored())

    def readouts(self) -> pd.DataFrame:
        """Every training-free readout, tidy, like `runs`."""
        return self.with_shared_zero(self._read(lambda where: read_readouts(where)[1], READOUTS_FILE, "readouts"))

    def scores(self) -> pd.DataFrame:
        """Every map's scores, tidy: per sweep with partial recipes, its level n, k, trial and map
        (ktlib.compute.maps)."""
        return self._read(lambda where: read_scores(where)[1], SCORES_FILE, "map scores")

    def sources(self) -> pd.DataFrame:
        """Each sweep's source net: classes, epochs, training and held-out accuracy."""
        out = []
        for part, i, where in self.sweeps():
            r, (meta, _) = read_source_record(where), read_results(where / RESULTS_FILE)
            out.append({"part": part, self.design.axis: i, "source": r["classes"], "target": meta["target_classes"],
                        "epochs": r["epochs"], "steps": r.get("steps"), "train_accuracy": r["train_accuracy"],
                        "held_out_accuracy": r["held_out_accuracy"], "state_sha256": r["state_sha256"]})
        return pd.DataFrame(out)

    def spreads(self, parts: tuple[str, ...] = ()) -> pd.DataFrame:
        """Per sweep (of `parts` only, if given), recipe and level: how much that level's output varies from image
        to image (ktlib.compute.readouts.spread), as its readouts file records it, and on which images: "validation",
        or "test" in a record made before the validation images existed."""
        out = []
        for part, i, where in self.sweeps(parts, READOUTS_FILE):
            meta = read_readouts(where)[0]
            for recipe, values in meta["spread"].items():
                out += [{"part": part, self.design.axis: i, "recipe": recipe, "n": n,
                         "level": "pixels" if n == 0 else LAYERS[n - 1], "spread": value,
                         "images": meta.get("spread_images", "test")} for n, value in enumerate(values)]
        return pd.DataFrame(out)

    def predictions(self, part: str) -> dict[int, tuple[pd.DataFrame, object, object, str]]:
        """Per replicate of a part: (keys, predictions, labels, target classes) of its runs' test predictions; with
        shared_zero, the n=0 runs' of its k and trials too, from the sweep that ran them (as `with_shared_zero`)."""
        zero = {}  # k -> (keys, predictions) of the first sweep's n=0 runs at k
        if self.design.shared_zero:
            runs_zero = [Path(cfg.results_dir) for _, cfg in self.configs() if 0 in cfg.levels]
            for where in (w for w in runs_zero if (w / PREDICTIONS_FILE).exists()):
                keys, predicted, _ = read_predictions(where)
                for k in set(keys.k[keys.n == 0]) - set(zero):
                    mine = ((keys.n == 0) & (keys.k == k)).to_numpy()
                    zero[k] = (keys[mine], predicted[mine])
        mine, out = dict(self.configs()).get(part), {}  # every replicate of a part has its sizes and trials
        for _, i, where in self.sweeps((part,), PREDICTIONS_FILE):
            keys, predicted, labels = read_predictions(where)
            if zero:
                missing = [k for k in mine.sizes if k in zero and not ((keys.n == 0) & (keys.k == k)).any()]
                for k in missing:
                    theirs, p = zero[k]
                    keep = (theirs.trial < mine.trials).to_numpy()
                    keys = pd.concat([keys, theirs[keep]], ignore_index=True)
                    predicted = np.concatenate([predicted, p[keep]])
            out[i] = (keys, predicted, labels, read_results(where / RESULTS_FILE)[0]["target_classes"])
        return out

    def provenance(self) -> pd.DataFrame:
        """Per sweep: the commit, split or order, classes, protocol, source net and versions that made it."""
        out = {}
        axis = self.design.axis
        for _, _, where in self.sweeps():
            meta, _ = read_results(where / RESULTS_FILE)
            out[str(where.relative_to(self.root))] = {
                "git commit": meta["git_commit"], axis: meta["config"][layout.AXES[axis]],
                "source classes": meta["source_classes"], "target classes": meta["target_classes"],
                "code scheme": meta["config"]["code_scheme"], "stopping": meta["config"]["stopping"],
                "source net sha256": meta["source"]["state_sha256"][:16] + "...",
                "torch": meta["versions"]["torch"], "engine": meta["config"]["engine"]}
        return pd.DataFrame(out).T

    def against_paper_sweep(self, part: str, index: int, recipe: str) -> dict:
        """One sweep's runs of `recipe` against the paper's sweep in the same results directory, which ran the paper's
        recipe alone and trained its source net plainly (compare.compare_with_record)."""
        meta, rows = read_results(layout.sweep_dir(self.root, part, index, self.design.axis) / RESULTS_FILE)
        return compare.compare_with_record(tables.recipe_runs(rows, recipe), meta,
                                           Path(self.cfg.results_dir) / RESULTS_FILE,
                                           ignore=("recipes", "source_training"))

    def against_record(self) -> dict[str, dict]:
        """Per sweep: how far its runs are from the committed record's of the same data (compare.compare_with_record;
        the engine may differ, as in the sweep notebook's check)."""
        sums = data.opened(self.cfg.data_dir)[1]
        record = layout.study_root(layout.record_path(self.cfg.profile, checksums=sums).parent)
        checks = {}
        for _, cfg in self.configs():
            where = Path(cfg.results_dir)
            meta, rows = read_results(where / RESULTS_FILE)
            relative = where.relative_to(self.root)
            checks[str(relative)] = compare.compare_with_record(rows, meta, record / relative / RESULTS_FILE,
                                                                ignore=("engine",))
        return checks
