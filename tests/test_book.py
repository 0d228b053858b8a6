"""The rendered book and the notebooks' regression check: chapters present, figures load offline, nbval bites."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
NOTEBOOKS = ROOT / "notebooks"
RECORD = ROOT / "results" / "paper"
PAGES = ["book/intro", "book/method", "notebooks/01_source", "notebooks/02_sweep", "notebooks/03_variance",
         "notebooks/04_parameters", "book/claims", "book/reproducibility", "book/references"]

needs_book = pytest.mark.skipif(not (HTML / "index.html").exists(), reason="no built book: run `make html` first")


def toc_files() -> list[str]:
    return [line.split("file:")[1].strip() for line in (ROOT / "_toc.yml").read_text().splitlines()
            if "file:" in line] + ["book/intro"]


def test_toc_lists_every_chapter():
    assert sorted(toc_files()) == sorted(PAGES)


@needs_book
def test_book_has_a_page_for_every_chapter_and_no_unpasted_glue():
    for page in PAGES:
        html = (HTML / f"{page}.html").read_text(encoding="utf-8")
        assert "{glue" not in html, f"{page}: a glue role was not resolved"
    claims = (HTML / "book/claims.html").read_text(encoding="utf-8")
    verdicts = re.findall(r'<strong><span class="pasted-text">([a-z ]+)</span>', claims)
    assert len(verdicts) == 9 and set(verdicts) <= {"holds", "partly", "fails"}  # one pasted verdict per claim


@needs_book
def test_every_figure_loads_offline_in_chromium():
    from browser import CHROMIUM, Chromium

    if CHROMIUM is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium)")
    figures, outside = 0, []
    with Chromium() as browser:
        for page in PAGES:
            report, requested = browser.load(HTML / f"{page}.html")
            broken = [i["src"] for i in report["images"] if not i["ok"]]
            assert not broken, f"{page}: images that did not load: {broken}"
            figures += sum("_images/" in i["src"] for i in report["images"])
            outside += [u for u in requested if not u.startswith(("file:", "data:", "about:", "blob:"))]
            if page == "book/method":
                assert report["math"] > 0, "MathJax typeset nothing on the method page"
    assert not outside, f"the book asked the network for: {sorted(set(outside))}"
    assert figures >= 7  # architecture, characters, source curve, Figure 2, Figures 3-5, effort, and pasted ones


# ---------------------------------------------------------------- nbval must fail when a checked number moves

def nbval(notebook: Path, results_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "KTLIB_RESULTS_DIR": str(results_dir), "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax",
                           "--nbval-current-env", "--rootdir", str(notebook.parent), str(notebook)],
                          cwd=notebook.parent, env=env, capture_output=True, text=True, timeout=600)


def altered_copy(name: str, tmp_path: Path, old: str, new: str) -> Path:
    """A copy of a committed notebook with `old` replaced by `new` in the stored output of one checked cell."""
    nb = json.loads((NOTEBOOKS / name).read_text(encoding="utf-8"))
    hits = 0
    for cell in nb["cells"]:
        if cell["cell_type"] == "code" and "NBVAL_CHECK_OUTPUT" in "".join(cell["source"]):
            for out in cell.get("outputs", []):
                text = "".join(out.get("text", ""))
                if old in text and not hits:
                    out["text"] = text.replace(old, new, 1)
                    hits += 1
    assert hits == 1, f"{old!r} is not in a checked output of {name}"
    path = tmp_path / name
    path.write_text(json.dumps(nb), encoding="utf-8")
    return path


@pytest.mark.slow
@pytest.mark.parametrize("name, old, new", [
    ("04_parameters.ipynb", "48120", "48121"),   # a Table 1 count
    ("03_variance.ipynb", "partly", "holds"),    # a claim verdict
])
def test_nbval_fails_when_a_stored_check_is_altered(tmp_path, name, old, new):
    shutil.copy(NOTEBOOKS / name, tmp_path / "unaltered.ipynb")
    control = nbval(tmp_path / "unaltered.ipynb", RECORD)
    assert control.returncode == 0, control.stdout[-3000:]
    altered = nbval(altered_copy(name, tmp_path, old, new), RECORD)
    assert altered.returncode != 0
    assert new in altered.stdout  # nbval reports the stored text that no longer matches
