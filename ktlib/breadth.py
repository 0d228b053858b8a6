"""The breadth study, the paper's open question: how transfer changes as the source net learns more classes."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from . import claims, data, records, study, sweep
from .config import PROFILES, Config, Purpose, derive_seed, replicates
from .intervals import Cube, interval_text, t_interval
from .recipes import BASELINE, MATCHED_CONTROL

NESTED = (5, 10, 20)  # source sizes below the largest, which is every class with the paper's 400 training images
CAPACITY_LEVELS = [3, 5]  # where the capacity control runs beside the frozen sweep
FIXED = "fixed"  # the control that holds the source images fixed: all the classes, as many images in all as 20 x 400


def part(size: int | str) -> str:
    """A breadth sweep's part of the study's layout: classes-<m>, or the fixed-image control's."""
    return f"{records.ORDERED}{size}"


def _listed(numbers) -> str:
    """1, 2 and 3: numbers as a sentence lists them."""
    words = [str(n) for n in numbers]
    return " and ".join([", ".join(words[:-1]), words[-1]] if len(words) > 1 else words)


def fixed_targets(emnist: data.Emnist, cfg: Config) -> str:
    """The target classes of every breadth sweep: n_classes drawn once among the classes too scarce to be a source
    class, so no source size takes any of them and every change comes from the source."""
    pool, _ = data.eligible(emnist, data.ORDER_POOL_IMAGES)
    _, ok = data.eligible(emnist, cfg.source_per_class, max(cfg.sizes), cfg.test_per_class)
    scarce = [c for c in ok if c not in pool]
    if len(scarce) < cfg.n_classes:
        raise data.DataError(f"only {len(scarce)} classes have too few images to be a source class and enough to be a "
                             f"target; the breadth study needs {cfg.n_classes}")
    rng = np.random.default_rng(derive_seed(cfg.seed, Purpose.FIXED_TARGETS))
    return "".join(emnist.mapping[c] for c in sorted(rng.choice(scarce, cfg.n_classes, replace=False).tolist()))


