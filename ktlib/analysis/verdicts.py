"""Judging the claims about the runs: each contrast's interval against its margin, on each split and over splits
(where the intervals also cover a new draw of the classes); the verdict, and the tally of splits."""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from ktlib.analysis import claims, contrasts, glue
from ktlib.analysis.intervals import (
    CROSSED,
    Cube,
    clopper_pearson,
    crossed_interval,
    jackknife_t,
    over_splits,
)
from ktlib.config import LAYERS
from ktlib.record.studies import BASELINE_PART, RESEEDED_PART

BEYOND, SHORT, STRADDLES = "beyond the margin", "short of the margin", "across the margin"


def outcome(low: float, high: float, margin: float, above: bool) -> str:
    """Where an interval lies against a margin, on the side the claim puts the contrast."""
    if (low > margin) if above else (high < margin):
        return BEYOND
    if (high < margin) if above else (low > margin):
        return SHORT
    return STRADDLES


def verdict(outcomes: list[str]) -> str:
    """holds: every deciding contrast's interval lies beyond its margin; partly: some do, and the others lie short of
    theirs (PARTLY_SHORT, if any does) or only across them (PARTLY_ACROSS); fails: every one lies short; undecided:
    none lies beyond, and some lies across its margin."""
    if not outcomes:
        return contrasts.NOT_MEASURED
    if all(o == BEYOND for o in outcomes):
        return contrasts.HOLDS
    if BEYOND in outcomes:
        return contrasts.PARTLY_SHORT if SHORT in outcomes else contrasts.PARTLY_ACROSS
    return contrasts.FAILS if all(o == SHORT for o in outcomes) else contrasts.UNDECIDED


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


def _row(split, key: str, con: contrasts.Contrast, estimate: float, low: float, high: float, where: str,
         by_class: bool | None = None) -> dict:
    """One contrast's line of a judgement table; by_class: whether a new draw of the classes moves it (CROSSED)."""
    return {"split": split, "claim": key, "contrast": con.label, "estimate": estimate, "low": low, "high": high,
            "margin": con.margin, "side": "above" if con.above else "below", "decides": con.decides,
            "outcome": where, "fmt": con.fmt, "by_class": by_class}


def _table(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["split", "claim", "contrast", "estimate", "low", "high", "margin", "side",
                                       "decides", "outcome", "fmt", "by_class"])


