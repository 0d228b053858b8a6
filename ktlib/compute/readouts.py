"""Readouts that need no training: nearest class mean and 1-nearest-neighbour on the level-n features."""
from __future__ import annotations

import pandas as pd
import torch

from ktlib.compute.stacked import frozen_inputs, spread, torch_threads
from ktlib.recipes import BASELINE, RECIPES


def _flat(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1)


def nearest_mean(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor) -> torch.Tensor:
    """Each test image's class: the one whose training images' mean feature vector is nearest."""
    a, classes = _flat(train_x), train_y.unique()
    means = torch.stack([a[train_y == c].mean(0) for c in classes])
    return classes[torch.cdist(_flat(test_x), means).argmin(1)]


def nearest_neighbour(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor) -> torch.Tensor:
    """Each test image's class: that of its nearest training image."""
    return train_y[torch.cdist(_flat(test_x), _flat(train_x)).argmin(1)]


COLUMNS = ["n", "recipe", "k", "trial", "readout", "test_accuracy"]  # a readouts file's row
READOUTS = {"nearest-mean": nearest_mean, "nearest-neighbour": nearest_neighbour}


def read_recipes(task) -> list[str]:
    """The recipes whose copied layers stay as copied, and so have features to read out: one per net the task
    copies from (fine-tuned runs start from the trained net's, which frozen reads)."""
    return [r for r, recipe in RECIPES.items() if not recipe.trains and recipe.copies in task.copies]


def measure(task) -> tuple[pd.DataFrame, dict[str, list[float]]]:
    """Every readout of the task's grid: for each recipe with features, n, k and trial, each rule's test accuracy
    on level n's features (n=0, the pixels, once, under the baseline recipe); and each recipe's spread per
    level on the validation images (the matched control is chosen on it: ktlib.analysis.controls.chosen_control).
    Forward passes only, on one thread, so the numbers do not depend on the machine."""
    cfg, (test_x, test_y) = task.cfg, task.test
    rows, spreads = [], {}
    with torch_threads(), torch.no_grad():
        for recipe in read_recipes(task):
            net = task.copied_from(recipe)
            test_f = frozen_inputs(net, test_x)
            spreads[recipe] = [spread(f) for f in frozen_inputs(net, task.validation[0])]
            for k in cfg.sizes:
                for trial in range(cfg.trials):
                    s, _ = task.trial_set(k, trial)
                    train_f, labels = frozen_inputs(net, torch.from_numpy(s.x)), torch.from_numpy(s.y)
                    for n in cfg.levels:
                        if n == 0 and recipe != BASELINE:
                            continue
                        for name, rule in READOUTS.items():
                            hits = (rule(train_f[n], labels, test_f[n]) == test_y).sum().item()
                            rows.append({"n": n, "recipe": recipe, "k": k, "trial": trial, "readout": name,
                                         "test_accuracy": hits / len(test_y)})
    return pd.DataFrame(rows, columns=COLUMNS), spreads
