"""The book's generated parts: the Claims page's tables, from the registry of claims (`python -m ktlib.analysis.page
DEST`); and each executed notebook with papermill's injected parameters folded into its one parameters cell
(`python -m ktlib.analysis.page --fold NOTEBOOK...`)."""
from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

from ktlib.analysis.claims import (
    BREADTH_CLAIMS,
    COUNTED_CLAIMS,
    PARTIAL_CLAIMS,
    SELECTION_CLAIMS,
    STUDY_CLAIMS,
    SWEEP_CLAIMS,
)
from ktlib.analysis.glue import NOTEBOOKS, glued


def page() -> dict[str, str]:
    """The Claims page's generated parts, as MyST (book/_generated/claims-*.md, included by book/claims.md): the
    counted claims, the claims about the runs on the paper's split and over splits, the claims about more source
    classes, the claims about partly transferred levels, the claims about choosing the source classes, and how each
    became contrasts. Rows are numbered in the order of COUNTED_CLAIMS, SWEEP_CLAIMS, STUDY_CLAIMS, BREADTH_CLAIMS,
    PARTIAL_CLAIMS and SELECTION_CLAIMS."""
    over_nb, breadth_nb, partial_nb = NOTEBOOKS["controls"], NOTEBOOKS["breadth"], NOTEBOOKS["partial"]
    selection_nb = NOTEBOOKS["selection"]
    runs = {**{k: (NOTEBOOKS["variance"], c) for k, c in SWEEP_CLAIMS.items()},
            **{k: (over_nb, c) for k, c in STUDY_CLAIMS.items()}}
    number = {key: i + 1 for i, key in enumerate([*COUNTED_CLAIMS, *runs, *BREADTH_CLAIMS, *PARTIAL_CLAIMS,
                                                           *SELECTION_CLAIMS])}
    counted = ["| # | The paper's claim | What we measured | Verdict |", "| --- | --- | --- | --- |"]
    counted += [f"| {number[k]} | {c.words} | {glued(c.notebook, k + '_measured')} | "
                f"**{glued(c.notebook, k + '_verdict')}** |" for k, c in COUNTED_CLAIMS.items()]
    split = ["| # | Our claim, and the paper's words | Contrasts: estimate [95% interval] (where it must lie) | Verdict "
             "|", "| --- | --- | --- | --- |"]
    split += [f"| {number[k]} | {c.words} {glued(nb, k + '_paper')} | {glued(nb, k + '_measured')} | "
              f"**{glued(nb, k + '_verdict')}** |" for k, (nb, c) in runs.items()]
    over = ["| # | Our claim | Contrasts over splits and a new draw of the classes: estimate [95% interval] (where it "
            "must lie) | Verdict | Verdict over splits alone | Splits where it holds |", "| --- | --- | --- | --- | --- | --- |"]
    over += [f"| {number[k]} | {c.title} | {glued(over_nb, k + '_over_measured')} | "
             f"**{glued(over_nb, k + '_over_verdict')}** | {glued(over_nb, k + '_splits_verdict')} | "
             f"{glued(over_nb, k + '_tally')} |" for k, (_, c) in runs.items()]
    breadth = ["| # | Our claim, and the paper's words | Contrasts over nesting orders: estimate [95% interval] (where it "
               "must lie) | Verdict |", "| --- | --- | --- | --- |"]
    breadth += [f"| {number[k]} | {c.words} {glued(breadth_nb, k + '_paper')} | {glued(breadth_nb, k + '_measured')} "
                f"| **{glued(breadth_nb, k + '_verdict')}** |" for k, c in BREADTH_CLAIMS.items()]
    partial = ["| # | Our claim, and the paper's words | Contrasts over splits and a new draw of the classes: estimate [95% "
               "interval] (where it must lie) | Verdict | Splits where it holds |", "| --- | --- | --- | --- | --- |"]
    partial += [f"| {number[k]} | {c.words} {glued(partial_nb, k + '_paper')} | {glued(partial_nb, k + '_measured')} "
                f"| **{glued(partial_nb, k + '_verdict')}** | {glued(partial_nb, k + '_tally')} |"
                for k, c in PARTIAL_CLAIMS.items()]
    selection = ["| # | Our claim, and the paper's words | Contrasts over draws of the targets and a new draw of the "
                 "classes: estimate [95% interval] (where it must lie) | Verdict | Draws where it holds |",
                 "| --- | --- | --- | --- | --- |"]
    selection += [f"| {number[k]} | {c.words} {glued(selection_nb, k + '_paper')} | "
                  f"{glued(selection_nb, k + '_measured')} | **{glued(selection_nb, k + '_verdict')}** | "
                  f"{glued(selection_nb, k + '_tally')} |" for k, c in SELECTION_CLAIMS.items()]
    how = [f"* **{c.title}** (row {number[k]}): {c.how}" for k, c in {
        **COUNTED_CLAIMS, **SWEEP_CLAIMS, **STUDY_CLAIMS, **BREADTH_CLAIMS, **PARTIAL_CLAIMS,
        **SELECTION_CLAIMS}.items() if c.how]
    return {name: "\n".join(lines) + "\n" for name, lines in
            (("claims-counted", counted), ("claims-split", split), ("claims-over", over),
             ("claims-breadth", breadth), ("claims-partial", partial), ("claims-selection", selection),
             ("claims-how", how))}


def write_page(dest: str | os.PathLike) -> None:
    """Write `page()`'s parts into dest (book/_generated), each only if it changed."""
    for name, text in page().items():
        path = Path(dest) / f"{name}.md"
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")


def _tags(cell: dict) -> list[str]:
    return cell.get("metadata", {}).get("tags", [])


def fold_parameters(notebook: str | os.PathLike) -> None:
    """Fold the cell papermill injects (tagged injected-parameters) into the notebook's parameters cell, so that
    the page shows one cell with the values the notebook ran with, each beside its comment; written back in place."""
    path = Path(notebook)
    nb = json.loads(path.read_text(encoding="utf-8"))
    cells = nb["cells"]
    params = next((c for c in cells if "parameters" in _tags(c)), None)
    injected = next((c for c in cells if "injected-parameters" in _tags(c)), None)
    if params is None or injected is None:
        return
    given = dict(re.findall(r"^(\w+) = (.*)$", "".join(injected["source"]), re.M))
    lines = []
    for line in "".join(params["source"]).splitlines():
        name = re.match(r"(\w+) *=", line)
        if name and name.group(1) in given:
            comment = line.find("#")
            code = f"{name.group(1)} = {given.pop(name.group(1))}"
            line = code + (f"{' ' * max(2, comment - len(code))}{line[comment:]}" if comment > 0 else "")
        lines.append(line)
    lines += [f"{name} = {value}" for name, value in given.items()]  # a parameter the cell does not list
    params["source"] = [line + "\n" for line in lines[:-1]] + lines[-1:]
    cells.remove(injected)
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False), encoding="utf-8")


if __name__ == "__main__":  # python -m ktlib.analysis.page DEST, or --fold NOTEBOOK...
    if sys.argv[1] == "--fold":
        for notebook in sys.argv[2:]:
            fold_parameters(notebook)
    else:
        write_page(sys.argv[1])
