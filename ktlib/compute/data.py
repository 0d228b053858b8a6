"""EMNIST ByClass: read and validate the gzip idx files, and draw the paper's subsets from them."""
from __future__ import annotations

import functools
import gzip
import hashlib
import math
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ktlib import paths
from ktlib.paths import DATA_DIR_ENV

SPLITS = ("train", "test")
MAPPING_FILE = "emnist-byclass-mapping.txt"
IMAGE_MAGIC, LABEL_MAGIC = 0x00000803, 0x00000801


# LeCun et al. (1998): background -0.1 and ink 1.175, so inputs have mean ~0 and variance ~1.
BACKGROUND, INK = -0.1, 1.175
PAD = 2  # 28x28 EMNIST -> 32x32 LeNet-5 input


class DataError(ValueError):
    """A data file is missing or malformed, or a subset request cannot be met."""


def image_file(split: str) -> str:
    return f"emnist-byclass-{split}-images-idx3-ubyte.gz"


def label_file(split: str) -> str:
    return f"emnist-byclass-{split}-labels-idx1-ubyte.gz"


def data_files() -> list[str]:
    """Every file the loader reads, in a fixed order."""
    return [MAPPING_FILE] + [f(s) for s in SPLITS for f in (image_file, label_file)]


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The directory meant (ktlib.paths.data_dir); it must exist and be readable."""
    return readable(paths.data_dir(data_dir))


def readable(path: Path) -> Path:
    """path, when it is a directory that can be read; else one DataError that says how to get the data."""
    if not path.is_dir():
        what = "is not a directory" if path.exists() else "does not exist"
        raise DataError(
            f"EMNIST data directory {str(path)!r} {what}. Pass data_dir, set "
            f"${DATA_DIR_ENV}, or fetch the official files with `ktlib download --dest {path}`."
        )
    try:
        os.listdir(path)
    except OSError as e:
        raise DataError(f"EMNIST data directory {str(path)!r} cannot be read: {e.strerror or e}") from None
    return path


# ---------------------------------------------------------------- reading and validation

def _read_bytes(path: Path) -> bytes:
    """A data file's bytes, or one DataError naming it: missing, unreadable, or a directory."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e.strerror or e})") from None


def _read_gzip(path: Path) -> bytes:
    raw = _read_bytes(path)
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError
        raise DataError(f"{path}: not a readable gzip file ({e})") from None


def read_idx(path: Path, magic: int, ndim: int) -> np.ndarray:
    raw = _read_gzip(path)
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: {len(raw)} bytes is too short for an idx header")
    found = struct.unpack(">I", raw[:4])[0]
    if found != magic:
        raise DataError(f"{path}: bad magic number 0x{found:08x}, expected 0x{magic:08x}")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = header + math.prod(dims)  # Python ints: a huge header cannot overflow
    if len(raw) != expected:
        raise DataError(f"{path}: header says {dims} ({expected} bytes) but the file has {len(raw)} bytes")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def read_mapping(data_dir: Path) -> dict[int, str]:
    """Label -> character, from emnist-byclass-mapping.txt (`label ascii` per line)."""
    path = Path(data_dir) / MAPPING_FILE
    text = _read_bytes(path).decode("ascii", errors="replace")
    mapping: dict[int, str] = {}
    line_of: dict[str, int] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not all(p.isdigit() for p in parts):
            raise DataError(f"{path}:{lineno}: expected 'label ascii_code', got {line!r}")
        label, code = map(int, parts)
        if label > 255:  # an idx label file holds one byte per image
            raise DataError(f"{path}:{lineno}: label {label} cannot be an EMNIST label, which is one byte (0-255)")
        if label in mapping:
            raise DataError(f"{path}:{lineno}: label {label} appears twice")
        if not 32 < code < 127:
            raise DataError(f"{path}:{lineno}: {code} is not the code of a printable ASCII character")
        char = chr(code)
        if char in line_of:
            raise DataError(f"{path}:{lineno}: character {char!r} appears twice (also on line {line_of[char]})")
        mapping[label], line_of[char] = char, lineno
    if not mapping:
        raise DataError(f"{path}: no mapping lines")
    return mapping


@dataclass(frozen=True)
class Split:
    """One EMNIST split: upright uint8 images (N, 28, 28) and labels (N,)."""
    images: np.ndarray
    labels: np.ndarray


