"""The contract between the book's pages and its notebooks: every value a page cites is one a notebook in the table of
contents glues, and every value a notebook glues is cited somewhere, or listed below as glued for its own sake."""
import json
import re

from conftest import ROOT, toc_notebooks

from ktlib.analysis import page
from ktlib.analysis.glue import NOTEBOOKS

# {glue:text}`../notebooks/NB.ipynb::key:fmt` (a page) or {glue:text}`key:fmt` (a notebook's own markdown)
ROLE = re.compile(r"\{glue(?::\w+)?\}`(?:\.\./notebooks/(\w+)\.ipynb::)?(\w+)(?::[^`]*)?`")
# ```{glue} key  then  :doc: ../notebooks/NB.ipynb
DIRECTIVE = re.compile(r"```\{glue(?::\w+)?\} (\w+)\n:doc: \.\./notebooks/(\w+)\.ipynb")

# Glued but cited nowhere, on purpose: a loop glues every member of a family and the pages quote some of them (the
# protocol's fields, the share each n trains, each recipe's dead runs, each variant's changes, the forgetting of the
# rates not quoted); or a figure is glued as well as shown in its notebook, and only its notebook shows it.
UNCITED = {
    "01_source": {"source_images"},
    "02_sweep": {"cfg_code_bits", "cfg_code_scheme", "cfg_control_levels", "cfg_patience_unit", "cfg_profile",
                 "cfg_recipes", "cfg_seed", "cfg_source_chars", "cfg_source_order", "cfg_source_size",
                 "cfg_source_training", "cfg_split", "cfg_stopping", "cfg_target_chars", "mean_table"},
    "03_variance": {"fig3_5", "fig_effort"},
    "04_parameters": {"trainable_share_n0", "trainable_share_n1", "trainable_share_n3"},
    "06_controls": {"budget_changed_count", "budget_changed_split0", "dead_fine_tuned", "dead_fine_tuned_lr001",
                    "dead_fine_tuned_lr01", "dead_random_lecun", "dead_random_normal",
                    "forgetting_fine_tuned_lr01_top_large", "forgetting_fine_tuned_lr01_top_small",
                    "one_of_n_changed_count", "one_of_n_changed_split0", "patience_steps_changed_count",
                    "reseeded_changed_count"},
    "08_breadth": {"control_cap"},
    "10_selection": {"fig_selections", "fig_scores", "fig_standing"},
}


def glued(notebook: str) -> set[str]:
    """The keys a committed notebook glues (its stored outputs)."""
    cells = json.loads((ROOT / "notebooks" / f"{notebook}.ipynb").read_text(encoding="utf-8"))["cells"]
    return {out["metadata"]["scrapbook"]["name"] for c in cells for out in c.get("outputs", [])
            if out.get("metadata", {}).get("scrapbook")}


def citations() -> dict[tuple[str, str], list[str]]:
    """(notebook, key) -> the pages that cite it: the book's pages, the Claims page's generated parts, and each
    notebook's own markdown."""
    pages = {p.name: p.read_text(encoding="utf-8") for p in (ROOT / "book").glob("*.md")}
    pages |= {f"_generated/{name}.md": text for name, text in page.page().items()}
    out = {}
    for name, text in pages.items():
        for notebook, key in ROLE.findall(text):
            assert notebook, f"book/{name} cites {key} without naming the notebook that glues it"
            out.setdefault((notebook, key), []).append(name)
        for key, notebook in DIRECTIVE.findall(text):
            out.setdefault((notebook, key), []).append(name)
    for notebook in toc_notebooks():
        cells = json.loads((ROOT / "notebooks" / f"{notebook}.ipynb").read_text(encoding="utf-8"))["cells"]
        for text in ("".join(c["source"]) for c in cells if c["cell_type"] == "markdown"):
            for named, key in ROLE.findall(text):
                out.setdefault((named or notebook, key), []).append(notebook)
    return out


def test_the_notebooks_names_are_those_of_the_table_of_contents_in_its_order():
    assert list(NOTEBOOKS.values()) == toc_notebooks()


def test_every_cited_value_is_glued_by_a_notebook_in_the_table_of_contents():
    cited = citations()
    assert len(cited) > 300  # the parser reads the pages: a broken pattern would find nothing and pass
    unknown = {nb for nb, _ in cited} - set(toc_notebooks())
    assert not unknown, f"pages cite notebooks outside the table of contents: {unknown}"
    missing = sorted((nb, key, where) for (nb, key), where in cited.items() if key not in glued(nb))
    assert not missing, f"cited but glued by no notebook: {missing}"


def test_every_glued_value_is_cited_or_listed_as_uncited_on_purpose():
    cited = citations()
    for notebook in toc_notebooks():
        keys = glued(notebook)
        uncited = keys - {key for nb, key in cited if nb == notebook}
        assert uncited == UNCITED.get(notebook, set()), f"{notebook}: glued and cited nowhere: {uncited}"


def test_the_contract_check_fails_on_a_citation_of_a_key_no_notebook_glues(monkeypatch, tmp_path):
    """The check can fail: a page citing a key that no notebook glues is found."""
    real = page.page
    monkeypatch.setattr(page, "page", lambda: {**real(), "extra": "{glue:text}`../notebooks/02_sweep.ipynb::nokey`"})
    cited = citations()
    assert ("02_sweep", "nokey") in cited and "nokey" not in glued("02_sweep")


def test_papermills_injected_parameters_fold_into_the_one_parameters_cell_beside_their_comments(tmp_path):
    cell = lambda source, tags: {"cell_type": "code", "metadata": {"tags": tags}, "source": source, "outputs": [],
                                 "execution_count": None}
    nb = {"cells": [cell('seed = 0            # all randomness\nprofile = "paper"   # or "smoke"\nsplits = None',
                         ["parameters"]),
                    cell('# Parameters\nprofile = "smoke"\nsplits = 2\nextra = 1\n', ["injected-parameters"]),
                    cell("print(profile)", [])],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    path = tmp_path / "n.ipynb"
    path.write_text(json.dumps(nb))
    page.fold_parameters(path)
    cells = json.loads(path.read_text())["cells"]
    assert len(cells) == 2 and cells[1]["source"] == "print(profile)"
    assert "".join(cells[0]["source"]) == ('seed = 0            # all randomness\nprofile = "smoke"   # or "smoke"\n'
                                           'splits = 2\nextra = 1')
    page.fold_parameters(path)  # a folded notebook has nothing left to fold
    assert json.loads(path.read_text())["cells"] == cells
