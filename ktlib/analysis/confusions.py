"""Where the errors are: per-class accuracy, confusions and case pairs, from runs' stored test predictions; and how
the class splits drew their classes."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ktlib.analysis import plots
from ktlib.analysis.controls import validated
from ktlib.recipes import BASELINE
from ktlib.record.plans import Plan
from ktlib.record.studies import BASELINE_PART
from ktlib.record.tables import mean_table, recipe_runs


def runs_of(keys: pd.DataFrame, predictions: np.ndarray, recipe: str, n: int, k: int) -> np.ndarray:
    """The predictions (runs, images) of every trial of one recipe, n and k."""
    chosen = recipe_runs(keys, recipe)
    chosen = chosen[(chosen.n == n) & (chosen.k == k)]
    return predictions[chosen.index.to_numpy()]


def confusion(predicted: np.ndarray, labels: np.ndarray, classes: str) -> pd.DataFrame:
    """Rows: the true class; columns: the predicted one; each row the shares of that class's test images,
    pooled over the runs given."""
    c = len(classes)
    counts = np.zeros((c, c))
    for p in predicted:
        np.add.at(counts, (labels, p), 1)
    names = list(classes)
    return pd.DataFrame(counts / counts.sum(1, keepdims=True), index=pd.Index(names, name="true"),
                        columns=pd.Index(names, name="predicted"))


def per_class(predicted: np.ndarray, labels: np.ndarray, classes: str) -> pd.Series:
    """Each class's test accuracy, pooled over the runs given."""
    return pd.Series(np.diag(confusion(predicted, labels, classes)), index=list(classes), name="accuracy")


def case_pairs(classes: str) -> list[tuple[str, str]]:
    """The letters present in both cases, as (upper, lower): EMNIST writes some almost alike."""
    return [(ch, ch.lower()) for ch in classes if ch.isupper() and ch.lower() in classes]


def pairs_text(classes: str) -> str:
    """The case pairs among the classes, as 'C/c, O/o'."""
    return ", ".join(f"{u}/{l}" for u, l in case_pairs(classes))


def partner(classes: str) -> np.ndarray:
    """Per class index: the index of its other case, or -1."""
    out = np.full(len(classes), -1)
    for upper, lower in case_pairs(classes):
        out[classes.index(upper)], out[classes.index(lower)] = classes.index(lower), classes.index(upper)
    return out


def case_summary(predicted: np.ndarray, labels: np.ndarray, classes: str) -> dict:
    """On the test images of case-pair classes, pooled over the runs given: their accuracy, the share of
    their errors that name the other case, and the accuracy over all images when case is ignored (which
    is the accuracy lost to case confusions)."""
    other = partner(classes)
    in_pair = other[labels] >= 0
    right = predicted == labels
    swapped = (predicted == other[labels]) & in_pair
    errors = ~right & in_pair
    return {"pairs": len(case_pairs(classes)), "pair_classes": int((other >= 0).sum()),
            "accuracy": float(right.mean()),
            "pair_accuracy": float(right[:, in_pair].mean()) if in_pair.any() else np.nan,
            "other_accuracy": float(right[:, ~in_pair].mean()),
            "errors_to_other_case": float(swapped.sum() / errors.sum()) if errors.any() else np.nan,
            "lost_to_case": float(swapped.mean())}


def case_table(stored: dict, sizes: list[int], levels: list[int], recipe: str) -> pd.DataFrame:
    """`case_summary` of every split's runs of a recipe, per k and n: stored is a study's predictions by split
    (ktlib.record.plans.Plan.predictions)."""
    return pd.DataFrame([{"split": split, "k": k, "n": n,
                          **case_summary(runs_of(keys, predicted, recipe, n, k), labels, classes)}
                         for split, (keys, predicted, labels, classes) in stored.items()
                         for k in sizes for n in levels])


def lost_to_case(cases: pd.DataFrame) -> pd.DataFrame:
    """The accuracy lost to case confusions, per n (rows) and k (columns), averaged over splits."""
    return cases.pivot_table(index="n", columns="k", values="lost_to_case", aggfunc="mean")


