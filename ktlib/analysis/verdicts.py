"""Judging the claims about the runs: each contrast's interval against its margin, on each split and over splits;
the verdict, the chance that the claim holds under resampling, and the tally of splits with its interval."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ktlib.analysis import claims, contrasts, glue
from ktlib.analysis.intervals import Cube, clopper_pearson, jackknife_t, over_splits
from ktlib.record.studies import BASELINE_PART

BEYOND, SHORT, STRADDLES = "beyond the margin", "short of the margin", "across the margin"


def outcome(low: float, high: float, margin: float, above: bool) -> str:
    """Where an interval lies against a margin, on the side the claim puts the contrast."""
    if (low > margin) if above else (high < margin):
        return BEYOND
    if (high < margin) if above else (low > margin):
        return SHORT
    return STRADDLES


def verdict(outcomes: list[str]) -> str:
    """holds: every deciding contrast's interval lies beyond its margin; partly: some do; fails: every one lies short
    of it; undecided: none lies beyond, and some interval lies across its margin."""
    if not outcomes:
        return contrasts.NOT_MEASURED
    if all(o == BEYOND for o in outcomes):
        return contrasts.HOLDS
    if BEYOND in outcomes:
        return contrasts.PARTLY
    return contrasts.FAILS if all(o == SHORT for o in outcomes) else contrasts.UNDECIDED


def _beyond(values: np.ndarray, contrast: contrasts.Contrast) -> np.ndarray:
    return values > contrast.margin if contrast.above else values < contrast.margin


def measured_contrasts(c: Cube, which: dict[str, claims.SweepClaim]) -> dict[str, list[contrasts.Contrast] | str]:
    """Each claim's contrasts on these runs, or why it cannot be measured on them."""
    out = {}
    for key, claim in which.items():
        try:
            out[key] = claim.contrasts(c)
            for con in out[key]:
                con.per_split(c)  # a cell the grid lacks shows here, before any interval is made
        except (KeyError, ValueError) as e:
            out[key] = f"this grid lacks {e.args[0]}"
    return out


def _row(split, key: str, con: contrasts.Contrast, estimate: float, low: float, high: float, where: str) -> dict:
    """One contrast's line of a judgement table."""
    return {"split": split, "claim": key, "contrast": con.label, "estimate": estimate, "low": low, "high": high,
            "margin": con.margin, "side": "above" if con.above else "below", "decides": con.decides,
            "outcome": where, "fmt": con.fmt}


def _table(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["split", "claim", "contrast", "estimate", "low", "high", "margin", "side",
                                       "decides", "outcome", "fmt"])


def within_splits(c: Cube, which: dict[str, claims.SweepClaim], draws: int, seed: int) -> tuple[pd.DataFrame, ...]:
    """Each claim on each split alone: every contrast with Student's t interval over the split's trials (the
    jackknife's standard error, which for a mean is the usual one); the verdict; and the chance of holding, the
    share of `draws` redraws of each split's trials in which every deciding contrast lies beyond its margin.
    Returns (contrasts, verdicts split x claim, chances split x claim)."""
    S, T = c.shape
    index = pd.Index(c.splits_of_rows(), name="split")
    if T < 2:  # no interval over one trial: nothing is judged (the smoke profile has one)
        return (_table([]), pd.DataFrame(contrasts.NOT_MEASURED, index=index, columns=list(which)),
                pd.DataFrame(np.nan, index=index, columns=list(which)))
    rng = np.random.default_rng(seed)
    redraws = [c.resampled(None, rng.integers(0, T, (S, T))) for _ in range(draws)]
    left_out = [c.resampled(None, np.tile(np.delete(np.arange(T), j), (S, 1))) for j in range(T)]
    built = measured_contrasts(c, which)
    rows, verdicts, chances = [], {}, {}
    for key, found in built.items():
        if isinstance(found, str):
            verdicts[key], chances[key] = [contrasts.NOT_MEASURED] * S, [np.nan] * S
            continue
        held = np.ones((draws, S), bool)
        per_split = []
        for con in found:
            estimate = con.per_split(c)
            low, high = jackknife_t(estimate, np.stack([con.per_split(x) for x in left_out], -1))
            per_split.append([outcome(lo, hi, con.margin, con.above) for lo, hi in zip(low, high)])
            rows += [_row(split, key, con, estimate[s], low[s], high[s], per_split[-1][s])
                     for s, split in enumerate(index)]
            if con.decides:
                held &= np.stack([_beyond(con.per_split(x), con) for x in redraws])
        decide = [o for o, con in zip(per_split, found) if con.decides]
        verdicts[key] = [verdict([o[s] for o in decide]) for s in range(S)]
        chances[key] = list(held.mean(0))
    return _table(rows), pd.DataFrame(verdicts, index=index), pd.DataFrame(chances, index=index)


