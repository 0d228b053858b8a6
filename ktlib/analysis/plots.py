"""The book's figures, drawn from results files, training records, the data and the model."""
from __future__ import annotations

import base64
import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.patches import FancyArrowPatch, Rectangle

from ktlib.compute.model import Net, free_parameters, layer_shapes
from ktlib.compute.train import retained
from ktlib.recipes import RECIPES
from ktlib.record.tables import mean_table


def level_labels(levels) -> list[str]:
    """Tick labels for n: how many levels are retained, and which."""
    return [f"{n}\n{retained(n)}" for n in levels]


def _level_axis(ax, levels, ylabel="test accuracy"):
    ax.set_xticks(list(levels), level_labels(levels))
    ax.set_xlabel("retained (frozen) levels n")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)


def accuracy_vs_levels(rows: pd.DataFrame, ax=None):
    """The paper's Figure 2: mean test accuracy against n, one curve per training-set size."""
    ax = ax or plt.subplots(figsize=(7, 4.5))[1]
    means = mean_table(rows)
    for k in sorted(means.columns, reverse=True):  # legend top to bottom, like the curves
        ax.plot(means.index, means[k], marker="o", label=f"{k} per class")
    _level_axis(ax, means.index)
    ax.set_title(f"Mean test accuracy over {rows.trial.nunique()} trials")
    ax.legend(title="training set", fontsize=8)
    return ax.figure


def trial_spread(rows: pd.DataFrame, k: int, ax=None):
    """The paper's Figures 3-5: min, mean and max over the trials at one training-set size."""
    ax = ax or plt.subplots(figsize=(5, 3.6))[1]
    g = rows[rows.k == k].groupby("n").test_accuracy
    lo, mean, hi = g.min(), g.mean(), g.max()
    ax.fill_between(mean.index, lo, hi, alpha=0.2, label="min to max")
    for s, style, name in ((hi, "--", "max"), (mean, "-o", "mean"), (lo, ":", "min")):
        ax.plot(s.index, s, style, label=name, color="C0")
    _level_axis(ax, mean.index)
    ax.set_title(f"{k} sample{'s' if k > 1 else ''} per class, {g.size().iloc[0]} trials")
    ax.legend(fontsize=8)
    return ax.figure


