"""The transfer recipes: what each copies into a target net's bottom n layers, and whether those layers train.

Adding a recipe is one entry of RECIPES: the configuration, the engine, the study, the controls and the figures
read it from here."""
from __future__ import annotations

import re
from dataclasses import dataclass

# The nets a recipe copies from (ktlib.compute.transfer.copy_source draws them). trained: the source net. The others
# keep its architecture and take the knowledge out:
# random-lecun: a fresh initialisation at LeCun's scale, U(-2.4/F, 2.4/F); it shrinks the signal layer by layer;
# random-normal: LeCun-normal, N(0, 1/F) weights and zero biases, which keeps the signal's variance;
# random-matched: the random-lecun draw, each tensor rescaled to the trained tensor's standard deviation;
# shuffled: the trained net's values, permuted within each tensor (C3's within its connection table);
# random-spread: the random-lecun draw, each layer rescaled, bottom up, until its output varies from image to image on
# the source classes' held-out images as much as the trained net's does (data-dependent, as Mishkin & Matas's
# layer-sequential unit-variance initialisation): the same signal at every level, however long the source trained.
COPIES = ("trained", "random-lecun", "random-normal", "random-matched", "shuffled", "random-spread")


@dataclass(frozen=True)
class Recipe:
    """How a target net's bottom n layers are made: copied from which net, whether they train (and at what share
    of the configured learning rate); and whether the study runs it on every class split, or only on the first few
    (a probe)."""
    copies: str
    trains: bool = False
    lr_factor: float = 1.0
    every_split: bool = False
    about: str = ""
    study: bool = True  # False: the study beyond the paper runs it neither on every split nor as a probe
    # A partial recipe (`partial`): at level `level` (a convolution, C3 or C5, as the n it completes) only `kept` of
    # its maps are copied and frozen, chosen by `chooser`; its other maps start fresh and train with the levels above.
    level: int | None = None
    kept: int | None = None
    chooser: str | None = None

    @property
    def control(self) -> bool:
        """A control copies a net other than the trained one: the architecture without the knowledge."""
        return self.copies != "trained"


# Every recipe the study knows, in the order of its tables and the colours of its figures. n=0 copies nothing:
# its runs are stored once, under BASELINE, and serve every recipe.
RECIPES = {
    "frozen": Recipe("trained", every_split=True,
                     about="copied from the trained source net and frozen: the paper's recipe"),
    "fine-tuned": Recipe("trained", True, 1.0, every_split=True,
                         about="copied from the trained source net, then trained with the rest"),
    "fine-tuned-lr0.1": Recipe("trained", True, 0.1, about="as fine-tuned, the copied layers at a tenth of the rate"),
    "fine-tuned-lr0.01": Recipe("trained", True, 0.01, about="as fine-tuned, the copied layers at a hundredth"),
    "random-matched": Recipe("random-matched", every_split=True,
                             about="random weights at the trained net's scale, frozen"),
    "random-normal": Recipe("random-normal", about="LeCun-normal random weights, frozen"),
    "shuffled": Recipe("shuffled", every_split=True, about="the trained weights shuffled within each layer, frozen"),
    "random-lecun": Recipe("random-lecun", about="random weights at LeCun's initial scale, frozen"),
    "random-spread": Recipe("random-spread", study=False,
                            about="random weights scaled layer by layer to the trained net's output spread on the "
                                  "source images, frozen: the breadth study's capacity control"),
}
BASELINE = "frozen"  # the recipe under which the shared n=0 runs are stored
# The study's choices among them, each made by a rule (ktlib.analysis.controls.chosen_rate, chosen_control) first
# applied to a trial run on splits 0 and 1 (on its test images) that the record does not keep; the controls notebook
# applies each rule to the record's validation images and says whether it picks the same:
TUNED = "fine-tuned"                 # fine-tuning, at the copied layers' rate with the best mean accuracy
MATCHED_CONTROL = "random-matched"   # the random control that keeps the signal's scale best
SPREAD_CONTROL = "random-spread"    # the breadth study's capacity control, sound however long the source trained
STUDY = [name for name, r in RECIPES.items() if r.study]  # the study's recipes, in RECIPES' order
CORE = [name for name, r in RECIPES.items() if r.every_split]  # run on every class split
PROBES = [name for name, r in RECIPES.items() if r.study and not r.every_split]  # run on the first few


# ---------------------------------------------------------------- partially transferred levels (issue 38)
# The paper's future work: at one convolution level, copy and freeze only some of its maps, chosen by a score of each
# map on the target's training images (ktlib.compute.maps), and let the others train from a fresh start. A partial
# recipe is named by its level, how many maps it keeps and what chooses them: "C5-keep30-saliency",
# "C5-keep30-saliency-reversed" (the score's lowest-ranked maps), "C5-keep30-random4" (the fifth random draw).
PARTIAL_MAPS = {"C3": 16, "C5": 120}  # the convolution levels a partial recipe may split, and their maps
PARTIAL_LEVELS = {"C3": 3, "C5": 5}   # ... as the n each completes
SCORES = ("saliency", "taylor", "mi", "ablation")  # ktlib.compute.maps.SCORES says what each measures
_PARTIAL = re.compile(r"(C3|C5)-keep(\d+)-(?:(" + "|".join(SCORES) + r")(-reversed)?|random(\d+))")


def partial(level: str, kept: int, chooser: str) -> str:
    """The name of the partial recipe that keeps `kept` maps of `level`, chosen by `chooser` (a score, a score
    followed by -reversed, or random<draw>)."""
    return check_recipe(f"{level}-keep{kept}-{chooser}")


def recipe(name: str) -> Recipe:
    """The recipe of a name: one of RECIPES, or a partial recipe (`partial`); anything else is one clear error."""
    if name in RECIPES:
        return RECIPES[name]
    found = _PARTIAL.fullmatch(name) if isinstance(name, str) else None
    if found is None:
        raise ValueError(f"recipe must be one of {tuple(RECIPES)} or a partial recipe such as 'C5-keep30-saliency' "
                         f"(level C3 or C5, then keep<maps>, then a score of {SCORES}, optionally -reversed, or "
                         f"random<draw>), got {name!r}")
    level, kept = found.group(1), int(found.group(2))
    if not 0 < kept < PARTIAL_MAPS[level]:
        raise ValueError(f"{name!r} keeps {kept} of {level}'s {PARTIAL_MAPS[level]} maps: keep 1 to "
                         f"{PARTIAL_MAPS[level] - 1} (none is n={PARTIAL_LEVELS[level] - 1}, all is "
                         f"n={PARTIAL_LEVELS[level]})")
    chooser = name.split("-", 2)[2]
    return Recipe("trained", study=False, level=PARTIAL_LEVELS[level], kept=kept, chooser=chooser,
                  about=f"{kept} of {level}'s {PARTIAL_MAPS[level]} maps copied and frozen, chosen by {chooser}; "
                        f"the rest trained from a fresh start")


def check_recipe(name: str) -> str:
    recipe(name)
    return name


def is_partial(name: str) -> bool:
    return recipe(name).level is not None


def first_trained(name: str, n: int) -> int:
    """The lowest layer a run of this recipe trains: n when the copied layers are frozen, 0 when they train, and for
    a partial recipe n - 1, its partly copied level."""
    r = recipe(name)
    if r.level is not None:
        if n != r.level:
            raise ValueError(f"the partial recipe {name!r} runs at n={r.level}, not n={n}")
        return n - 1
    return 0 if r.trains else n
