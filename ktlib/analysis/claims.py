"""The paper's claims, one registry: the counted ones (Table 1, the source net) as a measured summary and a verdict,
and the claims about the runs, each with the paper's words, its contrasts (ktlib.analysis.contrasts) and its texts
for the Claims page (ktlib.analysis.page)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import pandas as pd

from ktlib.analysis.contrasts import (
    FAILS,
    HOLDS,
    SOURCE_NEAR,
    Contrast,
    contrasts_beats_pixels,
    contrasts_best_moves_down,
    contrasts_breadth_grows,
    contrasts_breadth_images,
    contrasts_breadth_persists,
    contrasts_breadth_reaches,
    contrasts_c1_s4,
    contrasts_c5_saturates,
    contrasts_curve_order,
    contrasts_effort,
    contrasts_fine_tuning,
    contrasts_gain_shrinks,
    contrasts_gap,
    contrasts_k1_rises,
    contrasts_partial_breaks,
    contrasts_partial_mi,
    contrasts_partial_saliency,
    contrasts_near_far,
    contrasts_predicts,
    contrasts_spanning,
    contrasts_variance,
)
from ktlib.analysis.glue import NOTEBOOKS, glued
from ktlib.analysis.intervals import Cube
from ktlib.compute.model import LAYERS, PAPER_FREE_PARAMETERS
from ktlib.config import PAPER_SOURCE_ACCURACY
from ktlib.recipes import BASELINE, TUNED

# The paper's derived shares of the 52,256 free parameters, in percent (its text, p. 4).
PAPER_SHARES = {"F6 only trainable": 4.6, "C5 and F6 trainable": 96.7, "C1-S4 (retained when n=4)": 3.3}
# The error on characters its net was not trained on that the paper quotes from Bartlett & Baxter (1998), and the
# number of Kanji classes their representation had learned: the landmark its open question points to.
BAXTER_ERROR = 0.075
BAXTER_CLASSES = 400


@dataclass
class Claim:
    """One claim of the paper: what we measured, in words with numbers, and the verdict."""
    key: str
    measured: str
    verdict: str


# ---------------------------------------------------------------- Table 1

def parameter_table(counts: dict[str, int]) -> pd.DataFrame:
    """Our free parameters per layer next to the paper's Table 1."""
    t = pd.DataFrame({"ours": counts, "paper": PAPER_FREE_PARAMETERS}).loc[list(LAYERS)]
    t.loc["total"] = t.sum()
    t["match"] = t["ours"] == t["paper"]
    return t


def trainable_shares(counts: dict[str, int]) -> pd.DataFrame:
    """The paper's three derived percentages, recomputed from our counts."""
    total = sum(counts.values())
    ours = {"F6 only trainable": counts["F6"],
            "C5 and F6 trainable": counts["C5"] + counts["F6"],
            "C1-S4 (retained when n=4)": sum(counts[l] for l in LAYERS[:4])}
    t = pd.DataFrame({"parameters": ours, "percent": {k: 100 * v / total for k, v in ours.items()},
                      "paper percent": PAPER_SHARES})
    t["match"] = t["percent"].round(1) == t["paper percent"]
    return t


def claim_table1(counts: dict[str, int]) -> Claim:
    t = parameter_table(counts)
    ours = ", ".join(f"{l} {t.loc[l, 'ours']:,}" for l in LAYERS)
    return Claim("table1", f"{ours}; total {t.loc['total', 'ours']:,}", HOLDS if t["match"].all() else FAILS)


def claim_shares(counts: dict[str, int]) -> Claim:
    t = trainable_shares(counts)
    measured = "; ".join(f"{name}: {row.percent:.2f}%" for name, row in t.iterrows())
    return Claim("shares", measured, HOLDS if t["match"].all() else FAILS)


# ---------------------------------------------------------------- the source net

def claim_source(info: dict, target: float = PAPER_SOURCE_ACCURACY) -> Claim:
    """The source net reaches the paper's training accuracy: true by construction, since training stops at
    the first epoch at or above it; its accuracy on held-out images of its classes is what it learned."""
    acc = info["train_accuracy"]
    ok = abs(acc - target) <= SOURCE_NEAR
    held = (f"; on {info['held_out_images']:,} held-out images of its classes: {100 * info['held_out_accuracy']:.2f}%"
            if "held_out_accuracy" in info else "")
    return Claim("source", f"{100 * acc:.2f}% training accuracy after {info['epochs']} epochs "
                           f"(paper: {100 * target:.2f}%), by construction{held}", HOLDS if ok else FAILS)




