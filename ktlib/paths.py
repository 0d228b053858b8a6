"""Where the data and results are, and what a path a user gave means: a relative path is taken from where the user
typed it.

* A path passed in code (`Config(data_dir=...)`) or on the command line is taken from the working directory.
* A path from the environment (`$KTLIB_DATA_DIR`, `$KTLIB_RESULTS_DIR`, `$KTLIB_CACHE_DIR`) or a notebook
  parameter is taken from the launch directory: the directory the command (`make`, `papermill`, `jupyter`)
  was typed in. papermill `--cwd`, nbval and Jupyter start kernels in another directory, but pass on the
  shell's `$PWD`, which names it.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

DATA_DIR_ENV = "KTLIB_DATA_DIR"
DEFAULT_DATA_DIR = Path("data/emnist")
RESULTS_DIR_ENV = "KTLIB_RESULTS_DIR"  # default: results/<profile>
REPO = Path(__file__).resolve().parents[1]  # the checkout ktlib is installed from (pip install -e .)


def launch_dir() -> Path:
    """The directory the user's command was typed in: $PWD when it names a directory, else the working one."""
    pwd = os.environ.get("PWD")
    if pwd and os.path.isabs(pwd) and os.path.isdir(pwd):
        return Path(pwd)
    return Path.cwd()


def resolve(path: str | os.PathLike, base: str | os.PathLike | None = None) -> Path:
    """`path` with ~ expanded, made absolute against `base` (default: the working directory)."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else Path(base or Path.cwd()) / p


def from_env(name: str) -> Path | None:
    """The absolute path that environment variable `name` gives (from the launch directory), or None."""
    value = os.environ.get(name)
    return resolve(value, launch_dir()) if value else None


def choose(given: str | os.PathLike | None, env: str, default: str | os.PathLike,
           base: str | os.PathLike | None = None) -> Path:
    """The absolute path meant: `given` (from `base`), else $env (from the launch directory), else `default`
    (from `base`). `base` defaults to the working directory."""
    if given is not None and str(given) != "":
        return resolve(given, base)
    return from_env(env) or resolve(default, base)


def data_dir(given: str | os.PathLike | None = None, base: str | os.PathLike | None = None) -> Path:
    """The EMNIST directory meant: the given one, else $KTLIB_DATA_DIR, else ./data/emnist."""
    return choose(given, DATA_DIR_ENV, DEFAULT_DATA_DIR, base)


def results_dir(given: str | os.PathLike | None, profile: str, base: str | os.PathLike | None = None) -> Path:
    """The results directory meant: the given one, else $KTLIB_RESULTS_DIR, else ./results/<profile>."""
    return choose(given, RESULTS_DIR_ENV, Path("results") / profile, base)


def probe(directory: Path) -> None:
    """Create the directory if need be, then a nameless file in it, which goes when closed: an OSError says why the
    directory cannot be written, before any work depends on it."""
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=directory):
        pass
