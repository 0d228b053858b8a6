"""The book's glue: the notebooks by name, how a page cites a value a notebook glued, and the gluing itself."""
from __future__ import annotations

# The notebooks, by what each measures: the one place ktlib names them. The book's table of contents (_toc.yml) lists
# them too, for the book and the Makefile; tests/test_glue.py keeps the two the same, in the same order.
NOTEBOOKS = {"source": "01_source", "sweep": "02_sweep", "variance": "03_variance", "parameters": "04_parameters",
             "study": "05_study", "controls": "06_controls", "errors": "07_errors", "breadth": "08_breadth",
             "partial": "09_partial", "selection": "10_selection"}


def glued(notebook: str, key: str, fmt: str = "s") -> str:
    """A value a notebook glued, as the book's pages cite it."""
    return f"{{glue:text}}`../notebooks/{notebook}.ipynb::{key}:{fmt}`"


def glue_key(*parts) -> str:
    """A glue key from names that may hold '-' or '.' (a recipe's, a variant's), as the book's pages cite it."""
    return "_".join(str(p) for p in parts).replace("-", "_").replace(".", "")


def show(values: dict, shown=None):
    """Glue each value under its key, hidden (the book's pages cite them), and return what the cell shows."""
    from myst_nb import glue

    for key, value in values.items():
        glue(key, value, display=False)
    return shown


def glue_measured(claims) -> None:
    """Glue each counted claim's measured text and verdict (ktlib.analysis.claims.Claim) for the Claims page."""
    show({f"{c.key}_{part}": getattr(c, part) for c in claims for part in ("measured", "verdict")})
