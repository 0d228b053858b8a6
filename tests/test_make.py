"""The README's main command, and papermill by hand, as a new user types them: paths mean what they say from
where they were typed, and a failed build leaves the committed notebooks as they were."""
import os
import re
import shutil
import subprocess
from pathlib import Path

import nbformat
import pytest
from conftest import toc_notebooks

from ktlib.compute import data as D
from ktlib.record import files

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".venv"
NOTEBOOKS = toc_notebooks()

needs_venv = pytest.mark.skipif(not (VENV / ".installed").exists(), reason="no .venv: run `make install` first")


def checkout(dest: Path) -> Path:
    """The working tree's files as a fresh clone has them, sharing this checkout's installed .venv and MathJax."""
    tracked = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True,
                           check=True).stdout.decode().split("\0")
    for name in filter(None, tracked):
        if (ROOT / name).exists():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    installed = (VENV / ".installed").stat().st_mtime
    for name in ("requirements.lock", "pyproject.toml", "book/package.json", "book/package-lock.json"):
        os.utime(dest / name, (installed - 60, installed - 60))  # make must not reinstall into the shared .venv
    (dest / ".venv").symlink_to(VENV)
    shutil.copytree(ROOT / "book/_static/mathjax", dest / "book/_static/mathjax")
    return dest


def make(repo: Path, *targets: str, **env: str) -> subprocess.CompletedProcess:
    """make in repo as typed in a shell there: $PWD is repo, and KTLIB_* come only from `env`."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("KTLIB_")}
    return subprocess.run(["make", *targets], cwd=repo, env={**base, "PWD": str(repo), **env},
                          capture_output=True, text=True, timeout=900)


def stored(repo: Path) -> dict[str, bytes]:
    return {nb: (repo / "notebooks" / f"{nb}.ipynb").read_bytes() for nb in NOTEBOOKS}


def checkout_files(repo: Path) -> dict[str, bytes]:
    """Every file of the copied checkout outside _build/ and .venv: what `git status` would see."""
    return {str(p.relative_to(repo)): p.read_bytes() for p in repo.rglob("*")
            if p.is_file() and not {"_build", ".venv", "data", "node_modules", "mathjax"}
            & set(p.relative_to(repo).parts)}


def executed_with(repo: Path, profile: str) -> None:
    """Each executed notebook ran with this profile, which its one parameters cell shows (papermill's injected cell
    folded into it), and holds no error."""
    for nb in NOTEBOOKS:
        cells = nbformat.read(repo / "_build/executed" / f"{nb}.ipynb", 4).cells
        params = [c for c in cells if {"parameters", "injected-parameters"} & set(c.metadata.get("tags", []))]
        assert len(params) == 1 and "parameters" in params[0].metadata.tags, nb
        assert f'profile = "{profile}"' in params[0].source, nb
        assert not [o for c in cells for o in c.get("outputs", []) if o.output_type == "error"], nb


@needs_venv
@pytest.mark.slow
@pytest.mark.parametrize("where, target", [("default", "book"), ("relative", "reproduce")])
def test_make_book_and_reproduce_find_the_data_and_leave_the_checkout_as_it_was(real_dir, tmp_path, where, target):
    """`make book` with the data in data/emnist and $KTLIB_DATA_DIR unset, `make reproduce` with a relative
    $KTLIB_DATA_DIR: each builds the book into _build/ and changes no file of the checkout."""
    repo = checkout(tmp_path / "repo")
    if where == "default":
        (repo / "data").mkdir()
        (repo / "data" / "emnist").symlink_to(real_dir)
        env = {}
    else:
        (tmp_path / "elsewhere").mkdir()
        (tmp_path / "elsewhere" / "emnist").symlink_to(real_dir)
        env = {D.DATA_DIR_ENV: "../elsewhere/emnist"}
    ours = sorted((ROOT / "results").rglob("*"))
    before = checkout_files(repo)
    out = make(repo, target, "PROFILE=smoke", **env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert sorted((ROOT / "results").rglob("*")) == ours  # the copy's build wrote nothing into this checkout
    assert checkout_files(repo) == before  # nor into its own tracked files: everything went to _build/
    assert (repo / "_build/html/index.html").exists()
    executed_with(repo, "smoke")
    runs_dir = {"book": "_build/results", "reproduce": "_build/reproduce"}[target]
    meta, rows = files.read_results(repo / runs_dir / "smoke-native" / files.RESULTS_FILE)
    assert len(rows) == 2 and meta["data_checksums"] == D.checksums(real_dir)
    if target == "reproduce":  # no smoke record is committed: every run is unmatched
        assert "against the record in results/smoke, run by run" in out.stdout
        assert re.search(rf"^{files.RESULTS_FILE} +2 +0 +0 +0 +2$", out.stdout, re.M), out.stdout[-2000:]


@needs_venv
@pytest.mark.slow
def test_a_failed_make_book_leaves_the_committed_notebooks_as_they_were(smoke_data, tmp_path):
    repo = checkout(tmp_path / "repo")
    broken = Path(shutil.copytree(smoke_data, tmp_path / "broken"))
    (broken / D.image_file("train")).write_bytes(b"not gzip")  # the mapping is there: make does not download
    before = stored(repo)
    out = make(repo, "book", "PROFILE=smoke", **{D.DATA_DIR_ENV: str(broken)})
    assert out.returncode != 0
    assert "notebooks/01_source.ipynb failed" in out.stdout
    assert "not a readable gzip file" in (repo / "_build/executed/01_source.ipynb").read_text()
    assert stored(repo) == before
    assert not (repo / "_build/html").exists()


@needs_venv
@pytest.mark.slow
def test_papermill_parameters_and_environment_paths_are_taken_from_where_it_was_started(smoke_data, tmp_path):
    """papermill --cwd notebooks, typed in tmp_path with relative paths, as the README shows it."""
    shutil.copytree(smoke_data, tmp_path / "emnist")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("KTLIB_")}, "PWD": str(tmp_path),
           D.DATA_DIR_ENV: "emnist"}
    papermill = [str(VENV / "bin/papermill"), "--cwd", str(ROOT / "notebooks"), str(ROOT / "notebooks/01_source.ipynb")]
    out = subprocess.run([*papermill, "out.ipynb", "-p", "profile", "smoke", "-p", "results_dir", "mine"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert (tmp_path / "mine" / files.SOURCE_RECORD).exists()

    bad = subprocess.run([*papermill, "bad.ipynb", "-p", "profile", "smoke", "-p", "seed", "abc"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert bad.returncode != 0
    assert "ValueError: seed must be an integer >= 0, got 'abc'" in bad.stderr
