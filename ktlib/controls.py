"""What the study measures: recipes against each other, the claims split by split, all with intervals."""
from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd

from . import claims as C
from .intervals import Cube, Tables, bootstrap, interval_text
from .transfer import BASELINE

Statistic = Callable[[dict[str, Tables]], float]


def _cell(recipe: str, n: int, k: int) -> Statistic:
    return lambda t: float(t[recipe].test.loc[n, k])


def _difference(a: tuple[str, int], b: tuple[str, int], k: int) -> Statistic:
    """Mean accuracy of (recipe, n) a minus that of b, at k: paired, as both come from the same draws."""
    return lambda t: float(t[a[0]].test.loc[a[1], k] - t[b[0]].test.loc[b[1], k])


def statistics(cube: Cube, which: dict[str, C.SweepClaim]) -> dict[tuple, Statistic]:
    """Everything the study puts an interval on, by name:
    ("cell", recipe, n, k): a cell mean; ("gain", recipe, n, k): a cell minus n=0 at the same k;
    ("knowledge", n, k): frozen minus random-frozen; ("tuning", n, k): fine-tuned minus frozen;
    ("claim", key): a claim's key statistic."""
    out: dict[tuple, Statistic] = {}
    recipes = list(cube.arrays)
    for k in cube.sizes:
        for n in cube.levels:
            for recipe in recipes:
                out[("cell", recipe, n, k)] = _cell(recipe, n, k)
                if n > 0:
                    out[("gain", recipe, n, k)] = _difference((recipe, n), (BASELINE, 0), k)
            if n > 0 and {"frozen", "random-frozen"} <= set(recipes):
                out[("knowledge", n, k)] = _difference(("frozen", n), ("random-frozen", n), k)
            if n > 0 and {"frozen", "fine-tuned"} <= set(recipes):
                out[("tuning", n, k)] = _difference(("fine-tuned", n), ("frozen", n), k)
    for key, claim in which.items():
        out[("claim", key)] = claim.statistic
    return out


def _measurable(statistic: Statistic) -> Statistic:
    """A statistic that needs runs this study lacks (an n, a k, a recipe) is NaN: not measured."""
    def safe(t):
        try:
            return statistic(t)
        except (KeyError, IndexError, ValueError, ZeroDivisionError):
            return float("nan")
    return safe


def intervals(cube: Cube, which: dict[str, C.SweepClaim], draws: int, seed: int) -> pd.DataFrame:
    """Every statistic's estimate and 95% interval, from one hierarchical bootstrap (ktlib.intervals)."""
    stats = {name: _measurable(s) for name, s in statistics(cube, which).items()}
    with np.errstate(divide="ignore", invalid="ignore"):
        return bootstrap(cube, stats, draws, seed)


def part(table: pd.DataFrame, kind: str) -> pd.DataFrame:
    """The rows of one kind of statistic, indexed by the rest of their names."""
    rows = table[[isinstance(i, tuple) and i[0] == kind for i in table.index]]
    names = {"cell": ["recipe", "n", "k"], "gain": ["recipe", "n", "k"], "knowledge": ["n", "k"],
             "tuning": ["n", "k"], "claim": ["claim"]}[kind]
    if len(names) == 1:
        return rows.set_axis(pd.Index([i[1] for i in rows.index], name=names[0]))
    return rows.set_axis(pd.MultiIndex.from_tuples([i[1:] for i in rows.index], names=names))


def as_text(table: pd.DataFrame, fmt: str = "+.3f") -> pd.Series:
    """Each row as 'estimate [low, high]', or 'not measured'."""
    return table.apply(lambda r: "not measured" if np.isnan(r.estimate) else interval_text(r, fmt), axis=1)


KNOWLEDGE = "frozen - random-frozen (knowledge)"


