"""The study beyond the paper: many class splits, the recipes and their controls, and variants of our protocol."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from . import claims, data, records, sweep
from .config import PROFILES, Config, Purpose, derive_seed, replicates
from .recipes import BASELINE, CORE, PROBES, RECIPES

BUDGET_EPOCHS = 100  # the fixed budget of the stopping-rule variant, set before any study run
PATIENCE_STEPS = 500  # the patience-in-steps variant's: 20 epochs at k=40, as the baseline's is there
# The protocol's own choices, each changed alone on the paper's recipe: do any verdicts move?
VARIANTS = {
    "budget": dict(stopping="budget", max_epochs=BUDGET_EPOCHS, recipes=[BASELINE]),
    "one-of-n": dict(code_scheme="one-of-n", recipes=[BASELINE]),
    "patience-steps": dict(patience=PATIENCE_STEPS, patience_unit="steps", recipes=[BASELINE]),
}
# The study's sweeps, one directory per part and split (ktlib.records.sweep_dir): the baseline (every split, the
# recipes of CORE), the probes (the others; their n=0 runs are the baseline's of the same split, so they have none)
# and each variant (the first few splits).
PARTS = ["baseline", "probes", *VARIANTS]


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
        profile = PROFILES[cfg.profile]
        splits = replicates("splits", splits, profile.splits)
        # source nets by the engine: the same steps as train.train to rounding, ~17x faster (the paper's
        # sweep keeps its plainly trained one, so the study's split 0 is that sweep but for its source net)
        return cls(dataclasses.replace(cfg, recipes=CORE, source_training="engine"), splits,
                   min(profile.variant_splits, splits), profile.draws)

    @property
    def root(self) -> Path:
        return records.study_root(self.cfg.results_dir)

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
                    records.sweep_dir(self.root, part, split)), **self.changes(part))))
        return out

    def run(self, progress: bool = True) -> pd.DataFrame:
        """Run (or resume) every sweep of the study on one executor (ktlib.sweep.run_sweeps); its runs, tidy."""
        sweep.run_sweeps([cfg for _, cfg in self.configs()], progress, name="study")
        return self.runs()

    def _mine(self, table: pd.DataFrame) -> pd.DataFrame:
        """Only this study's sweeps, should the directory hold more splits."""
        wanted = {(part, cfg.split) for part, cfg in self.configs()}
        return table[[key in wanted for key in zip(table.variant, table.split)]].reset_index(drop=True)

    def seed(self, purpose: Purpose) -> int:
        """The seed of one of the analysis's purposes (the bootstrap, the coverage simulation): one seed, so every
        table resamples the same splits and trials."""
        return derive_seed(self.cfg.seed, purpose)

    def against_record(self) -> dict[str, dict]:
        """Per sweep: how far its runs are from the committed record's of the same data."""
        return against_record([cfg for _, cfg in self.configs()], self.root)

    def runs(self) -> pd.DataFrame:
        """Every run of the study, tidy: one row per run, with its part (`variant`) and split."""
        return self._mine(records.study_runs(self.root, PARTS))

    def readouts(self) -> pd.DataFrame:
        """Every training-free readout of the study, tidy, with its part (`variant`) and split."""
        return self._mine(records.study_readouts(self.root, PARTS))

    def sources(self) -> pd.DataFrame:
        """Each sweep's source net: classes, epochs, training and held-out accuracy."""
        return self._mine(records.study_sources(self.root, PARTS))

    def spreads(self) -> pd.DataFrame:
        """Each level's spread per split and recipe, in the baseline's and the probes' sweeps: a level whose output
        barely varies passes little of the image on to the layers that train."""
        return records.study_spreads(self.root, ["baseline", "probes"])

    def predictions(self, part: str = "baseline") -> dict[int, tuple[pd.DataFrame, object, object, str]]:
        """Per split of a part: (keys, predictions, labels, target classes) of its runs' test predictions."""
        return records.study_predictions(self.root, part)

    def provenance(self) -> pd.DataFrame:
        """Per sweep: the commit, split, classes, protocol, source net and versions that made it."""
        return records.study_provenance(self.root, PARTS)


def against_record(configs: list[Config], root: Path) -> dict[str, dict]:
    """Per sweep of a study under `root`: how far its runs are from the committed record's of the same data
    (claims.compare_with_record; the engine may differ, as in the sweep notebook's check)."""
    first = configs[0]
    record = records.study_root(records.record_path(first.profile, checksums=data.opened(first.data_dir)[1]).parent)
    checks = {}
    for cfg in configs:
        where = Path(cfg.results_dir)
        meta, rows = records.read_results(where / records.RESULTS_FILE)
        relative = where.relative_to(root)
        checks[str(relative)] = claims.compare_with_record(rows, meta, record / relative / records.RESULTS_FILE,
                                                           ignore=("engine",))
    return checks


def recipes(plan: Study) -> pd.DataFrame:
    """Every recipe of the study: what it copies, whether its copied layers train and at what share of the rate,
    and on which splits it runs."""
    out = {name: {"copies": r.copies, "copied layers": f"train at {r.lr_factor:g} x lr" if r.trains else "frozen",
                  "runs on": f"all {plan.splits} splits" if name in CORE else f"splits 0-{plan.variant_splits - 1}",
                  "what it is": r.about} for name, r in RECIPES.items()}
    return pd.DataFrame(out).T.rename_axis("recipe")


def with_probes(rows: pd.DataFrame, splits: int) -> pd.DataFrame:
    """The baseline's runs (or readouts) of its first `splits` splits, with the probes' beside them: every recipe on
    the same splits, the n=0 runs the baseline's (the probes' readouts of the baseline's recipe are left out, as
    copies of the baseline's)."""
    base = rows[(rows.variant == "baseline") & (rows.split < splits)]
    return pd.concat([base, rows[(rows.variant == "probes") & (rows.recipe != BASELINE)]], ignore_index=True)


def protocol(rows: pd.DataFrame) -> pd.DataFrame:
    """The baseline's runs and those of the protocol variants (ktlib.verdicts.variant_changes compares them)."""
    return rows[rows.variant.isin(["baseline", *VARIANTS])]


