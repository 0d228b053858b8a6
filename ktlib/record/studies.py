"""Every study beyond the paper's sweep, as a table entry (ktlib.record.plans.Design): its parts, what each changes
and over which replicates it runs. A new study is an entry here, with part names of its own; `ktlib <name>` runs it
and ktlib.plan(<name>, cfg) reads it back. Its analysis module goes in ktlib/analysis/, and its notebook in the
book's _toc.yml and ktlib.analysis.glue.NOTEBOOKS."""
from __future__ import annotations

import numpy as np

from ktlib.compute import data
from ktlib.config import Config, Purpose, derive_seed
from ktlib.recipes import BASELINE, CORE, MATCHED_CONTROL, PROBES
from ktlib.record.plans import Design, Part, Plan

# ---------------------------------------------------------------- the study: many splits, the recipes, the variants

BUDGET_EPOCHS = 100  # the fixed budget of the stopping-rule variant, set before any study run
PATIENCE_STEPS = 500  # the patience-in-steps variant's: 20 epochs at k=40, as the baseline's is there
# The protocol's own choices, each changed alone on the paper's recipe: do any verdicts move?
VARIANTS = {
    "budget": dict(stopping="budget", max_epochs=BUDGET_EPOCHS, recipes=[BASELINE]),
    "one-of-n": dict(code_scheme="one-of-n", recipes=[BASELINE]),
    "patience-steps": dict(patience=PATIENCE_STEPS, patience_unit="steps", recipes=[BASELINE]),
}

BASELINE_PART, PROBES_PART = "baseline", "probes"  # the study's part on every split, and its probes' part
# The variants' yardstick: the paper's recipe under the baseline's protocol on the variants' splits, with the source
# net, the training sets and the initial weights drawn again, the classes, their codes and the held-out images kept
# (Config.reseed). How often its verdicts differ from the baseline's is how often a verdict moves by chance alone; a
# variant's moves are read against that rate.
RESEEDED_PART = "reseeded"

STUDY = Design(
    "study", "the study beyond the paper: many class splits, the recipes and controls, protocol variants",
    # source nets by the engine: the same steps as train.train to rounding, ~17x faster (the paper's sweep keeps its
    # plainly trained one, so the study's split 0 is that sweep but for its source net)
    base=dict(recipes=CORE, source_training="engine"),
    # the baseline (every split, the recipes of CORE); the probes (the other recipes; their n=0 runs are the
    # baseline's of the same split, so they have none) and each variant, on the first few splits
    parts=(Part(BASELINE_PART), Part(PROBES_PART, "variant_splits", dict(recipes=PROBES), zero=False),
           *(Part(name, "variant_splits", changes) for name, changes in VARIANTS.items()),
           Part(RESEEDED_PART, "variant_splits", dict(recipes=[BASELINE], reseed=1))),
    counts=lambda profile, splits: {"variant_splits": min(profile.variant_splits, splits)})

# ---------------------------------------------------------------- the breadth study: more source classes

NESTED = (5, 10, 20)  # source sizes below the largest, which is every class with the paper's 400 training images
CAPACITY_LEVELS = [3, 5]  # where the capacity control runs beside the frozen sweep
ORDERED = "classes-"  # a breadth part's name: classes-<m>, or the fixed-image control's
FIXED = "fixed"  # the control that holds the source images fixed: all the classes, as many images in all as 20 x 400


def fixed_targets(emnist: data.Emnist, cfg: Config) -> str:
    """The target classes of every breadth sweep: n_classes drawn once among the classes too scarce to be a source
    class, so no source size takes any of them and every change comes from the source."""
    pool, _ = data.eligible(emnist, data.ORDER_POOL_IMAGES)
    _, ok = data.eligible(emnist, cfg.source_per_class, max(cfg.sizes), cfg.test_per_class)
    scarce = [c for c in ok if c not in pool]
    if len(scarce) < cfg.n_classes:
        raise data.DataError(f"only {len(scarce)} classes have too few images to be a source class and enough to be a "
                             f"target; the breadth study needs {cfg.n_classes}")
    rng = np.random.default_rng(derive_seed(cfg.seed, Purpose.FIXED_TARGETS))
    return "".join(emnist.mapping[c] for c in sorted(rng.choice(scarce, cfg.n_classes, replace=False).tolist()))


def breadth_parts(cfg: Config, emnist: data.Emnist) -> tuple[Part, ...]:
    """The nested sources (NESTED, then every class that can be one), then the control with all the classes but as
    many source images in all as the paper's source."""
    largest = len(data.eligible(emnist, data.ORDER_POOL_IMAGES)[0])
    sizes = [m for m in NESTED if m < largest] + [largest]
    fixed = dict(source_size=largest, recipes=[BASELINE], control_levels=None,
                 source_per_class=round(cfg.n_classes * cfg.source_per_class / largest))
    return (*(Part(f"{ORDERED}{m}", "orders", dict(source_size=m)) for m in sizes),
            Part(f"{ORDERED}{FIXED}", "orders", fixed))


BREADTH = Design(
    "breadth", "the breadth study: source nets of 5 to 39 nested classes on fixed targets",
    base=lambda cfg, emnist: dict(recipes=[BASELINE, MATCHED_CONTROL], control_levels=CAPACITY_LEVELS,
                                  source_training="engine", target_chars=fixed_targets(emnist, cfg)),
    parts=breadth_parts, axis="order", count="orders", shared_zero=True)

STUDIES = {design.name: design for design in (STUDY, BREADTH)}


def plan(name: str, cfg: Config, count: int | None = None) -> Plan:
    """The study `name` on `cfg`, with `count` replicates (default: the profile's). Its parts must be its own: every
    study keeps its sweeps under study/<part>/, so a part named like another study's is refused (parts that the data
    decide are checked by tests/test_plan.py)."""
    found = Plan.of(STUDIES[name], cfg, count)
    mine = {p.name for p in found.parts}
    for other, design in STUDIES.items():
        if other == name or callable(design.parts):
            continue
        shared = mine & {p.name for p in design.parts}
        if shared:
            raise ValueError(f"the {name}'s parts {sorted(shared)} are the {other}'s too: their sweeps would share "
                             f"directories under study/; name them apart")
    return found
