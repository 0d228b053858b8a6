"""The paper's claims as computations: each turns our numbers into a measured summary and a verdict."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from .config import PAPER_SOURCE_ACCURACY
from .intervals import Tables, curve
from .model import LAYERS, PAPER_FREE_PARAMETERS
from .results import KEY, ResultsError, experiment_differences, mean_table, read_results
from .transfer import TUNED

# The paper's derived shares of the 52,256 free parameters, in percent (its text, p. 4).
PAPER_SHARES = {"F6 only trainable": 4.6, "C5 and F6 trainable": 96.7, "C1-S4 (retained when n=4)": 3.3}


@dataclass(frozen=True)
class Threshold:
    """Where a verdict draws its line, and what in the paper's words it stands for."""
    value: float
    meaning: str


# What the paper's words are taken to mean, set before judging; the book glues every line of this table.
THRESHOLDS = {
    "source_near": Threshold(0.01, "'reached 94.38%': within 1 point of it"),
    "rises_rank": Threshold(0.8, "'rises with n': rank correlation of n and mean accuracy at least this "
                                 "(one swap of neighbours allowed); 'shrinks as k grows': rank correlation "
                                 "of k and the gain at most minus this"),
    "clear_gain": Threshold(0.02, "'clearly beats': at least this much better on average, and better in "
                                  "every paired trial"),
    "barely": Threshold(0.5, "'barely grows past k=10': gain from k=10 to k=40 under this share of the "
                             "untransferred net's"),
    "slight": Threshold(0.25, "'slight variance': median trial-to-trial std under this share of the k=1 "
                              "transfer gain"),
    "tolerance": Threshold(0.03, "a re-run reproduces the record when no cell mean moves by more than this"),
    "dead": Threshold(2.0, "a run is dead when it stops with training accuracy at most this many times chance: "
                           "it never began to learn"),
}
SOURCE_NEAR, RISES_RANK, CLEAR_GAIN, BARELY, SLIGHT, TOLERANCE, DEAD = (
    THRESHOLDS[name].value for name in ("source_near", "rises_rank", "clear_gain", "barely", "slight", "tolerance",
                                        "dead"))

HOLDS, PARTLY, FAILS = "holds", "partly", "fails"


@dataclass
class Claim:
    """One claim of the paper: what we measured, in words with numbers, and the verdict."""
    key: str
    measured: str
    verdict: str


def _fmt(values) -> str:
    return ", ".join(f"{v:.3f}" for v in values)


def _paired(rows: pd.DataFrame, n: int, k: int) -> np.ndarray:
    """Per-trial test accuracy of n minus that of n=0 (the trials share their training sets)."""
    p = rows[rows.k == k].pivot_table(index="trial", columns="n", values="test_accuracy")
    return (p[n] - p[0]).to_numpy()