@dataclass
class Breadth:
    """The paper's sweep with source nets of nested sizes (NESTED, then every class that can be one) drawn in
    `orders` random orders, on fixed targets; the capacity control at CAPACITY_LEVELS; and per order the control
    with all the classes but as many source images in all as the paper's source. The n=0 runs copy nothing, so
    they are run once (in the first sweep) and serve every source."""
    cfg: Config
    orders: int
    sizes: tuple[int, ...]
    fixed_images: int
    draws: int

    @classmethod
    def of(cls, cfg: Config, orders: int | None = None) -> "Breadth":
        profile = PROFILES[cfg.profile]
        orders = replicates("orders", orders, profile.orders)
        emnist, _ = data.opened(cfg.data_dir)
        largest = len(data.eligible(emnist, data.ORDER_POOL_IMAGES)[0])
        base = dataclasses.replace(cfg, recipes=[BASELINE, MATCHED_CONTROL], control_levels=CAPACITY_LEVELS,
                                   source_training="engine", target_chars=fixed_targets(emnist, cfg))
        return cls(base, orders, tuple(m for m in NESTED if m < largest) + (largest,),
                   round(cfg.n_classes * cfg.source_per_class / largest), profile.draws)

    @property
    def root(self) -> Path:
        return records.study_root(self.cfg.results_dir)

    @property
    def parts(self) -> list[str]:
        return [part(m) for m in self.sizes] + [part(FIXED)]

    def configs(self) -> list[tuple[str, Config]]:
        """(part, config) of every sweep: each order's nested sources, then each order's fixed-image control."""
        out = []
        for fixed in (False, True):
            for order in range(self.orders):
                for m in self.sizes[-1:] if fixed else self.sizes:
                    name = part(FIXED if fixed else m)
                    first = not out  # holds the n=0 runs, which copy nothing: the same for every source
                    changes = dict(recipes=[BASELINE], control_levels=None,
                                   source_per_class=self.fixed_images) if fixed else {}
                    out.append((name, dataclasses.replace(
                        self.cfg, source_size=m, source_order=order,
                        levels=self.cfg.levels if first else [n for n in self.cfg.levels if n > 0],
                        results_dir=str(records.sweep_dir(self.root, name, order)), **changes)))
        return out

    def run(self, progress: bool = True) -> pd.DataFrame:
        """Run (or resume) every sweep on one executor (ktlib.sweep.run_sweeps); its runs, tidy."""
        sweep.run_sweeps([cfg for _, cfg in self.configs()], progress, name="breadth")
        return self.runs()

    def _mine(self, table: pd.DataFrame) -> pd.DataFrame:
        wanted = {(name, cfg.source_order) for name, cfg in self.configs()}
        mine = table[[key in wanted for key in zip(table.variant, table.split)]]
        return mine.rename(columns={"split": "order"}).reset_index(drop=True)

    def _shared(self, table: pd.DataFrame) -> pd.DataFrame:
        """The table with the first sweep's n=0 rows given to every sweep, and each row's source size."""
        table = self._mine(table)
        first_part, first = self.configs()[0]
        zero = table[(table.n == 0) & (table.variant == first_part) & (table.order == first.source_order)]
        copies = [zero.assign(variant=name, order=cfg.source_order) for name, cfg in self.configs()[1:]]
        out = pd.concat([table[table.n > 0], zero, *copies], ignore_index=True)
        sources = pd.Categorical(out.variant.str.removeprefix(records.ORDERED),
                                 [str(m) for m in self.sizes] + [FIXED], ordered=True)  # tables in this order
        return out.assign(source=sources)

    def stored(self) -> pd.DataFrame:
        """Every run as its results file stores it: the n=0 runs once."""
        return self._mine(records.study_runs(self.root, self.parts))

    def runs(self) -> pd.DataFrame:
        """Every run, tidy, with its part (`variant`), nesting `order` and `source` size ('fixed' for the control);
        the n=0 runs under every source."""
        return self._shared(records.study_runs(self.root, self.parts))

    def readouts(self) -> pd.DataFrame:
        """Every training-free readout, tidy, like `runs`."""
        return self._shared(records.study_readouts(self.root, self.parts))

    def sources(self) -> pd.DataFrame:
        """Each sweep's source net: classes, epochs, training and held-out accuracy, whether it hit the epoch cap."""
        nets = self._mine(records.study_sources(self.root, self.parts))
        return nets.assign(classes=nets.source.str.len(), cap=nets.epochs >= self.cfg.source_max_epochs)

    def orders_table(self) -> pd.DataFrame:
        """Per nesting order: the classes each source size adds to the one before."""
        emnist, out = data.opened(self.cfg.data_dir)[0], {}
        for order in range(self.orders):
            ranked = [emnist.mapping[c] for c in data.nesting_order(
                emnist, derive_seed(self.cfg.split_seed(), Purpose.SOURCE_ORDER, order))]
            out[order] = {f"{a + 1}-{b}": "".join(sorted(ranked[a:b]))
                          for a, b in zip((0,) + self.sizes[:-1], self.sizes)}
        return pd.DataFrame(out).T.rename_axis("order")

    def design(self) -> dict:
        """The design's numbers, as the notebook cites them."""
        pool = self.sizes[-1]
        return {"pool_count": pool, "scarce_count": len(data.opened(self.cfg.data_dir)[0].mapping) - pool,
                "targets": self.cfg.target_chars, "n_targets": self.cfg.n_classes, "orders": self.orders,
                "orders_df": self.orders - 1, "fixed_images": self.fixed_images,
                "fixed_total": self.fixed_images * pool, "paper_total": self.cfg.n_classes * self.cfg.source_per_class,
                "capacity_levels": _listed(CAPACITY_LEVELS), "sweeps": len(self.configs()),
                "sizes_count": len(self.sizes), "smaller_sizes": _listed(self.sizes[:-1]),
                "source_sizes": _listed(self.sizes[:-1] + (f"all {pool}",)),
                "pool_images": data.ORDER_POOL_IMAGES, "source_accuracy": self.cfg.source_accuracy,
                "source_max_epochs": self.cfg.source_max_epochs, "trials": self.cfg.trials,
                "paper_classes": self.cfg.n_classes, "top_level": max(self.cfg.levels)}

    def spreads(self) -> pd.DataFrame:
        """Per sweep, recipe and level: how much that level's output varies from image to image on the test images
        (ktlib.readouts.spread), as its readouts file records it."""
        out = []
        for name, cfg in self.configs():
            meta, _ = records.read_readouts(cfg.results_dir)
            out += [{"source": name.removeprefix(records.ORDERED), "order": cfg.source_order, "recipe": recipe,
                     "n": n, "spread": value} for recipe, values in meta["spread"].items()
                    for n, value in enumerate(values)]
        return pd.DataFrame(out)

    def provenance(self) -> pd.DataFrame:
        return records.study_provenance(self.root, self.parts)

    def against_record(self) -> dict[str, dict]:
        return study.against_record([cfg for _, cfg in self.configs()], self.root)

    def seed(self) -> int:
        """The seed of the analysis's bootstrap draws."""
        return derive_seed(self.cfg.seed, Purpose.BOOTSTRAP)


