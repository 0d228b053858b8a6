"""Every study beyond the paper's sweep, as a table entry (ktlib.record.plans.Design): its parts, what each changes
and over which replicates it runs. A new study is an entry here, with part names of its own; `ktlib <name>` runs it
and ktlib.plan(<name>, cfg) reads it back. Its analysis module goes in ktlib/analysis/, and its notebook in the
book's _toc.yml and ktlib.analysis.glue.NOTEBOOKS."""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ktlib.compute import data, selection
from ktlib.compute.model import state_hash
from ktlib.config import NATIVE_CODE_BITS, PROFILES, Config, Purpose, derive_seed
from ktlib.recipes import BASELINE, CORE, PARTIAL_LEVELS, PROBES, SCORES, SPREAD_CONTROL, partial
from ktlib.record import files, layout
from ktlib.record.files import SOURCE_FILE
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

# The paper asks what more source classes give. Three things grow with them when every class keeps the paper's 400
# images and every net trains to the paper's accuracy: the source images, the source training length, and the
# targets' case twins among the source classes. The study holds the first two apart by design and measures the third:
# - the rule series, classes-<m>: m nested classes of 400 images, trained by the paper's rule, with the capacity
#   control beside them (what the paper's protocol gives, and whether it is knowledge);
# - the equal-length series, steps-<m>x<p>: m nested classes of p images each, on a grid whose diagonals hold the
#   total images fixed while the classes double (Huh, Agrawal & Efros 2016 vary the two the same way), every net
#   trained the same optimiser steps (the profile's source_steps); the class and image effects are read here;
# - large-<m>: the largest rule source at the largest k the targets allow (Bartlett & Baxter's prediction).
NESTED = (5, 10, 20)  # source sizes below the largest, which is every class with the paper's 400 training images
CAPACITY_LEVELS = [3, 5]  # where the capacity control runs beside the rule series' frozen sweeps
ORDERED, EQUAL, LARGE = "classes-", "steps-", "large-"  # the three series' part names: a prefix, then the source
RULE_SIZES = (1, 10, 40)  # the rule series' k (cut from 1, 5, 10, 20, 40 for the study's 45 minutes)
EQUAL_SIZES = (1, 40)  # the equal-length series' k: the smallest and the paper's largest
EQUAL_TRIALS = 3  # the equal-length series' trials per cell (cut from 5 for time: its intervals are over orders)
LARGE_K = 100  # the largest k the fixed targets allow (each has at least 117 training images in the record's data)
LARGE_TRIALS = 3  # its trials (cut from 5 for the study's 45 minutes, like EQUAL_TRIALS)


def scarce_targets(emnist: data.Emnist, cfg: Config, seed: int, study: str) -> list[int]:
    """n_classes target classes drawn by `seed` among the classes too scarce to be a source class (fewer than the
    pool's 400 training images) and with enough images to be a target, so that no source net takes any of them."""
    pool, _ = data.eligible(emnist, data.ORDER_POOL_IMAGES)
    _, ok = data.eligible(emnist, cfg.source_per_class, max(cfg.sizes), cfg.test_per_class)
    scarce = [c for c in ok if c not in pool]
    if len(scarce) < cfg.n_classes:
        raise data.DataError(f"only {len(scarce)} classes have too few images to be a source class and enough to be a "
                             f"target; the {study} needs {cfg.n_classes}")
    return sorted(np.random.default_rng(seed).choice(scarce, cfg.n_classes, replace=False).tolist())


def fixed_targets(emnist: data.Emnist, cfg: Config) -> str:
    """The target classes of every breadth sweep: drawn once among the scarce classes (scarce_targets), so no source
    size takes any of them and every change comes from the source."""
    chosen = scarce_targets(emnist, cfg, derive_seed(cfg.seed, Purpose.FIXED_TARGETS), "breadth study")
    short = [emnist.mapping[c] for c in chosen if emnist.counts("train")[c] < LARGE_K]
    if short:
        raise data.DataError(f"target classes {short} have fewer than {LARGE_K} training images, the k of the "
                             f"breadth study's {LARGE}part")
    return "".join(emnist.mapping[c] for c in chosen)