@dataclass(frozen=True)
class SweepClaim:
    """A claim about the runs: the paper's words it tests (quoted, with the place they come from), its contrasts, made
    from the runs' Cube (which may decide, from all the runs, which sizes are informative), and its texts for the
    Claims page."""
    paper: str
    contrasts: Callable[[Cube], list[Contrast]]
    recipes: tuple[str, ...] = (BASELINE,)
    title: str = ""  # its name on the Claims page
    words: str = ""  # the claim in our words
    how: str = ""    # how its words became contrasts (MyST, for the Claims page)




def _v(key: str, fmt: str = "s") -> str:  # a value the variance notebook glues, for the texts below
    return glued(NOTEBOOKS["variance"], key, fmt)


SWEEP_CLAIMS = {
    "k1_rises": SweepClaim(
        "\u201cThese figures highlight the way in which each layer contributes to the transfer of knowledge from the "
        "source net\u201d (Figures 2 and 3)", contrasts_k1_rises, title="Rises with n",
        words="With one example per class, accuracy rises as more levels are retained, and is best with all five.",
        how="*n* = 5 minus *n* = 0 at the smallest *k*, beyond the clear-gain margin; the least-squares slope of "
            "accuracy over *n* there, above zero; and *n* = 5 minus *n* = 4, above zero (the top is the peak). A rank "
            "correlation, which the first version used, saturates at 1 and has no honest interval."),
    "best_moves_down": SweepClaim(
        "\u201cAs more information is available to the net through increased training set size, the importance of "
        "transferred knowledge decreases\u201d (Discussion)", contrasts_best_moves_down, title="Best n moves down",
        words="With forty examples per class, retaining C5 too costs accuracy: the best number of levels moves down.",
        how="*n* = 4 minus *n* = 5 at the largest *k*, above zero. With *n* = 5 best at the smallest *k* (*rises with "
            f"n*), this is what moves the best *n* down. It is partly built in: with F6 alone to train, the *n* = 5 "
            f"net fits only {_v('top_train_large', '.3f')} of its training images at the largest *k* on the paper's "
            "split. The best *n* itself is an argmax, which has no confidence interval; the controls notebook gives "
            "how often each *n* is best over bootstrap draws."),
    "c1_s4": SweepClaim(
        "\u201cAlthough these levels contain only 3.3% of the weights used by the net, their transfer leads to marked "
        "improvements in the accuracy of the net\u201d (Discussion)", contrasts_c1_s4, title="Clearly beats",
        words="Retaining only C1-S4, 3.3% of the weights, clearly beats training from scratch, at every size.",
        how="*n* = 4 minus *n* = 0 at every *k*, each beyond the clear-gain margin."),
    "c5_saturates": SweepClaim(
        "\u201cwhen levels C1-C5 are retained, the net doesn't seem to have sufficient capacity to learn appreciably "
        "more information than is contained in about 10 samples\u201d (Discussion)", contrasts_c5_saturates,
        title="Barely grows",
        words="With C1-C5 retained, the net gains little from more than about ten examples per class.",
        how=f"*n* = 5's gain from *k* = 10 to the largest *k*, minus {_v('barely')} times *n* = 0's gain over the "
            "same range, below zero."),
    "variance": SweepClaim(
        "\u201cthe relatively slight variance that was observed\u201d (Discussion, of Figures 3-5)", contrasts_variance,
        title="Slight spread", words="The spread over the five trials is slight.",
        how="the pooled trial-to-trial standard deviation (the root of the mean unbiased variance over all cells) "
            f"minus {_v('slight')} times the gain of the first contrast of *rises with n*, below zero. The first "
            "version took a median of standard deviations, which resampled trials shrink."),
    "effort": SweepClaim(
        "\u201cfor small training sets there is a clear advantage to favoring knowledge transfer over net capacity in "
        "both accuracy of learning and in effort required to learn\u201d (Conclusions)", contrasts_effort,
        title="Less effort", words="With one example per class, transfer lowers the effort of learning.",
        how="how fast a net learns, after Raghu et al. (2019): the optimiser steps until its test accuracy first "
            f"reaches {_v('learned', '.0%')} of the lowest final mean accuracy of any level at that split and size, "
            "an accuracy every level's mean attains, for each *n* > 0 minus *n* = 0 at the smallest *k*, in log2 "
            "steps, below zero. Read from each run's test curve, taken at every doubling of its steps, so a run's "
            "steps are known to within a factor of two, and five trials that agree to the doubling give an interval "
            "of no width. A run whose curve never reaches that accuracy is counted at twice its last step, slower "
            "than any that did. Shown, deciding "
            "nothing: the steps to that share of a net's *own* final accuracy (which flatters a net that learns "
            "little), the training arithmetic in GFLOP, and the epochs. The arithmetic decided this claim until the "
            "curves were kept: it was chosen after epochs and arithmetic were seen to disagree at *n* = 5, and at "
            f"*n* >= 3 it cannot fail, since those nets train so few weights that even the "
            f"{glued(NOTEBOOKS['sweep'], 'cfg_max_epochs')}-epoch cap costs "
            "less than *n* = 0's runs do."),
    "gap": SweepClaim(
        "\u201cSmaller expected difference between the expected errors of the training set and testing set, due to "
        "the decreased net capacity\u201d (Introduction, advantage 3)", contrasts_gap, title="Narrower gap",
        words="Transfer narrows the gap between training and test accuracy (the paper's third advantage).",
        how="training minus test accuracy at *n* = 0 minus the same at *n* = 5, above zero, only at the sizes where "
            "it carries information: above the smallest *k*, where every net fits its few images and the gap is one "
            "minus the test accuracy, and where the *n* = 5 net fits its training set (mean training accuracy at "
            f"least {_v('fits')}), since a net that cannot fit narrows the gap by underfitting."),
    "gain_shrinks": SweepClaim(
        "\u201cfor small training sets there is a clear advantage to favoring knowledge transfer over net "
        "capacity\u201d (Conclusions)", contrasts_gain_shrinks, title="Gain shrinks",
        words="Transfer helps most with very small training sets: its gain shrinks as *k* grows.",
        how="the mean gain over *n* = 1 to 5 at the smallest *k* minus that at the largest, beyond the clear-gain "
            "margin. A mean over *n*, not the best *n*: a maximum is biased upwards."),
    "curve_order": SweepClaim(
        "\u201cCurves show, from top to bottom, results for 40, 20, 10, 5 and 1 sample per class\u201d (Figure 2's "
        "caption)", contrasts_curve_order, title="Curve order",
        words="In Figure 2 the curves lie in the order of the training-set size, at every *n*.",
        how="at every *n*, the mean at each *k* minus that at the next smaller *k*, above zero."),
    "beats_pixels": SweepClaim(
        "(not the paper's: a baseline it did not run)", contrasts_beats_pixels, title="Beats raw pixels",
        words="With one example per class, the net beats a readout that needs no training: the nearest class mean "
              "of the raw pixels of the same training images.",
        how="at the smallest *k*, each *n* minus the nearest class mean on the pixels of the same trial's training "
            "set, above zero. Where it lies short or across, training that net did not beat averaging its images."),
}
# Claims that need more recipes, or more splits, than the paper's sweep: judged by the study alone.
STUDY_CLAIMS = {
    "fine_tuning": SweepClaim(
        "\u201cThis would undoubtedly give better results than were obtained\u201d (Discussion, of letting the "
        "transferred maps retrain)", contrasts_fine_tuning, (BASELINE, TUNED), title="Better with fine-tuning",
        words="Letting the transferred layers train too would give better results.",
        how="at each *k*, the fine-tuned net at its best *n* minus the frozen net at its best *n*, beyond the "
            "clear-gain margin. Each split's best *n* is chosen on its validation images, so that the test images' "
            "noise does not pick it; it is chosen from the same runs that are then scored, so the runs' own noise "
            "can still flatter both sides a little. The fine-tuned net is the "
            "study's fine-tuning at the rate it runs on every split (see [Beyond the paper](beyond.md))."),
}