def across_splits(c: Cube, which: dict[str, claims.SweepClaim], method: str, draws: int,
                  seed: int) -> tuple[pd.DataFrame, pd.Series, pd.Series]:
    """Each claim over all splits: every contrast's mean over splits with an interval by `method`
    (ktlib.analysis.intervals.METHODS); the verdict; and the chance of holding, the share of `draws` bootstrap draws (of
    splits, and of trials too for the nested method) in which every deciding contrast lies beyond its margin.
    Returns (contrasts, verdicts, chances)."""
    S, T = c.shape
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, S, (draws, S))
    nested = ([c.resampled(p, rng.integers(0, T, (S, T))) for p in picks]
              if method == "percentile, splits then trials" else None)
    rows, verdicts, chances = [], {}, {}
    for key, found in measured_contrasts(c, which).items():
        if isinstance(found, str):
            verdicts[key], chances[key] = contrasts.NOT_MEASURED, np.nan
            continue
        held, outcomes = np.ones(draws, bool), []
        for con in found:
            per_split = con.per_split(c)
            estimate = per_split.mean()
            drawn = per_split[picks].mean(1)
            deep = None if nested is None else np.array([con.per_split(x).mean() for x in nested])
            low, high = over_splits(method, estimate, per_split, drawn, deep)
            o = outcome(float(low), float(high), con.margin, con.above)
            rows.append(_row("all", key, con, estimate, float(low), float(high), o))
            if con.decides:
                outcomes.append(o)
                held &= _beyond(drawn if deep is None else deep, con)
        verdicts[key], chances[key] = verdict(outcomes), float(held.mean())
    return _table(rows), pd.Series(verdicts, name="verdict"), pd.Series(chances, name="chance of holding")


def tally(verdicts: pd.Series) -> str:
    """'holds in 3 of 10 splits [0.07, 0.65]; partly in 7': the splits where a claim holds, with the exact
    (Clopper-Pearson) 95% interval of that share, and how the others fell."""
    counts = verdicts.value_counts()
    hits, n = int(counts.get(contrasts.HOLDS, 0)), len(verdicts)
    low, high = clopper_pearson(hits, n)
    others = [f"{word} in {counts[v]}" for v, word in ((contrasts.PARTLY, "partly"), (contrasts.UNDECIDED, "undecided"),
                                                        (contrasts.FAILS, "fails"), (contrasts.NOT_MEASURED, "not measured"))
              if v in counts]
    return (f"holds in {hits} of {n} split{'s' * (n != 1)} [{low:.2f}, {high:.2f}]"
            + (f"; {', '.join(others)}" if others else ""))


def margin_text(r: pd.Series) -> str:
    """'> 0.02': where a contrast's interval must lie; 'reported' for one that does not decide."""
    return f"{'>' if r.side == 'above' else '<'} {r.margin:g}" if r.decides else "reported"


def contrast_text(table: pd.DataFrame) -> pd.Series:
    """Each contrast as 'label: estimate [low, high] (> 0.02)'."""
    return table.apply(lambda r: f"{r.contrast}: {r.estimate:{r.fmt}} [{r.low:{r.fmt}}, {r.high:{r.fmt}}] "
                                 f"({margin_text(r)})", axis=1)


SHOWN = 6  # a claim with more deciding contrasts than this is summarised on the Claims page


def measured(table: pd.DataFrame, claim: str) -> str:
    """A claim's contrasts in one line for the Claims page: the deciding ones, then the reported ones; for a claim
    with many, how their intervals fall and the one nearest its margin."""
    part = table[table.claim == claim].sort_values("decides", ascending=False, kind="stable")
    if not len(part):
        return contrasts.NOT_MEASURED
    deciding = part[part.decides]
    if len(deciding) <= SHOWN:
        return "; ".join(contrast_text(part))
    sign = deciding.side.map({"above": 1, "below": -1})
    nearest = deciding.loc[((deciding.estimate - deciding.margin) * sign).idxmin()]
    counts = deciding.outcome.value_counts()
    return (f"{len(deciding)} contrasts, " + ", ".join(f"{n} {o}" for o, n in counts.items())
            + "; nearest its margin: " + contrast_text(nearest.to_frame().T).iloc[0])