def _rank_correlation(m: pd.Series) -> float:
    """Spearman's correlation of a series with its (sorted) index; NaN when the series is constant."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return float(np.corrcoef(np.arange(len(m)), m.rank().to_numpy())[0, 1])


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


# ---------------------------------------------------------------- the sweep

def best_level(rows: pd.DataFrame, k: int) -> int:
    return int(mean_table(rows)[k].idxmax())


def claim_k1_rises(rows: pd.DataFrame) -> Claim:
    """At the smallest size, accuracy rises with n and peaks with all five levels retained."""
    k = int(rows.k.min())
    m = mean_table(rows)[k]
    rho = _rank_correlation(m)
    best, top = best_level(rows, k), int(m.index.max())
    rises = rho >= RISES_RANK
    verdict = HOLDS if best == top and rises else PARTLY if best == top or rises else FAILS
    return Claim("k1_rises", f"k={k}, n={int(m.index.min())}..{top}: {_fmt(m)}; best n={best}; "
                             f"rank correlation with n {rho:.2f}", verdict)


def claim_best_moves_down(rows: pd.DataFrame) -> Claim:
    """With more samples per class, the best number of retained levels is lower."""
    small, large = int(rows.k.min()), int(rows.k.max())
    if small == large:
        raise ValueError("a second training-set size")
    m = mean_table(rows)
    b_small, b_large = best_level(rows, small), best_level(rows, large)
    top = int(m.index.max())
    return Claim("best_moves_down",
                 f"best n is {b_small} at k={small} and {b_large} at k={large} ({m.loc[b_large, large]:.3f}); "
                 f"n={top} at k={large}: {m.loc[top, large]:.3f}, n=0: {m.loc[0, large]:.3f}",
                 HOLDS if b_large < b_small else FAILS)


def _is_clear(d: np.ndarray) -> bool:
    return bool(d.mean() >= CLEAR_GAIN and (d > 0).all())


def claim_c1_s4(rows: pd.DataFrame, n: int = 4) -> Claim:
    """Retaining C1-S4 (3.3% of the weights) clearly beats training from scratch."""
    sizes = sorted(rows.k.unique())
    parts, clear = [], []
    for k in sizes:
        d = _paired(rows, n, k)
        parts.append(f"k={k}: {d.mean():+.3f} (trials {d.min():+.3f} to {d.max():+.3f})")
        if _is_clear(d):
            clear.append(int(k))
    verdict = HOLDS if len(clear) == len(sizes) else PARTLY if clear else FAILS
    where = f"clear at k in {clear}" if clear else "clear at no k"
    return Claim("c1_s4", f"n={n} minus n=0, mean over paired trials: " + "; ".join(parts) + f"; {where}", verdict)


def saturation(m: pd.DataFrame, n: int = 5, knee: int = 10) -> tuple[float, float]:
    """From k=knee to the largest k: the mean accuracy gained by n, and by n=0."""
    large = m.columns.max()
    return m.loc[n, large] - m.loc[n, knee], m.loc[0, large] - m.loc[0, knee]


def claim_c5_saturates(rows: pd.DataFrame, n: int = 5, knee: int = 10) -> Claim:
    """With C1-C5 retained, accuracy barely grows past about 10 samples per class."""
    m = mean_table(rows)
    large = int(rows.k.max())
    gain, base = saturation(m, n, knee)
    return Claim("c5_saturates", f"from k={knee} to k={large}: n={n} gains {gain:+.3f} "
                                 f"({m.loc[n, knee]:.3f} to {m.loc[n, large]:.3f}), n=0 gains {base:+.3f}",
                 HOLDS if gain < BARELY * base else FAILS)


def claim_variance(rows: pd.DataFrame) -> Claim:
    """The spread over the 5 trials is slight."""
    if rows.trial.nunique() < 2:
        raise ValueError("a second trial")
    std = rows.pivot_table(index="n", columns="k", values="test_accuracy", aggfunc="std")
    spread = rows.groupby(["n", "k"]).test_accuracy.agg(lambda a: a.max() - a.min())
    k = int(rows.k.min())
    m = mean_table(rows)[k]
    gain = m.max() - m.loc[0]
    median = float(np.median(std.to_numpy()))
    return Claim("variance", f"trial std: median {median:.3f}, largest {std.to_numpy().max():.3f}; "
                             f"widest min-max range {spread.max():.3f}; k={k} transfer gain {gain:.3f}",
                 HOLDS if median < SLIGHT * gain else FAILS)


def claim_effort(rows: pd.DataFrame) -> Claim:
    """With small training sets, transferred nets need less training (epochs to the stopping rule)."""
    k = int(rows.k.min())
    e = mean_table(rows, "epochs")[k]
    s = mean_table(rows, "seconds")[k]
    fewer = [int(n) for n in e.index if n > 0 and e[n] < e[0]]
    others = [int(n) for n in e.index if n > 0]
    verdict = HOLDS if fewer == others else PARTLY if fewer else FAILS
    return Claim("effort", f"k={k}, mean epochs for n={int(e.index.min())}..{int(e.index.max())}: "
                           + ", ".join(f"{v:.0f}" for v in e) + "; seconds until stopped: "
                           + ", ".join(f"{v:.2f}" for v in s)
                           + f"; fewer epochs than n=0 for n in {fewer}", verdict)


def gaps(tables: Tables) -> pd.DataFrame:
    """Mean training accuracy minus mean test accuracy, per n and k."""
    return tables.train - tables.test


def claim_gap(rows: pd.DataFrame) -> Claim:
    """Advantage 3: with more levels retained (less capacity), training and test accuracy lie closer."""
    g = mean_table(rows, "train_accuracy") - mean_table(rows)
    top = int(g.index.max())
    narrower = [int(k) for k in g.columns if g.loc[top, k] < g.loc[0, k]]
    verdict = HOLDS if len(narrower) == len(g.columns) else PARTLY if narrower else FAILS
    return Claim("gap", f"training minus test accuracy, n=0 against n={top}: "
                        + "; ".join(f"k={k}: {g.loc[0, k]:.3f} against {g.loc[top, k]:.3f}" for k in g.columns)
                        + f"; narrower at k in {narrower}", verdict)


def best_gains(test: pd.DataFrame) -> pd.Series:
    """Per k: the best n's mean accuracy minus n=0's."""
    return test.max() - test.loc[0]


def claim_gain_shrinks(rows: pd.DataFrame) -> Claim:
    """'Particularly with very small training sets': the best n's gain over n=0 shrinks as k grows."""
    if rows.k.nunique() < 2:
        raise ValueError("a second training-set size")
    gain = best_gains(mean_table(rows))
    rho = _rank_correlation(gain)
    return Claim("gain_shrinks", "best n's gain over n=0 by k: "
                                 + ", ".join(f"k={k}: {g:+.3f}" for k, g in gain.items())
                                 + f"; rank correlation with k {rho:.2f}", HOLDS if rho <= -RISES_RANK else FAILS)