def equal_cells(classes: list[int], per_class: int) -> list[tuple[int, int]]:
    """The equal-length series' grid: (classes, images per class). The smallest source's total, doubled again and
    again, makes the diagonals; each class count takes each total its classes can hold at up to `per_class` images
    (rounded to whole images), and all `per_class` images as its row's top."""
    first = classes[0] * per_class
    cells = {(m, per_class) for m in classes}
    for m in classes:
        total = first
        while total <= m * per_class:
            cells.add((m, round(total / m)))
            total *= 2
    return sorted(cells)


def cell_name(classes: int, per_class: int) -> str:
    return f"{EQUAL}{classes}x{per_class}"


def breadth_parts(cfg: Config, emnist: data.Emnist) -> tuple[Part, ...]:
    """The rule series (NESTED, then every class that can be one), the largest at LARGE_K, then the equal-length
    grid."""
    largest = len(data.eligible(emnist, data.ORDER_POOL_IMAGES)[0])
    classes = [m for m in NESTED if m < largest] + [largest]
    within = lambda ks: [k for k in ks if k <= max(cfg.sizes)] or [min(cfg.sizes)]  # noqa: E731 (a smoke profile)
    equal = dict(recipes=[BASELINE], control_levels=None, sizes=within(EQUAL_SIZES),
                 trials=min(EQUAL_TRIALS, cfg.trials), source_steps=PROFILES[cfg.profile].source_steps)
    return (*(Part(f"{ORDERED}{m}", "orders", dict(source_size=m, sizes=within(RULE_SIZES))) for m in classes),
            Part(f"{LARGE}{largest}", "orders", dict(source_size=largest, sizes=[LARGE_K], recipes=[BASELINE],
                                                     control_levels=None, trials=min(LARGE_TRIALS, cfg.trials))),
            *(Part(cell_name(m, p), "orders", dict(equal, source_size=m, source_per_class=p))
              for m, p in equal_cells(classes, cfg.source_per_class)))


BREADTH = Design(
    "breadth", "the breadth study: source nets of 5 to 39 nested classes, apart from their images and training "
               "length, on fixed targets",
    base=lambda cfg, emnist: dict(recipes=[BASELINE, SPREAD_CONTROL], control_levels=CAPACITY_LEVELS,
                                  source_training="engine", target_chars=fixed_targets(emnist, cfg)),
    parts=breadth_parts, axis="order", count="orders", shared_zero=True)

# ---------------------------------------------------------------- the partial study: partly transferred levels

# The paper's plan for future work (issue 38): at C5, or C3, copy and freeze only some maps, chosen by a score on the
# target's training images (ktlib.compute.maps), and let the rest train. Each part is one level on the study's first splits:
# the frozen nets on either side of it (m = 0 and every map: n-1 and n), and at each m the four scores, their
# reversed rankings and RANDOM_DRAWS random choices, at each of its k, every trial; the choosers of one m train in one
# group (executors.groups), 90 runs side by side.
KEPT = {"C5": (15, 30, 60, 90), "C3": (4, 8, 12)}  # m between none and all of the level's maps
RANDOM_DRAWS = 10  # random choices of each m: the distribution the scores are read against
CHOOSERS = (*SCORES, *(f"{s}-reversed" for s in SCORES), *(f"random{r}" for r in range(RANDOM_DRAWS)))
PARTIAL_PART = "partial-"  # a part's name: the prefix, then its level
# Cut for the study's 40 minutes on 2 cores, priced before the record on split 0 (a pilot whose runs were not kept):
# a bundle of 90 runs at C5 took 173 s of one core at k=40, and at C3 137 s at k=10 (C3's runs cost four times C5's
# per step, so k=40 there would take about 12 minutes a bundle). So C5 runs at k = 1, 10 and 40, C3 at k = 1 and 10,
# each on PARTIAL_SPLITS splits (the issue asked for every k of the paper, and 10 splits for the best score).
PARTIAL_SIZES = {"C5": (1, 10, 40), "C3": (1, 10)}
PARTIAL_SPLITS = 3


