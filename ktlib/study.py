"""The study beyond the paper: many class splits, three transfer recipes, and two variants of our protocol."""
from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from . import cluster, runs, store, sweep
from .config import Config
from .engine import frozen_inputs
from .model import LAYERS
from .results import PREDICTIONS_FILE, RESULTS_FILE, read_predictions, read_results, read_source_record
from .transfer import RECIPES

STUDY_DIR = "study"  # under a profile's results directory
BUDGET_EPOCHS = 100  # the fixed budget of the stopping-rule variant, set before any study run
# The protocol's own choices, each changed alone on the paper's recipe: do any verdicts move?
VARIANTS = {
    "baseline": {},
    "budget": dict(stopping="budget", max_epochs=BUDGET_EPOCHS, recipes=["frozen"]),
    "one-of-n": dict(code_scheme="one-of-n", recipes=["frozen"]),
}
# profile -> (class splits, splits the variants run on, bootstrap draws)
SIZES = {"paper": (10, 3, 2000), "smoke": (2, 1, 200)}


@dataclass
class Study:
    """The paper's protocol on `splits` class splits with every recipe, and each variant on the first
    `variant_splits` of them; split 0 is the paper's split."""
    cfg: Config
    splits: int
    variant_splits: int
    draws: int

    @classmethod
    def of(cls, cfg: Config, splits: int | None = None) -> "Study":
        default, variant_splits, draws = SIZES[cfg.profile]
        splits = default if splits is None else splits
        if not isinstance(splits, int) or isinstance(splits, bool) or splits < 1:
            raise ValueError(f"splits must be an integer >= 1, got {splits!r}")
        # source nets by the engine: the same steps as train.train to rounding, ~17x faster (the paper's
        # sweep keeps its plainly trained one, so the study's split 0 is that sweep but for its source net)
        return cls(dataclasses.replace(cfg, recipes=list(RECIPES), source_training="engine"), splits,
                   min(variant_splits, splits), draws)

    @property
    def root(self) -> Path:
        return Path(self.cfg.results_dir) / STUDY_DIR

    def configs(self) -> list[tuple[str, Config]]:
        """(variant, config) of every sweep of the study, the baseline's splits first."""
        out = []
        for variant, changes in VARIANTS.items():
            count = self.splits if variant == "baseline" else self.variant_splits
            for split in range(count):
                out.append((variant, dataclasses.replace(self.cfg, split=split, results_dir=str(
                    self.root / variant / f"split-{split}"), **changes)))
        return out

    def run(self, progress: bool = True) -> pd.DataFrame:
        """Run (or resume) every sweep of the study; every config is checked before the first one starts.
        In this process the sweeps run one after another; on a cluster, each sweep's groups are submitted
        as soon as its source net is ready, and the rows of all of them are written as they come back."""
        todo = self.configs()
        for _, cfg in todo:  # a bad directory is refused now, not after an hour
            sweep.check_directory(sweep.Experiment.load(cfg))
        if self.cfg.cluster is None:
            for _, cfg in todo:
                sweep.run(cfg, progress=progress)
        else:
            self._on_cluster([cfg for _, cfg in todo], progress)
        rows = read(self.root)  # only this study's sweeps, should the directory hold more splits
        wanted = {(variant, cfg.split) for variant, cfg in todo}
        return rows[[key in wanted for key in zip(rows.variant, rows.split)]].reset_index(drop=True)

    def _on_cluster(self, configs: list[Config], progress: bool) -> None:
        """Every sweep's directory held by this process, the one writer, while the cluster computes."""
        runs.check(self.cfg.engine)  # source nets are trained here, by the engine
        bar = tqdm(total=0, desc="study", unit="run", disable=not progress)
        with cluster.connect(self.cfg.cluster) as pool, contextlib.ExitStack() as held:
            pool.check(self.cfg.engine)  # before the first source net is trained
            for cfg in configs:
                exp = sweep.open_experiment(cfg)
                held.enter_context(store.writer(cfg.results_dir))
                opened = sweep.Sweep(exp, progress=False, bar=bar)
                pool.submit(opened.task, opened.todo, opened.save, exp.checksums)
                pool.drain(block=False)  # write what has come back while the next source net trains
            pool.drain()
        bar.close()


def feature_spread(cfg: Config) -> pd.DataFrame:
    """How much each level's output varies from image to image (the std over the test images, averaged over
    units), for the split's trained source net and for the untrained net random-frozen copies: a layer whose
    output barely varies passes little of the image on."""
    exp, source, _ = sweep.prepare(cfg, progress=False)
    images = exp.task(source).test[0]
    out = {}
    for name, net in (("trained", source), ("random", exp.random_source())):
        levels = frozen_inputs(net, images)[1:]  # the outputs of C1 (tile sums) .. C5
        out[name] = [float(t.flatten(1).std(0).mean()) for t in levels]
    return pd.DataFrame(out, index=pd.Index([f"{n} ({LAYERS[n - 1]})" for n in range(1, 6)], name="level n"))


def split_dirs(root: str | Path) -> list[tuple[str, int, Path]]:
    """(variant, split, directory) of every finished-or-started sweep under a study's root."""
    out = []
    for path in sorted(Path(root).glob(f"*/split-*/{RESULTS_FILE}")):
        out.append((path.parent.parent.name, int(path.parent.name.split("-")[1]), path.parent))
    return sorted(out, key=lambda v: (list(VARIANTS).index(v[0]) if v[0] in VARIANTS else 99, v[1]))


def read(root: str | Path) -> pd.DataFrame:
    """Every run of the study, tidy: one row per run, with its variant and split."""
    frames = []
    for variant, split, where in split_dirs(root):
        _, rows = read_results(where / RESULTS_FILE)
        frames.append(rows.assign(variant=variant, split=split))
    if not frames:
        raise FileNotFoundError(f"{root} holds no study results")
    return pd.concat(frames, ignore_index=True)


def sources(root: str | Path) -> pd.DataFrame:
    """Each split's source net: classes, epochs, training and held-out accuracy."""
    out = []
    for variant, split, where in split_dirs(root):
        r = read_source_record(where)
        meta, _ = read_results(where / RESULTS_FILE)
        out.append({"variant": variant, "split": split, "source": r["classes"], "target": meta["target_classes"],
                    "epochs": r["epochs"], "train_accuracy": r["train_accuracy"],
                    "held_out_accuracy": r["held_out_accuracy"], "state_sha256": r["state_sha256"]})
    return pd.DataFrame(out)


def predictions(root: str | Path, variant: str = "baseline") -> dict[int, tuple[pd.DataFrame, object, object, str]]:
    """Per split: (keys, predictions, labels, target classes) of its runs' test predictions."""
    out = {}
    for v, split, where in split_dirs(root):
        if v == variant and (where / PREDICTIONS_FILE).exists():
            meta, _ = read_results(where / RESULTS_FILE)
            out[split] = (*read_predictions(where), meta["target_classes"])
    return out
