"""The rendered book and the notebooks' regression check: chapters present, figures load offline, nbval bites."""
import copy
import json
import os
import re
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import ROOT, toc_pages

from ktlib.analysis import claims, contrasts
from ktlib.analysis import page as generated
from ktlib.record import files, layout

HTML = ROOT / "_build" / "html"
NOTEBOOK_DIR = ROOT / "notebooks"
RECORD = layout.record_path("paper").parent
PAGES = toc_pages()

needs_book = pytest.mark.skipif(not (HTML / "index.html").exists(), reason="no built book: run `make html` first")


def test_every_page_in_the_table_of_contents_exists():
    assert all((ROOT / f"{page}.md").exists() or (ROOT / f"{page}.ipynb").exists() for page in PAGES)


def claims_page() -> str:
    """The Claims page as the book reads it: book/claims.md with the parts it includes, as the registry makes them."""
    page = (ROOT / "book/claims.md").read_text(encoding="utf-8")
    for name, text in generated.page().items():
        assert f"```{{include}} _generated/{name}.md" in page, f"book/claims.md does not include {name}"
        page += text
    return page


def test_the_claims_page_has_a_row_for_every_claim_the_notebooks_judge():
    page = claims_page()
    for notebook, keys in claims.CLAIMS.items():
        for key in keys:
            assert f"{notebook}.ipynb::{key}_verdict" in page and f"{notebook}.ipynb::{key}_measured" in page


def test_the_claims_page_shows_every_claim_about_the_runs_with_its_contrasts_verdicts_and_tally():
    page = claims_page()
    for key in {**claims.SWEEP_CLAIMS, **claims.STUDY_CLAIMS}:
        where = "06_controls" if key in claims.STUDY_CLAIMS else "03_variance"
        for name in ("paper", "measured", "verdict"):  # the paper's split
            assert f"{where}.ipynb::{key}_{name}:" in page
        for name in ("over_measured", "over_verdict", "splits_verdict", "tally"):  # over splits
            assert f"06_controls.ipynb::{key}_{name}:" in page


def test_the_claims_page_states_every_threshold():
    page = claims_page()
    assert all(f"::{name}:" in page for name in contrasts.THRESHOLDS)


@needs_book
def test_book_has_a_page_for_every_chapter_and_no_unpasted_glue():
    for page in PAGES:
        html = (HTML / f"{page}.html").read_text(encoding="utf-8")
        assert "{glue" not in html, f"{page}: a glue role was not resolved"
    page = (HTML / "book/claims.html").read_text(encoding="utf-8")
    tables = "".join(re.findall(r"<table.*?</table>", page, re.S))  # the claims' rows, not the prose's verdicts
    verdicts = re.findall(r'<strong><span class="pasted-text">([a-z ,]+)</span>', tables)
    about_runs = len(claims.SWEEP_CLAIMS) + len(claims.STUDY_CLAIMS)
    assert len(verdicts) == sum(map(len, claims.CLAIMS.values())) + about_runs  # and again over splits
    assert set(verdicts) <= {contrasts.HOLDS, *contrasts.PARTLY, contrasts.FAILS, contrasts.UNDECIDED}


def test_every_claim_has_its_words_title_and_contrasts_on_the_claims_page():
    runs = {**claims.SWEEP_CLAIMS, **claims.STUDY_CLAIMS}
    assert all(c.words and c.title and c.how for c in runs.values())
    page = generated.page()
    numbers = [line.split("|")[1].strip() for line in page["claims-counted"].splitlines()[2:]]
    numbers += [line.split("|")[1].strip() for line in page["claims-split"].splitlines()[2:]]
    assert numbers == [str(i + 1) for i in range(len(claims.COUNTED_CLAIMS) + len(runs))]  # one row each, in order
    assert [line.split("|")[2].strip() for line in page["claims-over"].splitlines()[2:]] == \
        [c.title for c in runs.values()]
    breadth = [line.split("|") for line in page["claims-breadth"].splitlines()[2:]]
    assert all(c.words and c.title and c.how for c in claims.BREADTH_CLAIMS.values())
    assert [row[1].strip() for row in breadth] == [str(len(numbers) + i + 1) for i in range(len(claims.BREADTH_CLAIMS))]
    assert all(f"08_breadth.ipynb::{key}_verdict" in row[4] for key, row in zip(claims.BREADTH_CLAIMS, breadth))
    partial = [line.split("|") for line in page["claims-partial"].splitlines()[2:]]
    assert all(c.words and c.title and c.how for c in claims.PARTIAL_CLAIMS.values())
    first = len(numbers) + len(breadth)
    assert [row[1].strip() for row in partial] == [str(first + i + 1) for i in range(len(claims.PARTIAL_CLAIMS))]
    assert all(f"09_partial.ipynb::{key}_verdict" in row[4] for key, row in zip(claims.PARTIAL_CLAIMS, partial))
    selection = [line.split("|") for line in page["claims-selection"].splitlines()[2:]]
    assert all(c.words and c.title and c.how for c in claims.SELECTION_CLAIMS.values())
    first += len(partial)
    assert [row[1].strip() for row in selection] == [str(first + i + 1) for i in range(len(claims.SELECTION_CLAIMS))]
    assert all(f"10_selection.ipynb::{key}_verdict" in row[4] for key, row in zip(claims.SELECTION_CLAIMS, selection))
    assert len(page["claims-how"].splitlines()) == len(runs) + len(claims.BREADTH_CLAIMS) + len(
        claims.PARTIAL_CLAIMS) + len(claims.SELECTION_CLAIMS) + sum(bool(c.how) for c in claims.COUNTED_CLAIMS.values())