def partial_parts(cfg: Config, emnist: data.Emnist) -> tuple[Part, ...]:
    """One part per partly transferred level: its level and the one below it retained whole, and its partial
    recipes, at its sizes (those of a smaller profile that it has, else the profile's smallest)."""
    parts = []
    for level, kept in KEPT.items():
        n = PARTIAL_LEVELS[level]
        sizes = [k for k in PARTIAL_SIZES[level] if k in cfg.sizes] or [min(cfg.sizes)]
        recipes = [BASELINE, *(partial(level, m, c) for m in kept for c in CHOOSERS)]
        parts.append(Part(f"{PARTIAL_PART}{level}", "splits", dict(levels=[n - 1, n], sizes=sizes, recipes=recipes)))
    return tuple(parts)


PARTIAL = Design(
    "partial", "partly transferred levels: at C5 and C3, some maps copied and frozen, chosen by saliency, first-order "
               "Taylor, mutual information, the ablation oracle, their reversals or at random, the rest trained",
    base=dict(source_training="engine"), parts=partial_parts,
    default=lambda profile: min(PARTIAL_SPLITS, profile.splits))


# ---------------------------------------------------------------- the selection study: which source classes

# The paper's last line of future work (issue 39): which 20 source classes to learn, chosen before anything trains.
# Each replicate is a draw of the 20 target classes among the classes too scarce to be a source class (so every
# selection may take any class of the pool), with its own seeds, as a class split has; for each draw, every selection
# is made again (ktlib.compute.selection says how each is made), and its source net trained as the paper's, with the
# same seeds for every selection of the draw: only the classes differ. Each source runs the paper's frozen sweep on the
# draw's targets, with the same training sets and initial weights for every selection, so the n=0 runs, which copy
# nothing, are run once per draw, by its first selection.
SPANNING, NEAR, FAR, UNTWINNED, RANDOM = "spanning-", "near", "far", "near-untwinned", "random"
SPACES = ("pixels", "probe")  # where spanning covers the pool: the classes' mean images, or their mean probe features
RANDOM_SELECTIONS = 10  # random draws of the source classes per draw of the targets
SELECTIONS = (*(f"{SPANNING}{space}" for space in SPACES), NEAR, UNTWINNED, FAR,
              *(f"{RANDOM}{r}" for r in range(RANDOM_SELECTIONS)))
# The probe: the breadth study's source net of every class of the pool (its 39-class source of nesting order 0), in
# the record since issue 37, before this study was designed; its sha256 is pinned, so no later net can take its place.
PROBE_SWEEP = f"{ORDERED}39/order-0"
PROBE_SHA256 = "2178d48f99bb24ee1e0d593cc8130c0fe7afa230f9d2b75767c4b13f6897d7ca"
# Cut for the study's 40 minutes on 2 cores (priced by benchmarks/bench.py --selection from the breadth record's
# 20-class sweeps, before any selection ran): the paper's k = 1, 5, 10, 20, 40 cut to 1, 10, 40, on 3 draws.
SELECTION_SIZES = (1, 10, 40)
SELECTION_DRAWS = 3


@functools.lru_cache(maxsize=1)
def probe_net():
    """The probe net, from the committed record, checked against its pinned sha256."""
    path = layout.record_path("paper").parent / layout.STUDY_DIR / PROBE_SWEEP / SOURCE_FILE
    net, _ = files.source_state(path, NATIVE_CODE_BITS)
    if state_hash(net) != PROBE_SHA256:
        raise files.ResultsError(f"{path}: not the probe net the selection study was designed with (sha256 "
                                 f"{PROBE_SHA256[:16]}...); restore it from git")
    return net


@dataclass(frozen=True)
class Selections:
    """One draw's target classes, each selection's source classes (labels), and what each selection was made from."""
    targets: tuple[int, ...]
    chosen: dict[str, tuple[int, ...]]
    table: pd.DataFrame  # per selection: its characters, twins, coverage cost in each space, distance to the targets