def within_splits(c: Cube, which: dict[str, claims.SweepClaim]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Each claim on each split alone: every contrast with Student's t interval over the split's trials (the
    jackknife's standard error, which for a mean is the usual one), and the verdict. Returns (contrasts, verdicts
    split x claim)."""
    S, T = c.shape
    index = pd.Index(c.splits_of_rows(), name="split")
    if T < 2:  # no interval over one trial: nothing is judged (the smoke profile has one)
        return _table([]), pd.DataFrame(contrasts.NOT_MEASURED, index=index, columns=list(which))
    left_out = [c.resampled(None, np.tile(np.delete(np.arange(T), j), (S, 1))) for j in range(T)]
    rows, verdicts = [], {}
    for key, found in measured_contrasts(c, which).items():
        if isinstance(found, str):
            verdicts[key] = [contrasts.NOT_MEASURED] * S
            continue
        per_split = []
        for con in found:
            estimate = con.per_split(c)
            low, high = jackknife_t(estimate, np.stack([con.per_split(x) for x in left_out], -1))
            per_split.append([outcome(lo, hi, con.margin, con.above) for lo, hi in zip(low, high)])
            rows += [_row(split, key, con, estimate[s], low[s], high[s], per_split[-1][s])
                     for s, split in enumerate(index)]
        decide = [o for o, con in zip(per_split, found) if con.decides]
        verdicts[key] = [verdict([o[s] for o in decide]) for s in range(S)]
    return _table(rows), pd.DataFrame(verdicts, index=index)


def across_splits(c: Cube, which: dict[str, claims.SweepClaim], method: str, draws: int,
                  seed: int) -> tuple[pd.DataFrame, pd.Series]:
    """Each claim over all splits: every contrast's mean over splits with an interval by `method`: CROSSED, which also
    draws the classes again (the cube needs its classes: Cube.with_classes; only test accuracy is read per class, so
    a contrast that sets it against training accuracy or a readout has only its test part drawn again), or
    one of ktlib.analysis.intervals.METHODS, over the splits alone; and the verdict. Returns (contrasts, verdicts)."""
    S, T = c.shape
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, S, (draws, S))
    deep = plain = None
    if method == CROSSED:
        deep = c.crossed(picks, rng)
        plain = c.resampled(picks[0])  # the first draw's splits without its class weighting
    elif method == "percentile, splits then trials":
        deep = [c.resampled(p, rng.integers(0, T, (S, T))) for p in picks]
    rows, verdicts = [], {}
    for key, found in measured_contrasts(c, which).items():
        if isinstance(found, str):
            verdicts[key] = contrasts.NOT_MEASURED
            continue
        outcomes = []
        for con in found:
            per_split = con.per_split(c)
            estimate = per_split.mean()
            drawn = None if deep is None else np.array([np.nanmean(con.per_split(x)) for x in deep])
            if method == CROSSED:
                low, high = crossed_interval(estimate, drawn, S)
            else:
                low, high = over_splits(method, estimate, per_split, per_split[picks].mean(1), drawn)
            o = outcome(float(low), float(high), con.margin, con.above)
            moved = None if method != CROSSED else not np.allclose(con.per_split(deep[0]), con.per_split(plain),
                                                                   equal_nan=True)  # does the class weighting move it?
            rows.append(_row("all", key, con, estimate, float(low), float(high), o, moved))
            if con.decides:
                outcomes.append(o)
        verdicts[key] = verdict(outcomes)
    return _table(rows), pd.Series(verdicts, name="verdict")


def tally(verdicts: pd.Series, independent: bool = True) -> str:
    """'holds in 3 of 10 splits [0.07, 0.65]; partly, short elsewhere in 7': how the claim fell split by split, with
    the exact (Clopper-Pearson) interval of the share that holds. That interval takes the splits for independent
    draws; splits that share target classes are not (independent=False drops it, and the reader is told why)."""
    counts = verdicts.value_counts()
    hits, n = int(counts.get(contrasts.HOLDS, 0)), len(verdicts)
    others = [f"{v} in {counts[v]}" for v in (*contrasts.PARTLY, contrasts.UNDECIDED, contrasts.FAILS,
                                              contrasts.NOT_MEASURED) if v in counts]
    head = f"holds in {hits} of {n} split{'s' * (n != 1)}"
    if independent:
        low, high = clopper_pearson(hits, n)
        head += f" [{low:.2f}, {high:.2f}]"
    return head + (f"; {', '.join(others)}" if others else "")


def margin_text(r: pd.Series) -> str:
    """'> 0.02': where a contrast's interval must lie; 'reported' for one that does not decide."""
    return f"{'>' if r.side == 'above' else '<'} {r.margin:g}" if r.decides else "reported"


def contrast_text(table: pd.DataFrame) -> pd.Series:
    """Each contrast as 'label: estimate [low, high] (> 0.02)'."""
    if table.empty:  # apply on no rows gives a frame, not a column of text
        return pd.Series(index=table.index, dtype=str)
    return table.apply(lambda r: f"{r.contrast}: {r.estimate:{r.fmt}} [{r.low:{r.fmt}}, {r.high:{r.fmt}}] "
                                 f"({margin_text(r)})", axis=1)


SHOWN = 6  # a claim with more deciding contrasts than this is summarised on the Claims page
ORDER = {SHORT: 0, STRADDLES: 1, BEYOND: 2}  # the contrasts that keep a claim from holding first


def measured(table: pd.DataFrame, claim: str) -> str:
    """A claim's contrasts in one line for the Claims page: the deciding ones, those short of their margin first,
    then those across it, then those beyond; then the reported ones. For a claim with many, every one that does not
    lie beyond its margin, and how many do."""
    part = table[table.claim == claim]
    if not len(part):
        return contrasts.NOT_MEASURED
    deciding = part[part.decides].sort_values("outcome", key=lambda o: o.map(ORDER), kind="stable")
    if len(deciding) <= SHOWN:
        return "; ".join(contrast_text(pd.concat([deciding, part[~part.decides]])))
    failing = deciding[deciding.outcome != BEYOND]
    head = f"{len(deciding) - len(failing)} of {len(deciding)} contrasts beyond their margins"
    if not len(failing):
        sign = deciding.side.map({"above": 1, "below": -1})
        nearest = deciding.loc[((deciding.estimate - deciding.margin) * sign).idxmin()]
        return f"{head}; nearest its margin: " + contrast_text(nearest.to_frame().T).iloc[0]
    return f"{head}; the others: " + "; ".join(contrast_text(failing))


def claim_values(table: pd.DataFrame, verdicts: pd.Series, suffix: str = "") -> dict:
    """Each claim's contrasts and verdict, as the Claims page cites them (<claim><suffix>_measured and _verdict); and
    the paper's words it tests, as <claim>_paper."""
    words = {**claims.SWEEP_CLAIMS, **claims.STUDY_CLAIMS, **claims.BREADTH_CLAIMS, **claims.PARTIAL_CLAIMS,
             **claims.SELECTION_CLAIMS}
    out = {}
    for key, v in verdicts.items():
        if not suffix:  # once per claim: where it is judged first (the paper's split, or the breadth study)
            out[f"{key}_paper"] = words[key].paper
        out |= {f"{key}{suffix}_measured": measured(table, key), f"{key}{suffix}_verdict": v}
    return out


STEP_WORDS = {BEYOND: "helps", SHORT: "costs", STRADDLES: "neither, within the interval"}


def level_steps(c: Cube, over: tuple[str, int, int] | None = None) -> pd.DataFrame:
    """Each retained level's own step, n minus n-1 at every k (contrasts.contrasts_level_steps), with its interval
    over trials on each split (or, given `over` = (method, draws, seed), over the splits as across_splits makes it),
    and whether the level helps (the interval above zero), costs (below) or neither: a table to read, deciding no
    verdict."""
    which = {"level steps": claims.SweepClaim("", contrasts.contrasts_level_steps)}
    table = within_splits(c, which)[0] if over is None else across_splits(c, which, *over)[0]
    return pd.DataFrame({"split": table.split, "step": table.contrast,
                         "estimate [95% interval]": contrast_text(table).str.split(": ").str[1].str.replace(
                             " (reported)", ""), "the level": table.outcome.map(STEP_WORDS)})


def steps_sentence(steps: pd.DataFrame) -> str:
    """`level_steps`' table in words, size by size: which retained levels help, which cost, and which cannot be told
    from zero, by the layer each adds ('at k=1, C3, S4 and C5 each help, C1 and S2 cannot be told from zero; ...').
    With no step measured (one trial per cell, as in the smoke profile): 'not measured'."""
    if steps.empty:
        return contrasts.NOT_MEASURED
    parts = []
    found = steps.step.str.extract(r"n=(\d+) - n=\d+ at k=(\d+)").astype(int).set_axis(["n", "k"], axis=1)
    for k, rows in steps.assign(**found).groupby("k", sort=False):
        said = []
        for word, one, many in ((STEP_WORDS[BEYOND], "helps", "each help"), (STEP_WORDS[SHORT], "costs", "each cost"),
                                (STEP_WORDS[STRADDLES], "cannot be told from zero", "cannot be told from zero")):
            names = [LAYERS[n - 1] for n in rows[rows["the level"] == word].n]
            if names:
                listed = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
                said.append(f"{listed} {one if len(names) == 1 else many}")
        parts.append(f"at k={k}, {', '.join(said)}")
    return "; ".join(parts)


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

def variant_changes(cubes: dict[str, Cube], which: dict[str, claims.SweepClaim]) -> pd.DataFrame:
    """Per protocol variant (and the reseeded baseline, RESEEDED_PART) and claim: the verdicts on the variant's
    splits, next to the baseline's on the same splits (the cube of the baseline part, restricted to them), how many
    splits changed, and which."""
    out = []
    base = cubes[BASELINE_PART]
    for variant, c in cubes.items():
        if variant == BASELINE_PART:
            continue
        splits = c.splits_of_rows()
        base_cube = base.resampled(np.array([base.splits_of_rows().index(s) for s in splits]))
        theirs, mine = within_splits(base_cube, which)[1], within_splits(c, which)[1]
        for key in which:
            moved = [int(s) for s in mine.index if mine.loc[s, key] != theirs.loc[s, key]]
            out.append({"variant": variant, "claim": key, "splits": ", ".join(map(str, splits)),
                        "baseline": ", ".join(theirs[key]), "variant verdicts": ", ".join(mine[key]),
                        "changed": len(moved), "changed on": moved})
    return pd.DataFrame(out)


CHANCE_P = 0.05  # a variant moves more verdicts than chance when Fisher's exact test, one-sided, gives p below this


def measured_both(changes: pd.DataFrame) -> pd.DataFrame:
    """The (variant, claim) rows whose verdicts were measured on both sides, baseline and variant."""
    return changes[~(changes.baseline + changes["variant verdicts"]).str.contains(contrasts.NOT_MEASURED)]


def flip_rates(changes: pd.DataFrame) -> pd.DataFrame:
    """Per variant: how many of its (claim, split) verdicts differ from the baseline's, of how many (those measured on
    both sides), the share, and its exact interval (Clopper-Pearson); and, against the reseeded baseline's share (the
    rate at which verdicts move by chance), Fisher's exact test that the variant's is higher (one-sided p). Both
    take the pairs for independent, which claims judged on the same runs are not."""
    out = {}
    for variant, rows in changes.groupby("variant", sort=False):
        judged = measured_both(rows)
        pairs = int(judged.splits.str.split(", ").map(len).sum())
        moved = int(judged.changed.sum())
        low, high = clopper_pearson(moved, pairs)
        out[variant] = {"moved": moved, "pairs": pairs, "rate": moved / pairs if pairs else np.nan, "low": low,
                        "high": high}
    table = pd.DataFrame(out).T.rename_axis("variant")
    chance = table.loc[RESEEDED_PART]
    table["p against chance"] = [np.nan if v == RESEEDED_PART else stats.fisher_exact(
        [[r.moved, r.pairs - r.moved], [chance.moved, chance.pairs - chance.moved]], alternative="greater").pvalue
        for v, r in table.iterrows()]
    return table


def variants_sentence(changes: pd.DataFrame) -> str:
    """How the variants' moves compare with the reseeded baseline's, in a sentence decided by the counts."""
    rates = flip_rates(changes)
    chance = rates.loc[RESEEDED_PART]
    above = [f"{v} (p = {r['p against chance']:.2g})" for v, r in rates.drop(RESEEDED_PART).iterrows()
             if r["p against chance"] < CHANCE_P]
    base = (f"The same protocol with other seeds moved {int(chance.moved)} of {int(chance.pairs)} verdicts "
            f"({chance.rate:.0%} [{chance.low:.0%}, {chance.high:.0%}]): that many move by chance alone. These "
            f"intervals and the test below take the verdicts for independent draws; verdicts judged on the same "
            f"split's runs are not, so the intervals are too narrow, and the test finds a difference more readily "
            f"than it should.")
    if not above:
        pooled = (f" No variant moved more than that by Fisher's exact test (one-sided, p < {CHANCE_P}): pooled over "
                  f"the claims, these verdicts do not show that our protocol decides them.")
    else:
        pooled = (f" {', '.join(above)} moved more (Fisher's exact test, one-sided): there the protocol decides "
                  f"verdicts.")
    every = always_moved(changes)
    if not every:
        return base + pooled
    return base + pooled + (" Claim by claim, a pooled count can hide a choice that moves one claim everywhere: " +
                            "; ".join(f"{v} moved {', '.join(titles)} on every split" for v, titles in every.items())
                            + ", the reseeded baseline on fewer, so on these splits that choice decides them.")


def always_moved(changes: pd.DataFrame) -> dict[str, list[str]]:
    """Per variant, the claims it moved on every split judged on both sides, where the reseeded baseline moved
    them on fewer splits: what a count pooled over the claims hides. Descriptive; no test."""
    judged = measured_both(changes)
    chance = judged[judged.variant == RESEEDED_PART].set_index("claim").changed
    out = {}
    for variant, rows in judged[judged.variant != RESEEDED_PART].groupby("variant", sort=False):
        every = rows[(rows.changed == rows.splits.str.split(", ").map(len))
                     & (rows.changed > rows.claim.map(chance).fillna(0))]
        if len(every):
            out[variant] = [title(c) for c in every.claim]
    return out


def title(key: str) -> str:
    """A claim about the runs by its name on the Claims page."""
    return claims.SWEEP_CLAIMS[key].title


def variant_values(changes: pd.DataFrame) -> dict:
    """What the book says of each protocol variant: the claims whose verdict it changed on some split, how many
    (claim, split) pairs, and the claims it changed on the paper's split; its rate against the reseeded
    baseline's; and the sentence over all variants."""
    out = {}
    rates = flip_rates(changes)
    for variant, rows in changes.groupby("variant"):
        moved = rows[rows.changed > 0]
        on_paper = [claim for claim, splits in zip(rows.claim, rows["changed on"]) if 0 in splits]
        r = rates.loc[variant]
        out[glue.glue_key(variant, "changed")] = ", ".join(map(title, moved.claim)) if len(moved) else "none"
        out[glue.glue_key(variant, "changed_count")] = int(moved.changed.sum())
        out[glue.glue_key(variant, "changed_split0")] = ", ".join(map(title, on_paper)) or "none"
        out[glue.glue_key(variant, "flip_rate")] = (f"{int(r.moved)} of {int(r.pairs)}, {r.rate:.0%} "
                                                   f"[{r.low:.0%}, {r.high:.0%}]")
    out["variants_sentence"] = variants_sentence(changes)
    return out