def steps_up(test: pd.DataFrame) -> pd.DataFrame:
    """Per n, the mean accuracy at each k minus that at the next smaller k."""
    return test.diff(axis=1).iloc[:, 1:]


def claim_curve_order(rows: pd.DataFrame) -> Claim:
    """Figure 2's curves lie in the order of k, 40 on top and 1 at the bottom, at every n."""
    if rows.k.nunique() < 2:
        raise ValueError("a second training-set size")
    steps = steps_up(mean_table(rows))
    ordered = [int(n) for n in steps.index if (steps.loc[n] > 0).all()]
    verdict = HOLDS if len(ordered) == len(steps) else PARTLY if ordered else FAILS
    worst = steps.stack().idxmin()
    return Claim("curve_order", f"curves in the order of k at n in {ordered}; the smallest step up is "
                                f"{steps.stack().min():+.3f} (n={worst[0]}, to k={worst[1]})", verdict)


def best_transfer(test: pd.DataFrame) -> pd.Series:
    """Per k, the best mean accuracy over n >= 1."""
    return test.loc[test.index > 0].max()


def claim_fine_tuning(rows: pd.DataFrame) -> Claim:
    """'Retraining the transferred maps would undoubtedly give better results': the best fine-tuned n
    clearly beats the best frozen n, at each k (fine-tuned at the study's chosen rate, transfer.TUNED)."""
    frozen, tuned = curve(rows, "frozen"), curve(rows, TUNED)
    if not (tuned.n > 0).any():
        raise ValueError("fine-tuned runs")
    parts, clear = [], []
    for k in sorted(rows.k.unique()):
        f, t = (mean_table(r)[k].loc[1:].idxmax() for r in (frozen, tuned))
        d = (tuned[(tuned.k == k) & (tuned.n == t)].sort_values("trial").test_accuracy.to_numpy()
             - frozen[(frozen.k == k) & (frozen.n == f)].sort_values("trial").test_accuracy.to_numpy())
        parts.append(f"k={k}: {d.mean():+.3f} (fine-tuned n={t} against frozen n={f})")
        if _is_clear(d):
            clear.append(int(k))
    verdict = HOLDS if len(clear) == len(parts) else PARTLY if clear else FAILS
    return Claim("fine_tuning", "best fine-tuned minus best frozen, over paired trials: " + "; ".join(parts)
                 + (f"; clear at k in {clear}" if clear else "; clear at no k"), verdict)


