"""The study beyond the paper: many class splits, the recipes and their controls, and variants of our protocol."""
from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from . import cluster, runs, store, sweep
from .config import Config
from .model import LAYERS
from .results import (PREDICTIONS_FILE, READOUTS_FILE, RESULTS_FILE, read_predictions, read_readouts, read_results,
                      read_source_record)
from .transfer import BASELINE, MATCHED_CONTROL, RECIPES, TUNED

STUDY_DIR = "study"  # under a profile's results directory
# The recipes run on every class split: the paper's, fine-tuning at the copied layers' chosen rate, and the two
# controls that keep the trained net's scale without its knowledge. The others, the probes, run on the first few
# splits: the alternatives the every-split recipes were chosen from, and LeCun-scale random weights.
CORE = [BASELINE, TUNED, MATCHED_CONTROL, "shuffled"]
PROBES = [r for r in RECIPES if r not in CORE]
BUDGET_EPOCHS = 100  # the fixed budget of the stopping-rule variant, set before any study run
PATIENCE_STEPS = 500  # the patience-in-steps variant's: 20 epochs at k=40, as the baseline's is there
# The protocol's own choices, each changed alone on the paper's recipe: do any verdicts move?
VARIANTS = {
    "budget": dict(stopping="budget", max_epochs=BUDGET_EPOCHS, recipes=[BASELINE]),
    "one-of-n": dict(code_scheme="one-of-n", recipes=[BASELINE]),
    "patience-steps": dict(patience=PATIENCE_STEPS, patience_unit="steps", recipes=[BASELINE]),
}
# The study's sweeps, one directory per part and split: the baseline (every split), the probes (their n=0 runs
# are the baseline's of the same split, so they have none) and each variant (the first few splits).
PARTS = ["baseline", "probes", *VARIANTS]
# profile -> (class splits, splits the variants run on, bootstrap draws)
SIZES = {"paper": (10, 3, 2000), "smoke": (2, 1, 200)}


@dataclass
class Study:
    """The paper's protocol on `splits` class splits with the recipes of CORE, and the probes and each variant
    on the first `variant_splits` of them; split 0 is the paper's split."""
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
        return cls(dataclasses.replace(cfg, recipes=CORE, source_training="engine"), splits,
                   min(variant_splits, splits), draws)

    @property
    def root(self) -> Path:
        return Path(self.cfg.results_dir) / STUDY_DIR

    def changes(self, part: str) -> dict:
        """How a part's sweeps differ from the baseline's configuration."""
        if part == "probes":
            return dict(recipes=PROBES, levels=[n for n in self.cfg.levels if n > 0])
        return VARIANTS.get(part, {})

    def configs(self) -> list[tuple[str, Config]]:
        """(part, config) of every sweep of the study, the baseline's splits first."""
        out = []
        for part in PARTS:
            for split in range(self.splits if part == "baseline" else self.variant_splits):
                out.append((part, dataclasses.replace(self.cfg, split=split, results_dir=str(
                    self.root / part / f"split-{split}"), **self.changes(part))))
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
                opened.read_out()  # here, while the cluster trains
                pool.drain(block=False)  # write what has come back while the next source net trains
            pool.drain()
        bar.close()


def recipes(plan: Study) -> pd.DataFrame:
    """Every recipe of the study: what it copies, whether its copied layers train and at what share of the rate,
    and on which splits it runs."""
    out = {name: {"copies": r.copies, "copied layers": f"train at {r.lr_factor:g} x lr" if r.trains else "frozen",
                  "runs on": f"all {plan.splits} splits" if name in CORE else f"splits 0-{plan.variant_splits - 1}",
                  "what it is": r.about} for name, r in RECIPES.items()}
    return pd.DataFrame(out).T.rename_axis("recipe")


def readouts(root: str | Path) -> pd.DataFrame:
    """Every training-free readout of the study, tidy, with its variant and split."""
    frames = [read_readouts(where)[1].assign(variant=variant, split=split)
              for variant, split, where in split_dirs(root) if (where / READOUTS_FILE).exists()]
    if not frames:
        raise FileNotFoundError(f"{root} holds no readouts")
    return pd.concat(frames, ignore_index=True)


def spreads(root: str | Path) -> pd.DataFrame:
    """How much each level's output varies from image to image, per split and recipe (ktlib.readouts.spread), in
    the baseline's and the probes' sweeps: a level whose output barely varies passes little of the image on to
    the layers that train."""
    out = []
    for part, split, where in split_dirs(root):
        if part in ("baseline", "probes") and (where / READOUTS_FILE).exists():
            for recipe, values in read_readouts(where)[0]["spread"].items():
                out += [{"split": split, "recipe": recipe, "n": n, "level": "pixels" if n == 0 else LAYERS[n - 1],
                         "spread": value} for n, value in enumerate(values)]
    return pd.DataFrame(out).drop_duplicates(["split", "recipe", "n"], ignore_index=True)


def with_probes(rows: pd.DataFrame, splits: int) -> pd.DataFrame:
    """The baseline's runs (or readouts) of its first `splits` splits, with the probes' beside them: every recipe on
    the same splits, the n=0 runs the baseline's (the probes' readouts of the baseline's recipe are left out, as
    copies of the baseline's)."""
    base = rows[(rows.variant == "baseline") & (rows.split < splits)]
    return pd.concat([base, rows[(rows.variant == "probes") & (rows.recipe != BASELINE)]], ignore_index=True)


def protocol(rows: pd.DataFrame) -> pd.DataFrame:
    """The baseline's runs and those of the protocol variants (ktlib.verdicts.variant_changes compares them)."""
    return rows[rows.variant.isin(["baseline", *VARIANTS])]


def split_dirs(root: str | Path) -> list[tuple[str, int, Path]]:
    """(variant, split, directory) of every finished-or-started sweep under a study's root."""
    out = []
    for path in sorted(Path(root).glob(f"*/split-*/{RESULTS_FILE}")):
        out.append((path.parent.parent.name, int(path.parent.name.split("-")[1]), path.parent))
    return sorted(out, key=lambda v: (PARTS.index(v[0]) if v[0] in PARTS else len(PARTS), v[1]))


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