# ---------------------------------------------------------------- the analysis

def cube(rows: pd.DataFrame) -> Cube:
    """The frozen runs as a Cube whose arrays are keyed by source size (an int, or FIXED) where a recipe's would be,
    its first axis the nesting order: the form ktlib.claims' breadth contrasts read."""
    arrays, shape = {}, None
    for source, runs in rows[rows.recipe == BASELINE].groupby("source", observed=True):
        one = Cube.of(runs.assign(split=runs.order), [BASELINE])
        arrays[int(source) if source.isdigit() else source] = one.arrays[BASELINE]
        shape = one
    return Cube(dict(sorted(arrays.items(), key=lambda kv: (isinstance(kv[0], str), kv[0]))), shape.levels,
                shape.sizes, shape.split_ids)


def _interval(values: np.ndarray) -> tuple[float, float, float]:
    """(mean, low, high): Student's t over the orders."""
    low, high = t_interval(values) if len(values) > 1 else (np.nan, np.nan)
    return float(values.mean()), float(low), float(high)


def gains(c: Cube) -> pd.DataFrame:
    """Per source and k: the gain over n=0 of the best n (chosen on the other orders) and of n=5, each with its 95%
    t interval over the orders."""
    out = []
    for source in c.arrays:
        for k in c.sizes:
            top = c.levels[-1]
            per_order = {"best n": claims.best_gain(c, source, k)(c),
                         f"n={top}": (c.at("test_accuracy", top, k, source) - c.at("test_accuracy", 0, k, source)).mean(1)}
            for statistic, values in per_order.items():
                out.append(dict(zip(["source", "k", "gain of", "estimate", "low", "high"],
                                    [source, k, statistic, *_interval(values)])))
    return pd.DataFrame(out)


def doubling(c: Cube) -> pd.DataFrame:
    """Per k: what each doubling of the source classes adds to the best gain (claims.per_doubling), with its t
    interval over the orders."""
    return pd.DataFrame([dict(zip(["k", "estimate", "low", "high"], [k, *_interval(claims.per_doubling(c, k)(c))]))
                         for k in c.sizes]).set_index("k")


def stops_paying(c: Cube, margin: float = claims.CLEAR_GAIN) -> pd.DataFrame:
    """Per source and order: the smallest k at which the best gain (its n chosen on the other orders) falls short of
    the clear-gain margin, where transfer stops paying; NaN where it pays at every k. A threshold crossing has no
    confidence interval: the table gives every order's."""
    out = {}
    for source in c.arrays:
        per_k = np.stack([claims.best_gain(c, source, k)(c) for k in c.sizes])  # (K, orders)
        out[source] = [next((k for k, g in zip(c.sizes, per_k[:, o]) if g < margin), np.nan)
                       for o in range(per_k.shape[1])]
    return pd.DataFrame(out, index=pd.Index(c.split_ids, name="order")).T.rename_axis("source")


def paired(c: Cube, a, b) -> pd.DataFrame:
    """Per k: the best gain of source a minus that of source b, per order, with its t interval."""
    return pd.DataFrame([dict(zip(["k", "estimate", "low", "high"],
                                  [k, *_interval(claims.best_gain(c, a, k)(c) - claims.best_gain(c, b, k)(c))]))
                         for k in c.sizes]).set_index("k")