def test_the_committed_claims_tables_are_the_registrys():
    for name, text in generated.page().items():  # make html builds from them; make book writes them anew
        assert (ROOT / "book/_generated" / f"{name}.md").read_text(encoding="utf-8") == text, \
            f"book/_generated/{name}.md is stale: run `python -m ktlib.analysis.claims book/_generated`"


def test_the_devtools_client_sends_no_origin_header():
    """Chromium 150 refuses a DevTools connection whose Origin it was not told to allow; send none."""
    from browser import connect

    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(10)
        handshake = []

        def capture():
            conn, _ = server.accept()
            with conn:
                request = b""
                while b"\r\n\r\n" not in request:
                    request += conn.recv(4096)
                handshake.append(request.decode())

        listener = threading.Thread(target=capture)
        listener.start()
        with pytest.raises(Exception):  # the server closes without completing the upgrade
            connect(f"ws://127.0.0.1:{server.getsockname()[1]}/devtools/page/x")
        listener.join()
    headers = [line.split(":", 1)[0].lower() for line in handshake[0].split("\r\n")[1:]]
    assert "upgrade" in headers and "origin" not in headers


@needs_book
def test_every_figure_loads_offline_in_chromium():
    from browser import CHROMIUM, Chromium

    if CHROMIUM is None:
        if os.environ.get("CI"):  # .ci/run installs it: a skip there would hide a failed install
            pytest.fail("chromium is not installed, and CI must run this test")
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


def through_checked(name: str, old: str) -> tuple[dict, int]:
    """A committed notebook cut after the first checked cell whose stored output holds `old`, and that cell's index:
    the cells after it cannot change whether nbval sees the cell altered, and the whole of 06 takes minutes."""
    nb = json.loads((NOTEBOOK_DIR / name).read_text(encoding="utf-8"))
    for at, cell in enumerate(nb["cells"]):
        if cell["cell_type"] == "code" and "NBVAL_CHECK_OUTPUT" in "".join(cell["source"]) and any(
                old in "".join(out.get("text", "")) for out in cell.get("outputs", [])):
            return {**nb, "cells": nb["cells"][:at + 1]}, at
    raise AssertionError(f"{old!r} is not in a checked output of {name}")


def written(nb: dict, path: Path) -> Path:
    path.write_text(json.dumps(nb), encoding="utf-8")
    return path


def altered(nb: dict, at: int, old: str, new: str) -> dict:
    """The notebook with `old` replaced by `new` once in the stored output of cell `at`."""
    nb = copy.deepcopy(nb)
    out = next(o for o in nb["cells"][at]["outputs"] if old in "".join(o.get("text", "")))
    out["text"] = "".join(out["text"]).replace(old, new, 1)
    return nb


@pytest.mark.slow
@pytest.mark.parametrize("name, old, new", [
    ("04_parameters.ipynb", "48120", "48121"),   # a Table 1 count
    ("03_variance.ipynb", "partly", "holds"),    # a claim verdict
    ("03_variance.ipynb", "0.02\n", "0.07\n"),     # a margin: clear_gain's, the checked output's one 0.02
    ("06_controls.ipynb", "method: t", "method: BCa"),  # the interval method the coverage simulation chooses
])
def test_nbval_fails_when_a_stored_check_is_altered(tmp_path, name, old, new):
    nb, at = through_checked(name, old)
    control = nbval(written(nb, tmp_path / "unaltered.ipynb"), RECORD)
    assert control.returncode == 0, control.stdout[-3000:]
    moved = nbval(written(altered(nb, at, old, new), tmp_path / name), RECORD)
    assert moved.returncode != 0
    assert new in moved.stdout  # nbval reports the stored text that no longer matches


def test_nbval_recomputes_exactly_the_named_runs_and_refuses_an_unknown_sweep(tmp_path):
    from nbval_results import prepare
    root = layout.study_root(tmp_path)
    where = layout.sweep_dir(root, "baseline", 0)
    _, committed = files.read_results(RECORD / where.relative_to(tmp_path) / files.RESULTS_FILE)
    prepare(tmp_path, ["baseline:0:1,40", "baseline:1", "baseline:2:1:source"])
    _, kept = files.read_results(where / files.RESULTS_FILE)
    assert len(kept) == (~committed.k.isin([1, 40])).sum() and not kept.k.isin([1, 40]).any()
    assert not (where / files.READOUTS_FILE).exists()  # measured again with the runs
    assert (where / files.SOURCE_FILE).exists()  # its source net is the record's
    retrained = layout.sweep_dir(root, "baseline", 2)
    assert not (retrained / files.SOURCE_FILE).exists() and not (retrained / files.SOURCE_RECORD).exists()
    assert not layout.sweep_dir(root, "baseline", 1).exists()
    assert (layout.sweep_dir(root, "baseline", 3) / files.RESULTS_FILE).exists()  # the rest is the record's
    with pytest.raises(SystemExit, match="no sweep"):
        prepare(tmp_path, ["baseline:99"])
    with pytest.raises(SystemExit, match="PART:SPLIT"):
        prepare(tmp_path, ["baseline/split-0"])
    with pytest.raises(SystemExit, match="PART:SPLIT"):
        prepare(tmp_path, ["baseline:0:1:net"])
