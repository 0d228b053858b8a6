"""The transfer recipes: what each copies into a target net's bottom n layers, and whether those layers train.

Adding a recipe is one entry of RECIPES: the configuration, the engine, the study, the controls and the figures
read it from here."""
from __future__ import annotations

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


def check_recipe(recipe: str) -> str:
    if recipe not in RECIPES:
        raise ValueError(f"recipe must be one of {tuple(RECIPES)}, got {recipe!r}")
    return recipe


def first_trained(recipe: str, n: int) -> int:
    """The lowest layer a run of this recipe trains: n when the copied layers are frozen, else 0."""
    return 0 if RECIPES[check_recipe(recipe)].trains else n
