"""Choosing the source classes before anything trains (the paper's last line of future work), and predicting what a
source net will give a target task before a target net trains.

A selection is 20 classes of the pool (every class with the paper's 400 training images), decided from the data alone
(ktlib.record.studies.SELECTION makes one of each kind per draw of the target classes):
- spanning: the classes that best cover the pool, by greedy facility location (the sum, over the pool's classes, of
  the distance to the nearest chosen class, made small) on the classes' mean images, or on their mean C5 features in
  a probe net, one source net trained on the whole pool and committed before the study;
- near / far: the pool's classes whose mean probe features lie nearest to (farthest from) a target class's, the
  mean-feature distance of Cui et al. (2018), in the probe net; near-untwinned: near, without the targets' case twins;
- random: a seeded draw, the distribution the others are read against.
Then three scores of a trained source net on a target task's training images alone, no target net trained: LEEP
(Nguyen et al. 2020), the H-score (Bao et al. 2019) of its C5 features, and the leave-one-out nearest-class-mean
accuracy on them."""
from __future__ import annotations

import numpy as np
import torch

from ktlib.compute import data
from ktlib.compute.model import Net
from ktlib.compute.stacked import frozen_inputs, torch_threads

FEATURE_LEVEL = 5  # the probe's and the scores' features: C5's output, what F6 reads when n=5 layers are retained
CHUNK = 2048  # images per forward pass: the means do not depend on it beyond rounding of float32 sums


def class_means(emnist: data.Emnist, classes: list[int], probe: Net | None = None) -> np.ndarray:
    """(classes, d): the mean of every training image of each class, as the net's input (d = 1,024 pixels), or as the
    probe's C5 output (d = 120), in float64."""
    out = []
    with torch_threads(), torch.no_grad():
        for c in classes:
            images = emnist.train.images[emnist.train.labels == c]
            total = None
            for i in range(0, len(images), CHUNK):
                x = torch.from_numpy(data.to_input(images[i:i + CHUNK]))
                f = (x if probe is None else probe.features(x, FEATURE_LEVEL)).flatten(1).double().sum(0)
                total = f if total is None else total + f
            out.append((total / len(images)).numpy())
    return np.stack(out)


def distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) Euclidean distances between rows."""
    return np.sqrt(np.maximum(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1), 0))


def coverage_cost(d: np.ndarray, chosen: list[int]) -> float:
    """Facility location's cost: over the pool's classes (rows of the pool's distance matrix d), the distance to the
    nearest chosen class, summed."""
    return float(d[:, chosen].min(1).sum())


def spanning(means: np.ndarray, size: int) -> list[int]:
    """Greedy facility location: from none, add the class that lowers coverage_cost most, `size` times (a tie goes
    to the earlier class). Returns positions into `means`."""
    d = distances(means, means)
    chosen, nearest = [], np.full(len(means), d.max())  # before any choice, every class is as far as the farthest
    for _ in range(size):
        costs = np.minimum(nearest[:, None], d).sum(0)
        costs[chosen] = np.inf
        best = int(np.argmin(costs))
        chosen.append(best)
        nearest = np.minimum(nearest, d[:, best])
    return sorted(chosen)


def target_distance(pool_means: np.ndarray, target_means: np.ndarray) -> np.ndarray:
    """Per pool class: the distance from its mean to the nearest target class's mean."""
    return distances(pool_means, target_means).min(1)


def nearest(distance: np.ndarray, size: int, allowed: np.ndarray | None = None, far: bool = False) -> list[int]:
    """The `size` positions with the smallest (far: the largest) distance among those allowed, a tie going to the
    earlier position."""
    allowed = np.ones(len(distance), bool) if allowed is None else allowed
    if allowed.sum() < size:
        raise data.DataError(f"only {int(allowed.sum())} classes are left to choose {size} from")
    order = np.argsort(-distance if far else distance, kind="stable")
    return sorted(int(i) for i in order[allowed[order]][:size])


def twins_in(emnist: data.Emnist, source: list[int], target: list[int]) -> int:
    """How many target classes have their case twin among the source classes."""
    chars = {emnist.mapping[c] for c in source}
    return sum(data.twin(emnist.mapping[t]) in chars for t in target)


# ---------------------------------------------------------------- transferability, before any target net trains

# LEEP needs the source net's probabilities over its classes; it outputs a code per image, trained by squared error to
# +-1 codes, so each source class's probability is taken as a unit-variance Gaussian's around its code:
# softmax over classes of -|output - code|^2 / 2 (fixed before any score was computed).
CODE_VARIANCE = 1.0
PINV_RCOND = 1e-6  # the H-score's pseudo-inverse of the features' covariance: directions under this share are dropped


def leep(outputs: torch.Tensor, codes: torch.Tensor, y: torch.Tensor) -> float:
    """Nguyen et al.'s LEEP: the mean log-likelihood of the target labels under the source net's class probabilities
    theta(x) composed with the empirical P(target | source class) on the same images."""
    theta = torch.softmax(-torch.cdist(outputs.double(), codes.double()) ** 2 / (2 * CODE_VARIANCE), 1).numpy()
    labels = y.numpy()
    joint = np.stack([theta[labels == t].sum(0) for t in range(int(labels.max()) + 1)]) / len(labels)  # (Y, Z)
    conditional = joint / joint.sum(0, keepdims=True)  # P(y | z)
    return float(np.log((theta @ conditional.T)[np.arange(len(labels)), labels]).mean())


def h_score(features: torch.Tensor, y: torch.Tensor) -> float:
    """Bao et al.'s H-score: tr(cov(f)^+ cov(E[f | y])), how much of the features' variance lies between classes."""
    f = features.flatten(1).double().numpy()
    f = f - f.mean(0)
    labels = y.numpy()
    g = np.zeros_like(f)
    for t in np.unique(labels):
        g[labels == t] = f[labels == t].mean(0)
    cov_f, cov_g = f.T @ f / len(f), g.T @ g / len(g)
    return float(np.trace(np.linalg.pinv(cov_f, rcond=PINV_RCOND, hermitian=True) @ cov_g))


def ncm_leave_one_out(features: torch.Tensor, y: torch.Tensor) -> float:
    """The nearest-class-mean accuracy on the training images themselves, each classified by the class means
    without it: NaN when a class has one image (nothing is left to make its mean)."""
    f = features.flatten(1).double()
    classes = int(y.max()) + 1
    counts = torch.bincount(y, minlength=classes).double()
    if counts.min() < 2:
        return float("nan")
    sums = torch.zeros(classes, f.shape[1], dtype=f.dtype).index_add_(0, y, f)
    d = torch.cdist(f, sums / counts[:, None]) ** 2  # (N, classes)
    own = sums[y] - f
    d[torch.arange(len(y)), y] = ((f - own / (counts[y] - 1)[:, None]) ** 2).sum(1)
    return float((d.argmin(1) == y).double().mean())


TRANSFERABILITY = {"LEEP": "leep", "H-score": "h_score", "NCM": "ncm"}  # name on the page -> column


def transferability(source: Net, codes: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """The three scores of one source net (its class codes `codes`) on one target training set (x, y)."""
    features = frozen_inputs(source, x)[FEATURE_LEVEL]  # the input of F6: what a run with n=5 retained reads
    with torch_threads(), torch.no_grad():
        outputs = source(features.reshape(len(features), -1, 1, 1), FEATURE_LEVEL)
    return {"leep": leep(outputs, codes, y), "h_score": h_score(features, y), "ncm": ncm_leave_one_out(features, y)}