# The paper's two guesses about more source classes, judged by the breadth study (its notebook, 08_breadth), as
# restated in issue 37 before the grid first ran: on the equal-length series, each doubling of the classes at the same
# total images; beside them, the image effect they are held apart from, and Bartlett & Baxter's prediction.
BREADTH_CLAIMS = {
    "breadth_grows": SweepClaim(
        "\u201cif the source net had learned either a larger set of classes, then the benefit of knowledge transfer "
        "would be greater\u201d (Discussion)", contrasts_breadth_grows, (), title="Grows with the source classes",
        words="The more classes the source net has learned, the more transfer helps with one example per class.",
        how="on source nets that all trained the same optimiser steps, each doubling of the source classes at the "
            "same total images (so half the images per class), along every equal-total diagonal of the grid: the "
            "best gain over *n* = 0 at the smallest *k* grows, every step above zero. Each order's best *n* is chosen "
            "on its validation images. The plane of the gain on log2 classes and log2 images is shown beside, and "
            "does not decide. The intervals are over the nesting orders of the source classes, on the same 20 "
            "target classes with the same training sets and initial weights: they speak for a new order (at all 39 "
            "classes, new source seeds only), not for new targets or new draws of their training images. The steps "
            "train as many optimiser steps, not to the same fit; the case twins among the source classes are not "
            "held apart here (see the breadth notebook)."),
    "breadth_persists": SweepClaim(
        "\u201cand persist for even larger training sets\u201d (Discussion)", contrasts_breadth_persists, (),
        title="Persists to larger sets",
        words="With more source classes, the benefit reaches to larger training sets.",
        how="the same doublings of the classes at the same total images and steps, at the largest *k* of the grid, "
            "every step above zero."),
    "breadth_images": SweepClaim(
        "(not the paper's claim: the confound its question is held apart from)", contrasts_breadth_images, (),
        title="More source images help",
        words="At the same source classes and training steps, more images per class make transfer help more.",
        how="each doubling of the images per class at the same classes, on the same equal-length nets, at the "
            "smallest and the largest *k*, every step above zero."),
    "breadth_reaches": SweepClaim(
        "\u201cultimately knowledge transfer will achieve accuracy comparable to the best achievable for full "
        "capacity nets with large training sets\u201d (Conclusions & Future Work, of Bartlett & Baxter's results)",
        contrasts_breadth_reaches, (), title="Not worse than a whole net at k = 100 (Bartlett & Baxter)",
        words="At the largest training set these data give every target (100 images per class), transfer from the "
              "largest source is not worse than a net trained whole. The prediction itself, about many more classes "
              "and large training sets, is beyond these data.",
        how="the largest source (all the classes, by the paper's rule) at *k* = 100: its best transfer net minus "
            "*n* = 0 lies above minus the clear-gain margin, a test of not being worse, which any useful transfer "
            "passes. Only this source runs at *k* = 100, so no trend in the classes is seen there; the *n* = 0 runs "
            "are shared by the orders, so the interval leaves out their own trial noise."),
}