def case_values(cases: pd.DataFrame, classes: str) -> dict:
    """What the book says of case confusions: the paper's split's pairs and their accuracy and swapped errors, the
    range of the accuracy lost to case over n and k, and how many splits have pairs among their targets."""
    paper, lost = cases[cases.split == 0], lost_to_case(cases)
    return {"paper_pairs": pairs_text(classes),
            "paper_swap_share": float(paper.errors_to_other_case.mean()),
            "paper_pair_accuracy": float(paper.pair_accuracy.mean()),
            "paper_other_accuracy": float(paper.other_accuracy.mean()),
            "lost_min": float(lost.min().min()), "lost_max": float(lost.max().max()),
            "splits_with_pairs": int((cases.groupby("split").pairs.first() > 0).sum()),
            "splits_read": cases.split.nunique()}


# ---------------------------------------------------------------- how the splits draw their classes

def class_draws(sources: pd.DataFrame) -> dict:
    """How the splits' classes fall (study.sources' baseline rows): lowercase letters among the target and the
    source classes (fewest, most), and how many target classes two splits share, on average over pairs."""
    lower = lambda chars: sum(ch.islower() for ch in chars)
    targets = [set(t) for t in sources.target]
    shared = [len(a & b) for i, a in enumerate(targets) for b in targets[i + 1:]]
    return {"target_lower": (min(map(lower, sources.target)), max(map(lower, sources.target))),
            "source_lower": (min(map(lower, sources.source)), max(map(lower, sources.source))),
            "shared_targets": float(np.mean(shared)) if shared else np.nan}


# ---------------------------------------------------------------- the errors notebook's sections: (glued values, shown)

@dataclass
class Read:
    """The study's stored test predictions of its baseline, by split, and the paper's split's runs: where its errors
    are read from. `best`: per smallest and largest k, the level with the best mean validation accuracy on the
    paper's split (chosen on the validation images, so that the test errors it shows are not the ones that chose
    it)."""
    plan: Plan
    stored: dict
    runs: pd.DataFrame
    sizes: list[int]

    @classmethod
    def of(cls, plan: Plan) -> "Read":
        stored = plan.stored()
        runs = stored[(stored.part == BASELINE_PART) & (stored.split == 0)]
        return cls(plan, plan.predictions(BASELINE_PART), runs, [min(plan.cfg.sizes), max(plan.cfg.sizes)])

    @property
    def paper(self) -> tuple:
        """(keys, predictions, labels, target classes) of the paper's split."""
        return self.stored[0]

    @property
    def best(self) -> dict[int, int]:
        means = mean_table(validated(self.runs[self.runs.recipe == BASELINE]), "validation_accuracy")
        return {k: int(means[k].idxmax()) for k in self.sizes}

    def panels(self) -> list[tuple[int, int]]:
        """(k, n): no transfer and the best n, at the smallest and the largest k."""
        return [(k, n) for k in self.sizes for n in sorted({0, self.best[k]})]


def accuracy_table(r: Read):
    keys, predicted, labels, classes = r.paper
    table = pd.DataFrame({f"k={k}, n={n}": per_class(runs_of(keys, predicted, BASELINE, n, k), labels, classes)
                          for k, n in r.panels()})
    return table.style.format("{:.2f}").background_gradient(axis=None, cmap="Blues")


def confusion_figure(r: Read):
    keys, predicted, labels, classes = r.paper
    fig = plots.confusions({f"k={k}, n={n}": confusion(runs_of(keys, predicted, BASELINE, n, k), labels, classes)
                            for k, n in r.panels()})
    return {"fig_confusion": fig}, fig


def cases_section(r: Read):
    """Case confusions in every split, k and n; the paper's split's shown."""
    cases = case_table(r.stored, r.sizes, sorted(set(r.runs.n)), BASELINE)
    shown = cases[cases.split == 0].set_index(["k", "n"]).drop(columns="split").style.format("{:.3f}")
    values = {**case_values(cases, r.paper[3]), "case_sizes": " and ".join(map(str, r.sizes))}
    return values, shown, lost_to_case(cases).style.format("{:.3f}")


def classes_section(r: Read) -> dict:
    """How the class splits drew their classes: lowercase letters among targets and sources, and the target classes
    two splits share."""
    fall = class_draws(r.plan.sources().query(f"part == '{BASELINE_PART}'"))
    return {f"{role}_lower_{end}": fall[f"{role}_lower"][i] for role in ("target", "source")
            for end, i in (("min", 0), ("max", 1))} | {"shared_targets": fall["shared_targets"]}
