"""Fixtures: tiny EMNIST-format files written by the tests, and the real subset when configured."""
import gzip
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from ktlib import paths
from ktlib.compute import data as D

CHARS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
ROOT = Path(__file__).resolve().parents[1]


def toc_pages() -> list[str]:
    """Every page of the book, in order, from the table of contents: the one list of them."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    return [toc["root"]] + [c["file"] for part in toc["parts"] for c in part["chapters"]]


def toc_notebooks() -> list[str]:
    """The notebooks' names, in the book's order."""
    return [page.split("/", 1)[1] for page in toc_pages() if page.startswith("notebooks/")]


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    return struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()


def write_gz(path: Path, payload: bytes) -> None:
    path.write_bytes(gzip.compress(payload, mtime=0))


def write_mapping(path: Path, chars: str = CHARS) -> None:
    path.write_bytes("".join(f"{i} {ord(c)}\r\n" for i, c in enumerate(chars)).encode())


def write_emnist(root: Path, per_class: dict[str, tuple[int, int]] | None = None, seed: int = 0) -> Path:
    """A small, valid EMNIST ByClass directory: per_class[split] = images per class (all 62 classes).

    Each image is noise plus a class-dependent stroke, stored transposed as EMNIST stores them."""
    per_class = per_class or {"train": 12, "test": 12}
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    write_mapping(root / D.MAPPING_FILE)
    for split, n in per_class.items():
        labels = np.repeat(np.arange(len(CHARS)), n)
        rng.shuffle(labels)
        upright = rng.integers(0, 40, size=(len(labels), 28, 28))
        for i, c in enumerate(labels):
            upright[i, 4 + c % 20, 4:24] = 255      # a horizontal bar whose row encodes the class
            upright[i, 4:24, 4 + c // 20 * 6] = 255  # and a vertical one
        write_gz(root / D.image_file(split), idx_bytes(upright.transpose(0, 2, 1), D.IMAGE_MAGIC))
        write_gz(root / D.label_file(split), idx_bytes(labels, D.LABEL_MAGIC))
    return root


@pytest.fixture
def tiny_dir(tmp_path) -> Path:
    return write_emnist(tmp_path / "emnist")


@pytest.fixture(scope="session")
def smoke_data(tmp_path_factory) -> Path:
    """Synthetic EMNIST with enough images for the smoke profile (40 source, 10 test and 10 validation images per class)."""
    return write_emnist(tmp_path_factory.mktemp("smoke") / "emnist", {"train": 42, "test": 20})


@pytest.fixture(scope="session")
def real_dir() -> Path:
    """The shared EMNIST subset; CI must have it, a developer without it skips these tests."""
    path = os.environ.get(D.DATA_DIR_ENV) and paths.data_dir()  # a relative one is taken from where pytest started
    if path and Path(path, D.MAPPING_FILE).exists():
        return Path(path)
    if os.environ.get("CI"):
        pytest.fail(f"${D.DATA_DIR_ENV} must point at the EMNIST subset in CI (got {path!r})")
    pytest.skip(f"set ${D.DATA_DIR_ENV} to run tests on the real EMNIST subset")


def as_ordinary_user(cmd: list[str]) -> list[str]:
    """cmd, run without root's power to ignore file permissions (CI runs as root), so chmod 000 bites."""
    if os.geteuid() != 0:
        return cmd
    if not shutil.which("setpriv"):
        pytest.skip("running as root without setpriv (util-linux) to drop the permission override")
    return ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", *cmd]


def on_a_small_disk(cmd: list[str], mountpoint: Path, size: str = "64k") -> list[str]:
    """cmd, run in a mount namespace of its own with a tmpfs of `size` at mountpoint: a disk that fills up."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("a private tmpfs needs root and unshare")
    mountpoint.mkdir(parents=True, exist_ok=True)
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c",
            f'mount -t tmpfs -o size={size} tmpfs "$0" && exec "$@"', str(mountpoint), *cmd]


def ktlib_cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "ktlib", *args]


def dry_run(data: Path, results: Path, *extra: str) -> list[str]:
    """The arguments of `ktlib sweep --dry-run` on this data, into this results directory."""
    return ["sweep", "--dry-run", "--data-dir", str(data), "--results-dir", str(results), *extra]


def fingerprint(directory: Path) -> dict[str, bytes]:
    """Every file in directory, by name, with its bytes: equal fingerprints mean nothing was changed."""
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kwargs)
