"""Where the errors are: per-class accuracy, confusions and case pairs, from runs' stored test predictions."""
from __future__ import annotations

import numpy as np
import pandas as pd

from .intervals import curve


def runs_of(keys: pd.DataFrame, predictions: np.ndarray, recipe: str, n: int, k: int) -> np.ndarray:
    """The predictions (runs, images) of every trial of one recipe, n and k."""
    chosen = curve(keys, recipe)
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