def read_split(data_dir: str | os.PathLike, split: str, mapping: dict[int, str] | None = None) -> Split:
    """Read and validate one split; images come back upright (EMNIST stores them transposed)."""
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; expected one of {SPLITS}")
    data_dir = Path(data_dir)
    mapping = mapping if mapping is not None else read_mapping(data_dir)
    ipath, lpath = data_dir / image_file(split), data_dir / label_file(split)
    images = read_idx(ipath, IMAGE_MAGIC, 3)
    labels = read_idx(lpath, LABEL_MAGIC, 1)
    if images.shape[1:] != (28, 28):
        raise DataError(f"{ipath}: images are {images.shape[1]}x{images.shape[2]}, expected 28x28")
    if len(images) != len(labels):
        raise DataError(f"{lpath}: {len(labels)} labels for {len(images)} images in {ipath.name}")
    unknown = np.setdiff1d(np.unique(labels), np.fromiter(mapping, dtype=np.int64))
    if unknown.size:
        raise DataError(f"{lpath}: labels {unknown.tolist()} are not in {MAPPING_FILE}")
    return Split(np.ascontiguousarray(images.transpose(0, 2, 1)), labels.astype(np.int64))


def to_input(images: np.ndarray) -> np.ndarray:
    """uint8 (N, 28, 28) -> float32 (N, 1, 32, 32): pad with background, scale to [-0.1, 1.175]."""
    x = np.pad(images, ((0, 0), (PAD, PAD), (PAD, PAD))).astype(np.float32)
    return (BACKGROUND + x * ((INK - BACKGROUND) / 255.0))[:, None]


def sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def checksums(data_dir: str | os.PathLike) -> dict[str, str]:
    """sha256 of every data file, for results provenance."""
    try:
        return {name: sha256(Path(data_dir) / name) for name in data_files()}
    except OSError as e:
        raise DataError(f"{e.filename}: cannot be read ({e.strerror or e})") from None


def differing(sums: dict[str, str], others: dict[str, str]) -> list[str]:
    """The data files whose sha256 sums differ between two sets of sums (or that only one of them has), sorted."""
    return sorted(name for name in set(sums) | set(others) if sums.get(name) != others.get(name))


# ---------------------------------------------------------------- the paper's subsets

@dataclass(frozen=True)
class Emnist:
    """Both splits plus the label -> character mapping."""
    train: Split
    test: Split
    mapping: dict[int, str]

    def label_of(self, char: str) -> int:
        for label, c in self.mapping.items():
            if c == char:
                return label
        raise DataError(f"unknown character {char!r}; EMNIST ByClass has {''.join(self.mapping.values())}")

    def counts(self, split: str) -> np.ndarray:
        labels = getattr(self, split).labels
        return np.bincount(labels, minlength=max(self.mapping) + 1)


def load(data_dir: str | os.PathLike | None = None) -> Emnist:
    return _read(resolve_data_dir(data_dir))


def _read(path: Path) -> Emnist:
    mapping = read_mapping(path)
    return Emnist(read_split(path, "train", mapping), read_split(path, "test", mapping), mapping)


def opened(data_dir: str | os.PathLike) -> tuple[Emnist, dict[str, str]]:
    """The data in a directory already resolved (as Config.data_dir is) and their sha256 sums, read once per
    process and directory (and again if a file changed)."""
    path = readable(Path(data_dir))
    data, sums = _opened(str(path), tuple(_stamp(path / name) for name in data_files()))
    return data, dict(sums)


def _stamp(path: Path) -> tuple | None:
    try:
        s = path.stat()
        return s.st_mtime_ns, s.st_size, s.st_ino
    except OSError:
        return None  # _read names the missing file


@functools.lru_cache(maxsize=2)
def _opened(path: str, stamps: tuple) -> tuple[Emnist, dict[str, str]]:
    return _read(Path(path)), checksums(path)


@dataclass(frozen=True)
class ClassSplit:
    source: tuple[int, ...]
    target: tuple[int, ...]


def eligible(data: Emnist, source_per_class: int = 400, target_train_per_class: int = 40,
             test_per_class: int = 50) -> tuple[list[int], list[int]]:
    """The classes that have enough images to be a source class (training images for the source net) and to be a
    target class (training images for the largest k, and test images)."""
    train_n, test_n = data.counts("train"), data.counts("test")
    source = [c for c in sorted(data.mapping) if train_n[c] >= source_per_class]
    target = [c for c in sorted(data.mapping) if train_n[c] >= target_train_per_class and test_n[c] >= test_per_class]
    return source, target


# A case twin of a target class: the same letter in the other case (c and C). Twins among the source classes may
# carry a target's shape into the source net whatever else it learns (the breadth study measures how much).
def twin(char: str) -> str | None:
    """The same letter in the other case, or None for a digit."""
    other = char.swapcase()
    return other if other != char else None


