"""The maps of a partly transferred level (ktlib.recipes.partial): how much each map of the source net matters to
the target classes, scored on a trial's training images alone, and which maps a partial recipe keeps.

Every score asks one question: how much worse would the target task go if this map were deleted (its output set to
zero, as Optimal Brain Damage deletes weights)? The target net's own head is untrained when the maps are chosen, so
the loss is read through the source net's layers above the level and a head that needs no training: F6's weights
fitted to the training images' codes by ridge least squares (`head`). Each map's output is multiplied by a gate, 1 as
the source net has it, 0 deleted; the scores are the gates' derivatives and measured changes:
- saliency: the loss change from deleting the map, to second order, after LeCun, Denker & Solla (1990), with the
  gradient term kept (Molchanov et al. 2019), since the copied maps are not at a minimum of the target's loss:
  -dL/dg + (1/2) d2L/dg2 (the Hessian's diagonal);
- taylor: the first-order estimate's square, (dL/dg)^2 (Molchanov et al. 2017; 2019's form, on the gate);
- mi: after Pratt's DBT (1993), the mutual information in bits between the map's output, averaged over its positions
  and thresholded at its median over the images, and the class;
- ablation: the loss change measured by deleting the map, one forward pass each: the oracle the estimates estimate.
A larger score is a map that matters more; a recipe keeps its score's top maps, or with -reversed its bottom ones.
Ties (every map ties on mi when each class has one image: the label then determines any binary feature) are broken
by one random order per trial, which a random chooser's first draw does not share."""
from __future__ import annotations

import numpy as np
import torch

from ktlib.compute.model import TANH_A, TANH_S, Net
from ktlib.compute.stacked import torch_threads
from ktlib.config import Purpose, derive_seed
from ktlib.recipes import PARTIAL_MAPS, SCORES, recipe

RIDGE = 0.01  # the head's ridge, as a share of its features' mean square: set before any partial run (issue 38)
LEVELS = {1: "C1", 3: "C3", 5: "C5"}  # the convolution levels a map can be scored at (C1 for the book's figure)


def head(features: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """F6 as a closed form: weights and biases whose pre-activations fit the codes (A tanh(S a) maps +-1 to +-1, so
    the pre-activation's target is the code itself), by ridge least squares on the features (B, d)."""
    h = torch.cat([features, torch.ones(len(features), 1)], 1).double()
    gram = h.T @ h
    ridge = RIDGE * gram.diagonal()[:-1].mean() * torch.eye(len(gram), dtype=gram.dtype)
    ridge[-1, -1] = 0  # the bias is not shrunk
    w = torch.linalg.solve(gram + ridge, h.T @ targets.double()).float()
    return w[:-1].T, w[-1]


def mutual_information(pooled: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """Per map: the mutual information in bits between its output averaged over positions, above or not above its
    median over the images, and the class. pooled: (B, maps)."""
    above = (pooled > pooled.median(0).values).numpy()
    y = labels.numpy()
    out = []
    for bit in above.T:
        joint = np.zeros((int(y.max()) + 1, 2))
        np.add.at(joint, (y, bit.astype(int)), 1)
        p = joint / joint.sum()
        outer = p.sum(1, keepdims=True) @ p.sum(0, keepdims=True)
        nz = p > 0
        out.append(float((p[nz] * np.log2(p[nz] / outer[nz])).sum()))
    return np.array(out)


def scores(source: Net, level: int, x: torch.Tensor, y: torch.Tensor, codes: torch.Tensor) -> dict[str, np.ndarray]:
    """Each score (SCORES) of each map of level `level` (1, 3 or 5) of the source net, on training images x (B, 1, 32,
    32) with labels y and the target codes: one array per score, one value per map. One thread: the same numbers on
    any machine."""
    layers = source.layers()
    with torch_threads(), torch.no_grad():
        maps = layers[level - 1](source.features(x, level - 1))  # (B, maps, h, w): the level's outputs

    def top(gate: torch.Tensor) -> torch.Tensor:  # C5's output with the level's maps gated
        h = maps * gate.view(1, -1, 1, 1)
        for layer in layers[level:5]:
            h = layer(h)
        return h.flatten(1)

    ones, target = torch.ones(maps.shape[1]), codes[y]
    with torch_threads(), torch.no_grad():
        w, b = head(top(ones), target)

    def loss(gate: torch.Tensor) -> torch.Tensor:
        return (TANH_A * torch.tanh(TANH_S * (top(gate) @ w.T + b)) - target).square().mean()

    with torch_threads():
        grad = torch.func.grad(loss)(ones)
        curvature = torch.func.hessian(loss)(ones).diagonal()
        with torch.no_grad():
            base = loss(ones)
            ablation = torch.stack([loss(torch.where(torch.arange(len(ones)) == j, 0.0, 1.0)) - base
                                    for j in range(len(ones))])
    out = {"saliency": (-grad + curvature / 2).detach().numpy().astype(float),
           "taylor": grad.square().detach().numpy().astype(float),
           "mi": mutual_information(maps.mean((2, 3)), y),
           "ablation": ablation.numpy().astype(float)}
    assert tuple(out) == SCORES
    return out


def choice_seed(trial_seed: int, level: int, draw: int) -> int:
    """The seed of a trial's random order of a level's maps: draw 0 breaks the scores' ties, draw r + 1 is the
    chooser random<r>."""
    return derive_seed(trial_seed, Purpose.MAP_CHOICE, level, draw)


def kept_maps(name: str, level_scores: dict[str, np.ndarray], trial_seed: int) -> torch.Tensor:
    """Which maps of its level the partial recipe `name` keeps (a bool per map), from the trial's scores."""
    r = recipe(name)
    maps = PARTIAL_MAPS[LEVELS[r.level]]
    if r.chooser.startswith("random"):
        order = np.random.default_rng(choice_seed(trial_seed, r.level, int(r.chooser[6:]) + 1)).permutation(maps)
    else:
        score = level_scores[r.chooser.removesuffix("-reversed")]
        tie = np.random.default_rng(choice_seed(trial_seed, r.level, 0)).permutation(maps)
        order = np.lexsort((tie, -score))  # best first; equal scores in the trial's random order
        if r.chooser.endswith("-reversed"):
            order = np.lexsort((tie, score))
    kept = torch.zeros(maps, dtype=torch.bool)
    kept[torch.from_numpy(order[:r.kept].copy())] = True
    return kept