@dataclass(frozen=True)
class SweepClaim:
    """A claim about the runs: its verdict on one class split, and a key statistic of cell means, which
    has an interval over splits and trials (ktlib.intervals)."""
    judge: Callable[[pd.DataFrame], Claim]
    statistic: Callable[[dict[str, Tables]], float]
    about: str                # the statistic, in words
    frozen_only: bool = True  # judged on the frozen recipe's runs (the paper's), or on every recipe's


def _k1(t: Tables) -> pd.Series:
    return t.test[t.test.columns.min()]


SWEEP_CLAIMS = {
    "k1_rises": SweepClaim(claim_k1_rises, lambda t: _rank_correlation(_k1(t["frozen"])),
                           "rank correlation of n and mean accuracy at the smallest k"),
    "best_moves_down": SweepClaim(claim_best_moves_down, lambda t: float(t["frozen"].test.iloc[:, -1].idxmax()),
                                  "the best n at the largest k"),
    "c1_s4": SweepClaim(claim_c1_s4, lambda t: float((t["frozen"].test.loc[4] - t["frozen"].test.loc[0]).min()),
                        "the smallest gain of n=4 over n=0, over k"),
    "c5_saturates": SweepClaim(claim_c5_saturates,
                               lambda t: float(np.divide(*saturation(t["frozen"].test))),
                               "n=5's gain from k=10 to the largest k, as a share of n=0's"),
    "variance": SweepClaim(claim_variance, lambda t: float(np.median(t["frozen"].std.to_numpy())
                                                           / (_k1(t["frozen"]).max() - _k1(t["frozen"]).loc[0])),
                           "median trial std as a share of the smallest k's gain"),
    "effort": SweepClaim(claim_effort, lambda t: float((t["frozen"].epochs.iloc[1:, 0]
                                                        - t["frozen"].epochs.iloc[0, 0]).max()),
                         "the most epochs any n > 0 needs beyond n=0's, at the smallest k"),
    "gap": SweepClaim(claim_gap, lambda t: float((gaps(t["frozen"]).iloc[-1] - gaps(t["frozen"]).loc[0]).max()),
                      "the largest change in the train-test gap from n=0 to the largest n, over k"),
    "gain_shrinks": SweepClaim(claim_gain_shrinks, lambda t: float(best_gains(t["frozen"].test).iloc[0]
                                                                   - best_gains(t["frozen"].test).iloc[-1]),
                               "the best n's gain at the smallest k minus that at the largest"),
    "curve_order": SweepClaim(claim_curve_order, lambda t: float(steps_up(t["frozen"].test).min().min()),
                              "the smallest step up from one k to the next, over n"),
}
# Claims that need more recipes than the paper's: judged by the study alone.
STUDY_CLAIMS = {
    "fine_tuning": SweepClaim(claim_fine_tuning, lambda t: float((best_transfer(t[TUNED].test)
                                                                  - best_transfer(t["frozen"].test)).min()),
                              "the smallest margin of the best fine-tuned n over the best frozen n, over k",
                              frozen_only=False),
}
# Every claim the book judges, by the notebook that judges it: the Claims page has one row for each.
CLAIMS = {"04_parameters": ["table1", "shares"], "01_source": ["source"], "03_variance": list(SWEEP_CLAIMS),
          "06_controls": list(STUDY_CLAIMS)}