# A nesting order ranks the classes with the paper's 400 training images per class, whatever a source net of the
# order takes of each: the breadth study's sizes, and its control with fewer images per class, draw from one ranking.
ORDER_POOL_IMAGES = 400


def nesting_order(data: Emnist, seed: int) -> list[int]:
    """A random order of the classes that can source a paper-size net: the first m of it are a source of m classes,
    so the sources of one order nest."""
    pool, _ = eligible(data, ORDER_POOL_IMAGES)
    return np.random.default_rng(seed).permutation(pool).tolist()


def split_classes(data: Emnist, seed: int, n_classes: int = 20, source_per_class: int = 400,
                  target_train_per_class: int = 40, test_per_class: int = 50,
                  source_chars: str | None = None, target_chars: str | None = None,
                  source_size: int | None = None, order_seed: int | None = None) -> ClassSplit:
    """Choose disjoint source and target classes that have enough images: named, drawn by seed, or (the source
    classes) the first `source_size` of the nesting order drawn by `order_seed`. There are n_classes targets, and
    source_size (default n_classes) sources."""
    ok_source, ok_target = eligible(data, source_per_class, target_train_per_class, test_per_class)
    count = n_classes if source_size is None else source_size

    def explicit(chars: str, ok: list[int], role: str, need: str, wanted: int) -> list[int]:
        labels = [data.label_of(ch) for ch in chars]
        if len(set(labels)) != len(labels):
            raise DataError(f"{role} characters {chars!r} repeat a character")
        if len(labels) != wanted:
            raise DataError(f"{role} characters {chars!r}: need {wanted}, got {len(labels)}")
        bad = [data.mapping[c] for c in labels if c not in ok]
        if bad:
            raise DataError(f"{role} characters {bad} have too few images ({need})")
        return labels

    rng = np.random.default_rng(seed)
    if source_chars is not None:
        source = explicit(source_chars, ok_source, "source", f"need {source_per_class} training images", count)
    elif order_seed is not None:
        order = nesting_order(data, order_seed)
        if len(order) < count:
            raise DataError(f"only {len(order)} classes have {ORDER_POOL_IMAGES} training images; {count} source "
                            f"classes were asked for")
        source = sorted(order[:count])
        short = [data.mapping[c] for c in source if c not in ok_source]
        if short:
            raise DataError(f"source classes {short} have fewer than {source_per_class} training images")
    else:
        if len(ok_source) < count:
            raise DataError(f"only {len(ok_source)} classes have {source_per_class} training images; "
                            f"{count} source classes were asked for")
        source = sorted(rng.choice(ok_source, count, replace=False).tolist())
    if target_chars is not None:
        target = explicit(target_chars, ok_target, "target",
                          f"need {target_train_per_class} training and {test_per_class} test images", n_classes)
        overlap = sorted(set(source) & set(target))
        if overlap:
            raise DataError(f"source and target classes overlap in {[data.mapping[c] for c in overlap]}")
    else:
        pool = [c for c in ok_target if c not in source]
        if len(pool) < n_classes:
            raise DataError(f"only {len(pool)} classes besides the source classes have {target_train_per_class} "
                            f"training and {test_per_class} test images; {n_classes} target classes were asked for "
                            f"(sizes up to {target_train_per_class} images per class)")
        target = sorted(rng.choice(pool, n_classes, replace=False).tolist())
    return ClassSplit(tuple(source), tuple(target))


@dataclass(frozen=True)
class Subset:
    """Inputs ready for the net, labels as indices 0..C-1 into `classes`, and the images' indices."""
    x: np.ndarray
    y: np.ndarray
    index: np.ndarray


def draw(split: Split, classes: tuple[int, ...], per_class: int, seed: int | np.random.SeedSequence) -> Subset:
    """per_class images of each class, drawn without replacement; y indexes `classes`."""
    rng = np.random.default_rng(seed)
    picks = []
    for c in classes:
        pool = np.flatnonzero(split.labels == c)
        if per_class > len(pool):
            raise DataError(f"class {c}: {per_class} images asked for, {len(pool)} available")
        picks.append(np.sort(rng.choice(pool, per_class, replace=False)))
    index = np.concatenate(picks)
    remap = {c: i for i, c in enumerate(classes)}
    y = np.array([remap[int(c)] for c in split.labels[index]], dtype=np.int64)
    return Subset(to_input(split.images[index]), y, index)