def panel_grid(panels: int, columns: int = 2, width: float = 5.2, height: float = 3.8, **shared):
    """A figure of `panels` axes, `columns` to a row, each large enough to read at page width; the axes left over
    hidden. (figure, the axes in reading order)."""
    rows = -(-panels // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(width * columns, height * rows), squeeze=False, **shared)
    for ax in axes.flat[panels:]:
        ax.axis("off")
    return fig, list(axes.flat[:panels])


def figures3_5(rows: pd.DataFrame, sizes=(1, 10, 40)):
    """Figures 3-5, two to a row, on a shared y axis so that the spreads compare."""
    sizes = [k for k in sizes if k in set(rows.k)] or sorted(set(rows.k))[:3]
    fig, axes = panel_grid(len(sizes), sharey=True)
    for ax, k in zip(axes, sizes):
        trial_spread(rows, k, ax)
        ax.yaxis.set_tick_params(labelleft=True)
    fig.tight_layout()
    return fig


def effort(rows: pd.DataFrame):
    """Training effort against n: epochs to the stopping rule, and seconds until stopped, one curve per size."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, value, label in ((axes[0], "epochs", "epochs (mean over trials)"),
                             (axes[1], "seconds", "seconds until stopped (mean over trials)")):
        m = mean_table(rows, value)
        for k in sorted(m.columns, reverse=True):
            ax.plot(m.index, m[k], marker="o", label=f"{k} per class")
        _level_axis(ax, m.index, label)
        ax.set_yscale("log")
    axes[0].legend(title="training set", fontsize=8)
    fig.tight_layout()
    return fig


def learning_curves(curves: dict[int, pd.DataFrame], common: dict[int, float]):
    """Mean test accuracy against optimiser steps (ktlib.analysis.contrasts.curve_means), one panel per size, one
    curve per n; the dashed line is the common accuracy the effort claim times each level to."""
    fig, axes = plt.subplots(1, len(curves), figsize=(5.5 * len(curves), 4), squeeze=False)
    for ax, (k, table) in zip(axes[0], curves.items()):
        for n in table.columns:
            ax.plot(table.index, table[n], marker=".", label=f"n={n} ({retained(n)})")
        ax.axhline(common[k], color="grey", ls="--", lw=1)
        ax.set(xscale="log", xlabel="optimiser steps (log scale)", ylabel="test accuracy (mean over trials)",
               title=f"{k} image{'s' * (int(k) != 1)} per class")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def source_history(record: dict, goal: float, images: int):
    """Training accuracy and loss of the source net per epoch, with the stopping goal."""
    h = pd.DataFrame(record["history"])
    epoch = np.arange(1, len(h) + 1)
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    a.plot(epoch, h.train_accuracy, marker="o")
    a.axhline(goal, color="C3", ls="--", label=f"paper: {100 * goal:.2f}%")
    a.set(xlabel="epoch", ylabel="training accuracy", title=f"Source net: accuracy on its {images:,} training images")
    a.legend()
    b.plot(epoch, h.train_loss, marker="o", color="C1")
    b.set(xlabel="epoch", ylabel="mean squared error to the codes", title="Training loss", yscale="log")
    for ax in (a, b):
        ax.grid(alpha=0.3)
        ax.set_xticks(epoch)
    fig.tight_layout()
    return fig


def characters(x: np.ndarray, y: np.ndarray, chars: str, per_class: int = 6, columns: int = 4):
    """A grid of example inputs, per_class side by side for each class, as the net sees them."""
    classes = np.unique(y)
    rows = int(np.ceil(len(classes) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(2.3 * columns, 0.85 * rows + 0.3))
    for ax in axes.flat:
        ax.axis("off")
    for ax, c in zip(axes.flat, classes):
        strip = np.concatenate([img[0] for img in x[y == c][:per_class]], axis=1)
        ax.imshow(strip, cmap="gray_r", interpolation="nearest")
        ax.set_title(repr(chars[c]), fontsize=12)
    fig.tight_layout()
    return fig


def architecture(net: Net, retained: int = 4):
    """The net as boxes: each layer's output shape and free parameters; the bottom `retained` shaded."""
    shapes, counts = layer_shapes(net), free_parameters(net)
    fig, ax = plt.subplots(figsize=(11, 3.0))  # its text sized to read at page width, where it is drawn at about 60%
    boxes = [("input", "1@32x32", "")] + [
        (name, f"{s[0]}@{s[1]}x{s[2]}" if s[1] > 1 else f"{s[0]} units", f"{counts[name]:,} params")
        for name, s in shapes.items()]
    w, gap = 1.6, 0.35
    for i, (name, shape, params) in enumerate(boxes):
        x0 = i * (w + gap)
        color = "white" if i == 0 else "#c6dbef" if i <= retained else "#fdd0a2"
        ax.add_patch(Rectangle((x0, 0), w, 1, facecolor=color, edgecolor="black"))
        ax.text(x0 + w / 2, 0.72, name, ha="center", va="center", fontsize=16, weight="bold")
        ax.text(x0 + w / 2, 0.45, shape, ha="center", va="center", fontsize=13)
        ax.text(x0 + w / 2, 0.18, params, ha="center", va="center", fontsize=11)
        if i:
            ax.add_patch(FancyArrowPatch((x0 - gap, 0.5), (x0, 0.5), arrowstyle="->", mutation_scale=12))
    ax.add_patch(Rectangle((0, 0), 0, 0, facecolor="#c6dbef", edgecolor="black",
                           label=f"copied from the source net and frozen (n={retained})"))
    ax.add_patch(Rectangle((0, 0), 0, 0, facecolor="#fdd0a2", edgecolor="black", label="trained on the target task"))
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=2, frameon=False, fontsize=13)
    ax.set_xlim(-0.1, len(boxes) * (w + gap))
    ax.set_ylim(-0.1, 1.1)
    ax.axis("off")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- the study beyond the paper

def recipe_style(recipe: str) -> dict:
    """One colour per recipe, in the order of recipes.RECIPES; a marker per kind: copied from the trained net and
    frozen, trained further, or a control."""
    r = RECIPES[recipe]
    marker = "^" if r.trains else "o" if r.copies == "trained" else "s"
    return dict(color=f"C{list(RECIPES).index(recipe)}", marker=marker)


