"""What a new user meets around the code: `make` alone, the citation, and an import where fcntl is missing."""
import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_make_alone_prints_the_targets_and_installs_nothing(tmp_path):
    out = subprocess.run(["make", "-s", "-C", str(ROOT), "--dry-run"], capture_output=True, text=True, check=True)
    assert "venv" not in out.stdout  # a dry run shows what make would do: no install
    shown = subprocess.run(["make", "-s", "-C", str(ROOT)], capture_output=True, text=True, check=True).stdout
    assert "make book" in shown and "make test" in shown and not shown.startswith("#")


def test_the_citation_cites_the_paper_as_the_book_does():
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))
    bib = (ROOT / "book/references.bib").read_text(encoding="utf-8")
    paper = re.search(r"@inproceedings\{gutstein2007,.*?title\s*=\s*\{([^}]*)\}", bib, re.S).group(1)
    assert paper in [r["title"] for r in cff["references"]]
    assert cff["license"] == "MIT" and (ROOT / "LICENSE").read_text().startswith("MIT License")


def test_ktlib_imports_without_fcntl_and_only_writing_results_is_refused(tmp_path):
    code = f"""
import sys
sys.modules["fcntl"] = None  # as on a system without POSIX file locks
import ktlib
from ktlib.record import store
try:
    with store.writer({str(tmp_path / "results")!r}):
        pass
except store.StoreError as e:
    print("refused:", e)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "refused:" in out.stdout and "fcntl" in out.stdout


def test_the_readme_figure_is_the_committed_sweep_notebooks_figure_2():
    from ktlib.analysis.plots import glued_png

    assert "book/_static/fig2.png" in (ROOT / "README.md").read_text(encoding="utf-8")
    assert (ROOT / "book/_static/fig2.png").read_bytes() == glued_png(ROOT / "notebooks/02_sweep.ipynb", "fig2")