# The paper's plan for future work, judged by the partial study (its notebook, 09_partial), as issue 38 set it before
# any partial run: on the C5 part, over the class splits, each split's choices made on its validation images.
PARTIAL_CLAIMS = {
    "partial_breaks": SweepClaim(
        "\u201cperhaps, one could retrain only some of the feature maps at a given level, rather than all or none. "
        "This would enable us to have a partially transferred layer between the fully transferred and fully "
        "trained layers\u201d (Discussion)", contrasts_partial_breaks, (),
        title="A partly transferred C5 breaks the saturation",
        words="Copying and freezing only some of C5's maps, and training the rest, clearly beats both retaining C5 "
              "whole and not retaining it when there are forty examples per class; with one, it is within the "
              "clear-gain margin of retaining C5 whole.",
        how="on each split, the score (saliency, first-order Taylor, mutual information or the ablation oracle) and "
            "the number of kept maps *m* (15, 30, 60 or 90 of 120) with the best mean validation accuracy at that *k*; "
            "its test accuracy minus *m* = 0 (*n* = 4) and minus *m* = 120 (*n* = 5) at the largest *k*, each beyond "
            "the clear-gain margin; at the smallest *k*, minus *m* = 120, within the margin on both sides. The same "
            "runs choose and are judged (on other images), so their own noise may flatter the choice a little."),
    "partial_saliency": SweepClaim(
        "\u201cIt should be possible to adapt saliency, as in Optimal Brain Damage \u2026 to determine which feature "
        "maps should be transferred and which should be retrained\u201d (Conclusions & Future Work)",
        contrasts_partial_saliency, (), title="Saliency chooses better than chance",
        words="Keeping the C5 maps that saliency ranks highest beats keeping as many maps chosen at random.",
        how="at each kept *m* of C5 (15, 30, 60, 90), at the smallest and the largest *k*: the saliency-chosen net "
            "minus the mean of the ten random choices of *m* maps, above zero. Saliency is Optimal Brain Damage's "
            "second-order estimate of the loss change from deleting a map, with the gradient term kept, on the "
            "trial's training images through a head fitted in closed form."),
    "partial_mi": SweepClaim(
        "\u201cor to adapt mutual information, as in DBT (Pratt 1993), to determine which feature maps should be "
        "transferred\u201d (Conclusions & Future Work)", contrasts_partial_mi, (),
        title="Mutual information chooses better than chance",
        words="Keeping the C5 maps with the most mutual information with the class beats keeping as many at random.",
        how="as for saliency, with each map's mutual information in bits between its thresholded output and the "
            "class on the trial's training images. With one image per class every map, or all but one, carries one "
            "bit, so at *k* = 1 the score cannot rank: its choice is a random one (ties are broken at random), and "
            "half of these contrasts compare one random choice with others. The claim can be read only at the "
            "largest *k*."),
}