def gains_at(table: pd.DataFrame, k: int) -> pd.DataFrame:
    """At one training-set size, by n: each recipe's gain over n=0 and the knowledge term, as text."""
    gains = as_text(part(table, "gain")).unstack("recipe").xs(k, level="k")
    return gains.assign(**{KNOWLEDGE: as_text(part(table, "knowledge")).xs(k, level="k")})


def capacity_sentence(table: pd.DataFrame, k: int) -> str:
    """What the random-frozen control says at one size, in a sentence decided by its intervals."""
    random = part(table, "gain").xs(("random-frozen", k), level=("recipe", "k"))
    if (random.high < 0).all():
        return ("Freezing random layers lowers accuracy at every n (every interval lies below zero): fewer free "
                "parameters do not help by themselves, so the whole gain of the paper's recipe, and more, is what "
                "the source net learned.")
    helped = [int(n) for n in random.index if random.loc[n, "low"] > 0]
    return f"Freezing random layers raises accuracy at n in {helped}: there, part of the gain may be capacity."


# ---------------------------------------------------------------- the claims, split by split

def verdicts_by_split(rows: pd.DataFrame, which: dict[str, C.SweepClaim]) -> pd.DataFrame:
    """One row per split, one column per claim: the claim's verdict on that split's runs alone."""
    return pd.DataFrame({split: C.verdicts(C.sweep_claims(part, which))
                         for split, part in rows.groupby("split")}).T.rename_axis("split")


def tally(verdicts: pd.Series) -> str:
    """'holds in 9 of 10 splits (partly in 1)'."""
    counts = verdicts.value_counts()
    text = f"holds in {counts.get(C.HOLDS, 0)} of {len(verdicts)} split{'s' * (len(verdicts) != 1)}"
    others = [f"{word} in {counts[v]}" for v, word in ((C.PARTLY, "partly"), (C.FAILS, "fails"),
                                                        ("not measured", "not measured")) if v in counts]
    return text + (f" ({', '.join(others)})" if others else "")


def over_splits(rows: pd.DataFrame, table: pd.DataFrame, which: dict[str, C.SweepClaim]) -> pd.DataFrame:
    """Per claim: its verdict on the paper's split (split 0), how it fares over all splits, and its key
    statistic with its interval."""
    by_split = verdicts_by_split(rows, which)
    claims_table = part(table, "claim")
    out = pd.DataFrame({
        "paper's split": by_split.loc[0],
        "over splits": by_split.apply(tally),
        "key statistic": pd.Series({key: claim.about for key, claim in which.items()}),
        "estimate [95% interval]": as_text(claims_table, ".3f"),
    })
    return out.rename_axis("claim")


def variants_sentence(changes: pd.DataFrame) -> str:
    """How many (variant, claim) pairs changed a verdict, in a sentence decided by the count."""
    changed = int((changes.changed > 0).sum())
    if not changed:
        return "No verdict changed on any split: these verdicts do not hang on our protocol."
    return (f"Of the {len(changes)} pairs of a variant and a claim, {changed} changed their verdict on at least one "
            f"split: our protocol decides some verdicts, and those verdicts say as much about it as about the paper.")


def variant_changes(rows: pd.DataFrame, which: dict[str, C.SweepClaim]) -> pd.DataFrame:
    """Per protocol variant and claim: the verdicts on the variant's splits, next to the baseline's on the
    same splits, and how many splits changed."""
    base = verdicts_by_split(rows[rows.variant == "baseline"], which)
    out = []
    for variant, runs in rows[rows.variant != "baseline"].groupby("variant", sort=False):
        mine = verdicts_by_split(runs, which)
        theirs = base.loc[mine.index]
        for key in which:
            out.append({"variant": variant, "claim": key, "splits": ", ".join(map(str, mine.index)),
                        "baseline": ", ".join(theirs[key]), "variant verdicts": ", ".join(mine[key]),
                        "changed": int((mine[key] != theirs[key]).sum())})
    return pd.DataFrame(out)