def claim_values(table: pd.DataFrame, verdicts: pd.Series, chances: pd.Series, suffix: str = "") -> dict:
    """Each claim's contrasts, verdict and chance of holding, as the Claims page cites them (<claim><suffix>_measured,
    _verdict and _chance); and the paper's words it tests, as <claim>_paper."""
    words = {**claims.SWEEP_CLAIMS, **claims.STUDY_CLAIMS, **claims.BREADTH_CLAIMS}
    out = {}
    for key, v in verdicts.items():
        if not suffix:  # once per claim: where it is judged first (the paper's split, or the breadth study)
            out[f"{key}_paper"] = words[key].paper
        out |= {f"{key}{suffix}_measured": measured(table, key), f"{key}{suffix}_verdict": v,
                f"{key}{suffix}_chance": "-" if np.isnan(chances[key]) else f"{chances[key]:.2f}"}
    return out


def shown(table: pd.DataFrame) -> pd.DataFrame:
    """The contrasts as a table to read: claim, contrast, estimate [interval], margin, and where the interval lies."""
    if table.empty:
        return pd.DataFrame(columns=["claim", "contrast", "estimate [95% interval]", "margin", "interval"]
                            ).set_index(["claim", "contrast"])
    return pd.DataFrame({"claim": table.claim, "contrast": table.contrast,
                         "estimate [95% interval]": table.apply(lambda r: f"{r.estimate:{r.fmt}} [{r.low:{r.fmt}}, "
                                                                          f"{r.high:{r.fmt}}]", axis=1),
                         "margin": table.apply(margin_text, axis=1),
                         "interval": table.outcome}).set_index(["claim", "contrast"])


# ---------------------------------------------------------------- protocol variants

def variant_changes(cubes: dict[str, Cube], which: dict[str, claims.SweepClaim], draws: int, seed: int) -> pd.DataFrame:
    """Per protocol variant and claim: the verdicts on the variant's splits, next to the baseline's on the same
    splits (the cube of the baseline part, restricted to them), how many splits changed, and which."""
    out = []
    for variant, c in cubes.items():
        if variant == BASELINE_PART:
            continue
        splits = c.splits_of_rows()
        base = cubes[BASELINE_PART]
        base_cube = base.resampled(np.array([base.splits_of_rows().index(s) for s in splits]))
        theirs = within_splits(base_cube, which, draws, seed)[1]
        mine = within_splits(c, which, draws, seed)[1]
        for key in which:
            moved = [int(s) for s in mine.index if mine.loc[s, key] != theirs.loc[s, key]]
            out.append({"variant": variant, "claim": key, "splits": ", ".join(map(str, splits)),
                        "baseline": ", ".join(theirs[key]), "variant verdicts": ", ".join(mine[key]),
                        "changed": len(moved), "changed on": moved})
    return pd.DataFrame(out)


def variants_sentence(changes: pd.DataFrame) -> str:
    """How many (variant, claim) pairs changed a verdict, in a sentence decided by the count."""
    changed = int((changes.changed > 0).sum())
    if not changed:
        return "No verdict changed on any split: these verdicts do not hang on our protocol."
    return (f"Of the {len(changes)} pairs of a variant and a claim, {changed} changed their verdict on at least one "
            f"split: our protocol decides some verdicts, and those verdicts say as much about it as about the paper.")


def variant_values(changes: pd.DataFrame) -> dict:
    """What the book says of each protocol variant: the claims whose verdict it changed on some split, how many
    (claim, split) pairs, and the claims it changed on the paper's split; and the sentence over all variants."""
    out = {}
    for variant, rows in changes.groupby("variant"):
        moved = rows[rows.changed > 0]
        on_paper = [claim for claim, splits in zip(rows.claim, rows["changed on"]) if 0 in splits]
        out[glue.glue_key(variant, "changed")] = ", ".join(moved.claim) if len(moved) else "none"
        out[glue.glue_key(variant, "changed_count")] = int(moved.changed.sum())
        out[glue.glue_key(variant, "changed_split0")] = ", ".join(on_paper) or "none"
    out["variants_sentence"] = variants_sentence(changes)
    return out