def figure2_intervals(cells: pd.DataFrame, rows: pd.DataFrame):
    """Figure 2 over many class splits: left, the mean over splits and trials with its 95% interval; right,
    each split's own mean curve, to show the spread across splits."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    frozen = cells.xs("frozen", level="recipe")
    sizes = sorted(frozen.index.get_level_values("k").unique(), reverse=True)
    for i, k in enumerate(sizes):
        c = frozen.xs(k, level="k")
        left.errorbar(c.index, c.estimate, yerr=[c.estimate - c.low, c.high - c.estimate], marker="o",
                      capsize=3, label=f"{k} per class", color=f"C{i}")
        per_split = rows[rows.k == k].groupby(["split", "n"]).test_accuracy.mean().unstack("n")
        for _, curve in per_split.iterrows():
            right.plot(curve.index, curve.to_numpy(), color=f"C{i}", alpha=0.45, lw=1)
    splits = rows.split.nunique()
    left.set_title(f"Mean over {splits} class splits x {rows.trial.nunique()} trials, 95% intervals")
    right.set_title(f"Each class split's mean over its trials ({splits} lines per size)")
    for ax in (left, right):
        _level_axis(ax, frozen.index.get_level_values("n").unique())
    left.legend(title="training set", fontsize=8)
    fig.tight_layout()
    return fig


def recipe_panels(cells: pd.DataFrame):
    """The recipes against n, one panel per training-set size, two to a row, each mean with its 95% interval; the
    legend in a panel of its own."""
    sizes = sorted(cells.index.get_level_values("k").unique())
    fig, axes = panel_grid(len(sizes) + 1, width=5.6, height=3.9)
    for ax, k in zip(axes, sizes):
        for recipe in [r for r in RECIPES if r in cells.index.get_level_values("recipe")]:
            style = recipe_style(recipe)
            c = cells.xs((recipe, k), level=("recipe", "k"))
            ax.fill_between(c.index, c.low, c.high, alpha=0.2, color=style["color"], lw=0)
            ax.plot(c.index, c.estimate, label=recipe, ms=4, **style)
        ax.set_xticks(list(c.index))
        ax.set_xlabel("copied levels n")
        ax.set_ylabel("test accuracy")
        ax.set_title(f"{k} per class")
        ax.grid(alpha=0.3)
    axes[-1].axis("off")
    axes[-1].legend(*axes[0].get_legend_handles_labels(), loc="center", title="recipe")
    fig.tight_layout()
    return fig


def breadth_grid(gains: pd.DataFrame):
    """The equal-length grid: the best gain over n=0 against the source classes (log scale), one panel per k, one line
    per equal-total diagonal (the cells' `diagonal`: doublings of the smallest total), each point with its 95%
    interval over the nesting orders and labelled with its images per class."""
    sizes = sorted(gains.k.unique())
    fig, axes = plt.subplots(1, len(sizes), figsize=(5.2 * len(sizes), 4.0), squeeze=False)
    for ax, k in zip(axes[0], sizes):
        for d, t in gains[gains.k == k].groupby("diagonal"):
            x = np.array([cell[0] for cell in t.source])
            ax.errorbar(x, t.estimate, yerr=[t.estimate - t.low, t.high - t.estimate], marker="o", capsize=3,
                        color=f"C{d}", label=f"{min(m * p for m, p in t.source):,} images in all")
            for xi, yi, (_, per) in zip(x, t.estimate, t.source):
                ax.annotate(f"x{per}", (xi, yi), fontsize=7, xytext=(4, 3), textcoords="offset points")
        ticks = sorted({cell[0] for cell in gains.source})
        ax.set_xscale("log", base=2)
        ax.set_xticks(ticks, [str(v) for v in ticks])
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xlabel("source classes (labels: images per class)")
        ax.set_ylabel("best gain over n=0 (test accuracy)")
        ax.set_title(f"k = {k}", fontsize=10)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8, title="equal total images", title_fontsize=8)
    fig.tight_layout()
    return fig


SCORE_COLOURS = {"saliency": "C0", "taylor": "C1", "mi": "C2", "ablation": "C3"}


def partial_curves(accuracy: pd.DataFrame, band: pd.DataFrame, level: str, maps: int):
    """A partly transferred level: mean test accuracy against the kept maps m, one panel per k; each score (solid)
    and its reversal (dashed), and the random draws' mean with the band from their lowest to their highest mean. m=0
    and m = every map are the nets with the level below, and the level, retained whole."""
    sizes = sorted(accuracy.index.get_level_values("k").unique())
    fig, axes = panel_grid(len(sizes), columns=len(sizes), width=4.6, height=3.6)
    for ax, k in zip(axes, sizes):
        t = accuracy.loc[k]
        for score, colour in SCORE_COLOURS.items():
            ax.plot(t.index, t[score], marker="o", color=colour, label=score)
            ax.plot(t.index, t[f"{score}-reversed"], ls="--", color=colour, alpha=0.7, label=f"{score}, reversed")
        b = band.loc[level].xs(k, level="k")
        inner = [m for m in t.index if m in b.index]
        ax.fill_between(inner, b.loc[inner, "lowest draw"], b.loc[inner, "highest draw"], color="grey", alpha=0.3,
                        label="random: lowest to highest draw")
        ax.plot(t.index, t["random (mean of draws)"], color="black", lw=1, label="random: mean of draws")
        ax.set_xticks(list(t.index))
        ax.set_xlabel(f"kept maps m of {level}'s {maps}")
        ax.set_ylabel("test accuracy")
        ax.set_title(f"k = {k}", fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


SELECTION_COLOURS = {"spanning-pixels": "C0", "spanning-probe": "C1", "near": "C3", "near-untwinned": "C2",
                     "far": "C4"}


def selection_grid(means: dict[str, np.ndarray], twins: dict[str, list[bool]], chars: dict[str, str],
                   targets: tuple[np.ndarray, str]):
    """Each selection's source classes as their mean images (one row per selection, the draw's targets on the last
    row), a source class that is a target's case twin framed in red."""
    rows = [*means, "targets"]
    columns = max(len(v) for v in [*means.values(), targets[0]])
    fig, axes = plt.subplots(len(rows), columns, figsize=(0.55 * columns + 1.6, 0.62 * len(rows)), squeeze=False)
    for i, name in enumerate(rows):
        images, labels = (targets[0], targets[1]) if name == "targets" else (means[name], chars[name])
        for j, ax in enumerate(axes[i]):
            ax.set_xticks([])
            ax.set_yticks([])
            for side in ax.spines.values():
                side.set_visible(False)
            if j >= len(images):
                continue
            ax.imshow(images[j], cmap="gray_r", interpolation="nearest")
            ax.set_xlabel(labels[j], fontsize=7, labelpad=1)
            if name != "targets" and twins[name][j]:
                for side in ax.spines.values():
                    side.set_visible(True)
                    side.set_color("red")
                    side.set_linewidth(1.5)
        axes[i][0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
    fig.tight_layout(pad=0.3, w_pad=0.1, h_pad=0.2)
    return fig


def selection_curves(accuracy: pd.DataFrame):
    """Mean test accuracy against n, one panel per k: each chosen selection in colour, each random selection in grey
    (accuracy: rows (selection, n), columns k)."""
    sizes = list(accuracy.columns)
    fig, axes = panel_grid(len(sizes), columns=len(sizes), width=4.6, height=3.6)
    for ax, k in zip(axes, sizes):
        for name, t in accuracy[k].groupby(level="selection", sort=False):
            levels = t.index.get_level_values("n")
            if name in SELECTION_COLOURS:
                ax.plot(levels, t.to_numpy(), marker="o", color=SELECTION_COLOURS[name], label=name, zorder=3)
            else:
                ax.plot(levels, t.to_numpy(), color="grey", alpha=0.5, lw=1,
                        label="random selections" if name.endswith("0") else None)
        _level_axis(ax, sorted(set(accuracy.index.get_level_values("n"))))
        ax.set_title(f"k = {k}", fontsize=10)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def selection_standing(gains: dict[int, dict[str, np.ndarray]], randoms: list[str]):
    """Where each chosen selection falls among the random ones: per k (a panel), one row per draw, the random
    selections' best gains as grey dots and each chosen selection's as its colour's mark."""
    fig, axes = plt.subplots(1, len(gains), figsize=(5.0 * len(gains), 3.0), squeeze=False)
    for ax, (k, by) in zip(axes[0], gains.items()):
        draws = len(next(iter(by.values())))
        for d in range(draws):
            ax.scatter([by[s][d] for s in randoms], [d] * len(randoms), color="grey", alpha=0.6, s=18,
                       label="random selections" if d == 0 else None)
            for name, colour in SELECTION_COLOURS.items():
                if name in by:
                    ax.scatter(by[name][d], d + 0.15, marker="v", color=colour, s=40, label=name if d == 0 else None)
        ax.set_yticks(range(draws), [f"draw {d}" for d in range(draws)])
        ax.set_xlabel("best gain over n=0 (test accuracy)")
        ax.set_title(f"k = {k}", fontsize=10)
        ax.grid(alpha=0.3, axis="x")
    axes[0][0].legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


def score_scatter(table: pd.DataFrame, scores: dict[str, str], gains: dict[str, str]):
    """Each source net's transferability score against its measured gain, one panel per score and gain (rows: gains,
    columns: scores), a colour per family of source nets."""
    fig, axes = plt.subplots(len(gains), len(scores), figsize=(4.0 * len(scores), 3.3 * len(gains)), squeeze=False)
    for i, (gain, gain_label) in enumerate(gains.items()):
        for j, (score, score_label) in enumerate(scores.items()):
            ax = axes[i][j]
            for f, (family, t) in enumerate(table.groupby("family", sort=False)):
                ax.scatter(t[score], t[gain], s=14, alpha=0.7, color=f"C{f}", label=family)
            for name, colour in SELECTION_COLOURS.items():  # the chosen selections, marked among their family
                t = table[table.get("selection", "") == name]
                ax.scatter(t[score], t[gain], s=60, facecolors="none", edgecolors=colour, lw=1.5,
                           label=name if (i, j) == (0, 0) else None)
            ax.set_xlabel(score_label)
            ax.set_ylabel(gain_label)
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def ranked_maps(images: dict[str, tuple], kept: dict[str, int]):
    """The source net's maps at C1 and C3 as images (each map's output on one training image), one row per score,
    in that score's order, best first; the maps a partial recipe of `kept[level]` maps would keep framed in red
    (none for a level without partial runs)."""
    rows = [(level, score) for level in images for score in images[level][1]]
    columns = max(len(shown) for shown, _ in images.values())
    fig, axes = plt.subplots(len(rows), columns, figsize=(0.75 * columns, 0.85 * len(rows)), squeeze=False)
    for i, (level, score) in enumerate(rows):
        shown, order = images[level]
        for j, ax in enumerate(axes[i]):
            ax.set_xticks([])
            ax.set_yticks([])
            if j >= len(shown):
                ax.axis("off")
                continue
            ax.imshow(shown[order[score][j]].numpy(), cmap="gray")
            ax.set_xlabel(str(int(order[score][j])), fontsize=6, labelpad=1)
            if j < kept.get(level, 0):
                for side in ax.spines.values():
                    side.set_color("red")
                    side.set_linewidth(2)
        axes[i][0].set_ylabel(f"{level}\n{score}", fontsize=7, rotation=0, ha="right", va="center")
    fig.tight_layout(pad=0.3)
    return fig


def confusion(matrix: pd.DataFrame, title: str, ax=None):
    """A confusion matrix as shares of each true class (rows), the class labels on both axes."""
    ax = ax or plt.subplots(figsize=(5, 5))[1]
    ax.imshow(matrix.to_numpy(), cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(matrix.columns)), matrix.columns, fontsize=7)
    ax.set_yticks(range(len(matrix.index)), matrix.index, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    return ax.figure


def confusions(matrices: dict[str, pd.DataFrame]):
    """Confusion matrices by title, two to a row: each large enough to read its class labels at page width."""
    fig, axes = panel_grid(len(matrices), width=4.6, height=4.6)
    for ax, (title, matrix) in zip(axes, matrices.items()):
        confusion(matrix, title, ax)
    fig.tight_layout()
    return fig


def glued_png(notebook: str | Path, name: str) -> bytes:
    """The PNG an executed notebook glued under `name`, as bytes (the README's figure is one)."""
    cells = json.loads(Path(notebook).read_text(encoding="utf-8"))["cells"]
    for out in (o for c in cells for o in c.get("outputs", [])):
        record = out.get("metadata", {}).get("scrapbook", {})
        if record.get("name") == name:
            return base64.b64decode(out["data"][record["mime_prefix"] + "image/png"])
    raise KeyError(f"{notebook} glues no figure named {name!r}")