def knowledge(rows: pd.DataFrame) -> pd.DataFrame:
    """Per source, n and k where the capacity control ran: frozen minus the control, paired by trial, mean per
    order, with its t interval over the orders."""
    both = rows[rows.recipe.isin([BASELINE, MATCHED_CONTROL]) & rows.n.isin(CAPACITY_LEVELS)]
    wide = both.pivot_table(index=["source", "n", "k", "order", "trial"], columns="recipe", values="test_accuracy")
    wide = wide.dropna()
    per_order = (wide[BASELINE] - wide[MATCHED_CONTROL]).groupby(["source", "n", "k", "order"], observed=True).mean()
    out = pd.DataFrame([dict(zip(["source", "n", "k", "estimate", "low", "high"], [*key, *_interval(group.to_numpy())]))
                        for key, group in per_order.groupby(["source", "n", "k"], observed=True)])
    if isinstance(rows.source.dtype, pd.CategoricalDtype):  # the sources in their order, not as text sorts them
        out["source"] = pd.Categorical(out.source, rows.source.cat.categories, ordered=True)
    return out.sort_values(["source", "n", "k"], ignore_index=True)


def agreement(trained: pd.DataFrame, readout: pd.DataFrame) -> pd.DataFrame:
    """Per cell of two `knowledge` tables: whether both intervals exclude zero (decided), and if so, whether they
    agree in sign."""
    both = trained.merge(readout, on=["source", "n", "k"], suffixes=("", "_readout"))
    side = lambda low, high: np.where(low > 0, 1, np.where(high < 0, -1, 0))
    a, b = side(both.low, both.high), side(both.low_readout, both.high_readout)
    return both.assign(decided=(a != 0) & (b != 0), agree=(a != 0) & (a == b))


def as_text(table: pd.DataFrame, fmt: str = "+.3f") -> pd.Series:
    """'estimate [low, high]' per row, indexed by the table's other columns."""
    keys = [col for col in table.columns if col not in ("estimate", "low", "high")]
    return (table.set_index(keys) if keys else table).apply(lambda r: interval_text(r, fmt), axis=1)


def source_summary(nets: pd.DataFrame) -> pd.DataFrame:
    """Per source size: the source nets' held-out accuracy (mean, lowest, highest), epochs, and epoch-cap hits."""
    return nets.groupby("variant", sort=False).agg(
        classes=("classes", "first"), held_out_mean=("held_out_accuracy", "mean"),
        held_out_min=("held_out_accuracy", "min"), held_out_max=("held_out_accuracy", "max"),
        epochs_mean=("epochs", "mean"), capped=("cap", "sum"), nets=("cap", "size"))


def headline(c: Cube, stops: pd.DataFrame) -> dict:
    """The numbers that answer the paper's question: what a doubling of the source classes adds at the smallest k,
    with its interval, and where transfer stops paying (the median over orders) with the fewest and the most
    source classes."""
    small = c.sizes[0]
    estimate, low, high = _interval(claims.per_doubling(c, small)(c))
    fewest, most = claims.nested(c)[0], claims.nested(c)[-1]
    median = lambda m: stops.loc[m].fillna(np.inf).median()  # an order that pays at every k: past the largest
    text = lambda v: f"k = {v:g}" if np.isfinite(v) else f"beyond k = {c.sizes[-1]}"
    return {"small_k": small, "per_doubling": estimate, "per_doubling_low": low, "per_doubling_high": high,
            "fewest": fewest, "most": most, "stops_fewest": text(median(fewest)), "stops_most": text(median(most)),
            "stops_fewest_unpaid": int(stops.loc[fewest].isna().sum()),
            "stops_most_unpaid": int(stops.loc[most].isna().sum())}


def readout_table(readouts: pd.DataFrame, readout: str = "nearest-neighbour") -> pd.DataFrame:
    """Per source, n and k: one readout's test error on the frozen source's level-n features, mean over trials
    and then over orders, with its t interval over the orders."""
    mine = readouts[(readouts.readout == readout) & (readouts.recipe == BASELINE)]
    per_order = (1 - mine.test_accuracy).groupby([mine.source, mine.n, mine.k, mine.order], observed=True).mean()
    return pd.DataFrame([dict(zip(["source", "n", "k", "error", "low", "high"], [*key, *_interval(g.to_numpy())]))
                         for key, g in per_order.groupby(level=["source", "n", "k"], observed=True)])