def sweep_claims(rows: pd.DataFrame, which: dict[str, SweepClaim] = SWEEP_CLAIMS) -> list[Claim]:
    """Every claim about the runs of one split; one whose levels, sizes or recipes the runs lack is marked
    as not measured."""
    out = []
    for key, claim in which.items():
        try:
            out.append(claim.judge(curve(rows, "frozen") if claim.frozen_only else rows))
        except KeyError as e:
            out.append(Claim(key, f"not measured: this grid has no n or k = {e.args[0]}", "not measured"))
        except ValueError as e:
            out.append(Claim(key, f"not measured: this grid lacks {e}", "not measured"))
    return out


def verdicts(claims: list[Claim]) -> pd.Series:
    return pd.Series({c.key: c.verdict for c in claims}, name="verdict")


def summary(claims: list[Claim]) -> str:
    """'3 hold, 2 hold in part, 1 fails': how the verdicts fall."""
    words = {HOLDS: ("holds", "hold"), PARTLY: ("holds in part", "hold in part"), FAILS: ("fails", "fail")}
    counts = pd.Series([c.verdict for c in claims]).value_counts()
    parts = [f"{counts[v]} {words[v][int(counts[v] != 1)]}" for v in words if v in counts]
    if "not measured" in counts:
        parts.append(f"{counts['not measured']} not measured")
    return ", ".join(parts)


def glue_all(claims: list[Claim]) -> None:
    """Glue each claim's measured text and verdict for the book's Claims page."""
    from myst_nb import glue

    for c in claims:
        glue(f"{c.key}_measured", c.measured, display=False)
        glue(f"{c.key}_verdict", c.verdict, display=False)


# ---------------------------------------------------------------- a re-run against the published record

def compare_with_record(rows: pd.DataFrame, meta: dict, record: str | os.PathLike, tolerance: float = TOLERANCE,
                        ignore: tuple[str, ...] = ()) -> dict:
    """How far this sweep is from a results file of the same experiment (its cell means, run by run).

    ignore: configuration fields that may differ, such as "engine" to compare the engine with the plain path."""
    record = Path(record)
    if not record.exists():
        return {"comparable": False, "reason": f"no record at {record}"}
    try:
        old_meta, old = read_results(record)
    except ResultsError as e:  # a record in an older format, or damaged: it says nothing about this build
        return {"comparable": False, "reason": str(e)}
    diff = experiment_differences(old_meta, meta, ignore)
    if diff:
        return {"comparable": False, "reason": f"the record is another experiment: {'; '.join(diff)}"}
    both = rows.merge(old, on=KEY, suffixes=("", "_record"))
    if len(both) != len(rows) or len(both) != len(old):
        return {"comparable": False, "reason": f"the record has {len(old)} runs, this sweep {len(rows)}"}
    largest = float((mean_table(rows) - mean_table(old)).abs().max().max())
    moved = (both.test_accuracy - both.test_accuracy_record).abs()
    same = (both.epochs == both.epochs_record) & (moved < 1e-6)  # the file keeps 6 digits; an image is 1e-3
    return {"comparable": True, "largest_change": largest, "tolerance": tolerance, "within": largest <= tolerance,
            "runs": len(both), "identical_runs": int(same.sum()),
            "largest_run_change": float(moved.max())}


def comparison_text(check: dict, other: str) -> str:
    """How this sweep compares with `other`'s record (a `compare_with_record` result), in one or two sentences."""
    if not check["comparable"]:
        return f"This build has no record of {other} to compare with: {check['reason']}."
    return (f"Of the {check['runs']} runs, {check['identical_runs']} end at the same epoch with the same test "
            f"accuracy as {other}'s. The largest change in one run's test accuracy is "
            f"{check['largest_run_change']:.3f}, and in a cell mean {check['largest_change']:.4f}.")