@functools.lru_cache(maxsize=8)
def _means(data_dir: str, stamps: tuple, probe: bool) -> tuple[list[int], np.ndarray]:
    emnist = data.opened(data_dir)[0]
    classes = sorted(emnist.mapping)
    return classes, selection.class_means(emnist, classes, probe_net() if probe else None)


def selections(cfg: Config, emnist: data.Emnist, draw: int) -> Selections:
    """Every selection of one draw of the targets (SELECTIONS), from the data and the probe net alone."""
    targets = scarce_targets(emnist, cfg, derive_seed(cfg.seed, Purpose.SELECTION_TARGETS, draw), "selection study")
    pool, _ = data.eligible(emnist, data.ORDER_POOL_IMAGES)
    size = cfg.n_classes
    stamps = tuple(sorted(data.opened(cfg.data_dir)[1].items()))
    means = {}
    for space in SPACES:
        classes, m = _means(cfg.data_dir, stamps, space == "probe")
        means[space] = m[[classes.index(c) for c in pool]], m[[classes.index(c) for c in targets]]
    at = lambda positions: tuple(pool[i] for i in positions)  # noqa: E731
    chosen = {f"{SPANNING}{space}": at(selection.spanning(means[space][0], size)) for space in SPACES}
    distance = selection.target_distance(*means["probe"])
    twinned = np.array([data.twin(emnist.mapping[c]) in {emnist.mapping[t] for t in targets} for c in pool])
    chosen |= {NEAR: at(selection.nearest(distance, size)),
               UNTWINNED: at(selection.nearest(distance, size, allowed=~twinned)),
               FAR: at(selection.nearest(distance, size, far=True))}
    rng = np.random.default_rng(derive_seed(cfg.seed, Purpose.SELECTION_RANDOM, draw))
    chosen |= {f"{RANDOM}{r}": tuple(sorted(rng.choice(pool, size, replace=False).tolist()))
               for r in range(RANDOM_SELECTIONS)}
    pool_d = {space: selection.distances(means[space][0], means[space][0]) for space in SPACES}
    rows = {name: {"classes": "".join(emnist.mapping[c] for c in classes),
                   "twins": selection.twins_in(emnist, list(classes), targets),
                   **{f"coverage cost ({space})": selection.coverage_cost(pool_d[space], [pool.index(c) for c in classes])
                      for space in SPACES},
                   "distance to the targets (probe)": float(distance[[pool.index(c) for c in classes]].mean())}
            for name, classes in chosen.items()}
    return Selections(tuple(targets), chosen, pd.DataFrame(rows).T.rename_axis("selection"))


def selection_parts(cfg: Config, emnist: data.Emnist) -> tuple[Part, ...]:
    """One part per selection, over the draws of the targets; the first runs each draw's n=0 runs."""
    sizes = [k for k in SELECTION_SIZES if k <= max(cfg.sizes)] or [min(cfg.sizes)]
    made = functools.lru_cache(maxsize=None)(lambda draw: selections(cfg, emnist, draw))

    def changes(name: str):
        return lambda draw: dict(sizes=sizes, source_chars="".join(emnist.mapping[c] for c in made(draw).chosen[name]),
                                 target_chars="".join(emnist.mapping[c] for c in made(draw).targets))
    return tuple(Part(name, "draws", changes(name), zero=i == 0) for i, name in enumerate(SELECTIONS))


SELECTION = Design(
    "selection", "choosing the source classes: spanning, near, far and random selections of 20 source classes for "
                 "each draw of the targets, each transferred frozen at every level",
    base=dict(recipes=[BASELINE], source_training="engine"), parts=selection_parts, axis="draw", count="draws",
    default=lambda profile: min(SELECTION_DRAWS, profile.variant_splits))  # the smoke profile: one draw


STUDIES = {design.name: design for design in (STUDY, BREADTH, PARTIAL, SELECTION)}


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