# The paper's last line of future work, judged by the selection study (its notebook, 10_selection), as issue 39 set it
# before any selection run: over the draws of the target classes, each selection's level chosen on its validation
# images.
SELECTION_CLAIMS = {
    "selection_spanning": SweepClaim(
        "\u201cPerhaps a different set of classes, which in some sense spanned the set of classes better, would also "
        "give improved results\u201d (Discussion)", contrasts_spanning, (), title="A spanning set beats random sets",
        words="Source classes chosen to cover the pool of classes give more transfer with one example per class than "
              "source classes drawn at random.",
        how="for each draw of the target classes, two spanning selections (greedy facility location on the pool's "
            "mean images, and on their mean C5 features in the probe net) and random ones, each a source net "
            "trained by the paper's rule with the same seeds; each selection's best gain over *n* = 0 at the "
            "smallest *k*, its *n* chosen on validation images, minus the random selections' mean, beyond the "
            "clear-gain margin (at the largest *k*, shown). Every selection takes more than half the pool, so any two "
            "share many classes."),
    "selection_near_far": SweepClaim(
        "(not the paper's claim: the similarity it leaves implicit, after Cui et al. 2018)", contrasts_near_far, (),
        title="Near beats far",
        words="Source classes like the targets give more transfer than source classes unlike them, even without the "
              "targets' case twins.",
        how="the pool classes whose mean probe features lie nearest a target class's (near), the same without "
            "the targets' case twins (near without twins), and as many of the farthest (far): near minus far and near "
            "without twins minus far, each at the smallest and the largest *k*, beyond the clear-gain margin. The pool "
            "holds fewer than twice the source classes, so near and far share some."),
    "selection_predicts": SweepClaim(
        "\u201cFinally, we will investigate techniques to select an optimal set of classes for knowledge "
        "transfer\u201d (Conclusions & Future Work), by scores that need no target net", contrasts_predicts, (),
        title="A transferability score predicts the gain",
        words="A score of the source net on the targets' training images, computed before any target net trains, "
              "orders the source nets by their transfer gain better than chance.",
        how="LEEP, the H-score of the C5 features, and the nearest-class-mean accuracy on them (leave one out), each "
            "on each trial's training images at the largest *k*; Kendall's tau over each draw's selections between "
            "the score and the gain of *n* = 5 over *n* = 0, at the smallest and the largest *k*, above zero. The "
            "scores read the largest *k*'s images even where they predict the smallest *k*'s gain: with one image "
            "per class, the H-score and the leave-one-out accuracy cannot be computed."),
}


@dataclass(frozen=True)
class CountedClaim:
    """A claim that is counted, not estimated: the notebook that measures it, and its texts for the Claims page."""
    notebook: str
    words: str
    title: str = ""
    how: str = ""


COUNTED_CLAIMS = {
    "table1": CountedClaim(NOTEBOOKS["parameters"],
                           "Counted layer by layer, the net's free parameters are those of Table 1."),
    "shares": CountedClaim(NOTEBOOKS["parameters"],
                           "Retraining only F6 leaves under a twentieth of the parameters free; "
                                            "retraining C5 and F6 frees almost all of them; C1-S4 hold a small share."),
    "source": CountedClaim(NOTEBOOKS["source"],
                           "The source net, trained on its own classes, reaches the paper's training "
                           "accuracy. (True by construction: its training stops there. Its held-out "
                           "accuracy says what it learned.)", "Near the paper's accuracy",
                           f"within {_v('source_near', '.0%')} of it."),
}
# Every claim the book judges, by the notebook that judges it (on the paper's split); the Claims page (ktlib.analysis.
# page) has one row for each, numbered in the order of the registries above.
CLAIMS = {**{nb: [k for k, c in COUNTED_CLAIMS.items() if c.notebook == nb]
             for nb in dict.fromkeys(c.notebook for c in COUNTED_CLAIMS.values())},
          NOTEBOOKS["variance"]: list(SWEEP_CLAIMS), NOTEBOOKS["controls"]: list(STUDY_CLAIMS),
          NOTEBOOKS["breadth"]: list(BREADTH_CLAIMS), NOTEBOOKS["partial"]: list(PARTIAL_CLAIMS),
          NOTEBOOKS["selection"]: list(SELECTION_CLAIMS)}
