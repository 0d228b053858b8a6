"""EMNIST ByClass: read and validate the gzip idx files, download them, draw the paper's subsets."""
from __future__ import annotations

import functools
import gzip
import hashlib
import http.client
import math
import os
import re
import shutil
import struct
import time
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from . import paths
from .paths import DATA_DIR_ENV, DEFAULT_DATA_DIR
from .store import atomic_open, ktlib_parts, new_directory, remove_stale_parts

SPLITS = ("train", "test")
MAPPING_FILE = "emnist-byclass-mapping.txt"
IMAGE_MAGIC, LABEL_MAGIC = 0x00000803, 0x00000801

# The official archive (gzip.zip, about 560 MB) that NIST publishes; the md5 is the one torchvision pins.
EMNIST_URL = "https://biometrics.nist.gov/cs_links/EMNIST/gzip.zip"
EMNIST_MD5 = "58c8d27c78d21e728a6bc7b3cc06412e"
# How long a download may take in all: 560 MB at 80 kB/s. A server silent for READ_SECONDS ends it sooner, and so
# does one whose pace, once PACE_SECONDS have passed, would not bring the whole archive within the deadline.
DOWNLOAD_SECONDS, READ_SECONDS, PACE_SECONDS = 2 * 3600, 60, 60
ARCHIVE = "gzip.zip"

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


# ---------------------------------------------------------------- download

def checked_sums(md5: str | None, sha256_hex: str | None) -> dict[str, str]:
    """The sums a download is checked against, by algorithm: at least one, each of the right form."""
    sums = {name: value for name, value in (("md5", md5), ("sha256", sha256_hex)) if value is not None}
    for name, value in sums.items():
        digits = 32 if name == "md5" else 64
        if not re.fullmatch(f"[0-9a-fA-F]{{{digits}}}", value):
            raise DataError(f"--{name} {value!r} is not an {name} sum ({digits} hex digits); a download is checked "
                            f"against the sum of the archive it fetches")
    if not sums:
        raise DataError("a download needs the md5 or sha256 sum of the archive, to check what arrives")
    return {name: value.lower() for name, value in sums.items()}


def fetch(url: str, dest: str | os.PathLike, md5: str | None = None, sha256_hex: str | None = None,
          progress: bool = True, deadline: float = DOWNLOAD_SECONDS) -> Path:
    """Download url to dest through a temporary file, verify its checksum, then rename into place. The download
    ends with one error if the server is silent for READ_SECONDS, or if it cannot finish within `deadline` seconds
    (said as soon as its pace shows it, after PACE_SECONDS)."""
    dest = Path(dest)
    remove_stale_parts(dest)  # a killed download leaves up to 560 MB behind
    hashers = {name: (hashlib.new(name), want) for name, want in checked_sums(md5, sha256_hex).items()}
    start = time.monotonic()
    try:
        with atomic_open(dest) as out, urllib.request.urlopen(url, timeout=READ_SECONDS) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, disable=not progress) as bar:
                got = 0
                while block := response.read1(1 << 20):  # what has arrived: a trickle cannot hold it
                    try:
                        out.write(block)
                    except OSError as e:  # here, not the download: a full disk, say
                        raise DataError(f"cannot write {dest}: {e.strerror or e}") from None
                    for h, _ in hashers.values():
                        h.update(block)
                    got += len(block)
                    bar.update(len(block))
                    _on_time(url, got, total, time.monotonic() - start, deadline)
            if total and got != total:  # the server closed early: say so, rather than blame the checksum
                raise DataError(f"{url}: download cut short, {got} of {total} bytes received")
            for name, (h, want) in hashers.items():
                if h.hexdigest() != want:
                    raise DataError(f"{url}: {name} {h.hexdigest()} does not match the expected {want}")
    except TimeoutError:
        raise DataError(f"{url}: the server sent nothing for {READ_SECONDS} s; download stopped") from None
    except (OSError, http.client.HTTPException) as e:  # URLError is an OSError
        raise DataError(f"{url}: download failed ({e})") from None
    return dest


def _on_time(url: str, got: int, total: int | None, elapsed: float, deadline: float) -> None:
    """Stop a download that has run past its deadline, or whose pace so far would take it past."""
    late = elapsed > deadline
    if total and elapsed > PACE_SECONDS:
        late |= elapsed * total / got > deadline
    if late:
        pace = got / max(elapsed, 1e-9)
        raise DataError(f"{url}: {got:,} of {f'{total:,}' if total else 'an unknown number of'} bytes in "
                        f"{elapsed:.0f} s, at "
                        f"{pace / 1e3:,.1f} kB/s: the download cannot finish within its deadline of {deadline:g} s "
                        f"(--deadline); stopped")


def extract_byclass(archive: str | os.PathLike, dest: str | os.PathLike, names: list[str] | None = None) -> list[Path]:
    """Extract only the ByClass files (and mapping) from EMNIST's gzip.zip, or only `names` of them, atomically."""
    dest = Path(dest)
    wanted = set(names or data_files())
    out = []
    try:
        with zipfile.ZipFile(archive) as z:
            members = {Path(m).name: m for m in z.namelist() if Path(m).name in wanted}
            missing = wanted - members.keys()
            if missing:
                raise DataError(f"{archive}: archive lacks {sorted(missing)}")
            for name, member in sorted(members.items()):
                remove_stale_parts(dest / name)
                with atomic_open(dest / name) as f, z.open(member) as src:
                    shutil.copyfileobj(src, f)
                out.append(dest / name)
    except zipfile.BadZipFile as e:
        raise DataError(f"{archive}: not a zip archive ({e})") from None
    return out


FULL_DATA_DIR = Path("data/emnist-full")  # the official files as they are: another experiment than the record's


def only_ours(dest: Path) -> None:
    """Refuse a destination that holds anything a download does not write (the data files, the archive, and the
    temporary files ktlib names), since a download replaces the whole directory."""
    ours = {*data_files(), ARCHIVE} | {p.name for name in (*data_files(), ARCHIVE) for p in ktlib_parts(dest, name)} \
        if dest.is_dir() else set()
    others = sorted(p.name for p in dest.iterdir() if p.name not in ours) if dest.is_dir() else []
    if dest.exists() and not dest.is_dir() or others:
        raise DataError(f"{dest} holds {', '.join(others) or 'a file'}, which a download does not write; it replaces "
                        f"the whole directory, so give a new or empty one (--dest)")


def download(dest: str | os.PathLike | None = None, url: str = EMNIST_URL, md5: str | None = EMNIST_MD5,
             sha256_hex: str | None = None, keep_archive: bool = False, progress: bool = True,
             full: bool = False, deadline: float = DOWNLOAD_SECONDS) -> Path:
    """Fetch the official EMNIST archive, check it, and leave in dest the record's subset of its ByClass test split
    (derive_subset; an error if the files differ from the published sums), or with `full` the official ByClass
    files as they are, about 700,000 training images: a different experiment, whose numbers are not the record's.

    Nothing is written into dest until everything derived has passed its checks: the archive is fetched and the
    files derived in a new directory beside dest, which then takes dest's place in one step (store.new_directory).
    A failure at any point leaves dest as it was. dest may hold only what a download writes."""
    dest = Path(dest or (FULL_DATA_DIR if full else DEFAULT_DATA_DIR))
    checked_sums(md5, sha256_hex)  # before any byte is fetched
    if not 0 < deadline < math.inf:
        raise DataError(f"--deadline {deadline!r}: the seconds a download may take must be a number > 0")
    only_ours(dest)
    try:
        with new_directory(dest) as new:
            archive = fetch(url, new / ARCHIVE, md5=md5, sha256_hex=sha256_hex, progress=progress, deadline=deadline)
            if full:
                extract_byclass(archive, new)
                _read(new)  # every file whole and readable, before it takes dest's place
            else:
                official = new / ".official"
                extract_byclass(archive, official, [MAPPING_FILE, image_file("test"), label_file("test")])
                differ = derive_subset(official, new)
                shutil.rmtree(official)
                if differ:
                    raise DataError(f"{url}: the subset derived from it is not the record's data ({', '.join(differ)} "
                                    f"differ from the sha256 sums published with the record's subset)")
            read_mapping(new)  # fail now, not at the first experiment, if the mapping is unusable
            if not keep_archive:
                archive.unlink()
            only_ours(dest)  # again: the download may have taken an hour
    except OSError as e:  # a full disk, a directory that cannot be written
        raise DataError(f"cannot write {e.filename or dest}: {e.strerror or e}; nothing was written to {dest}") \
            from None
    except DataError as e:
        raise DataError(f"{e}; nothing was written to {dest}") from None
    return dest


# ---------------------------------------------------------------- the record's subset of the official files

# The record was made on a stratified subset of the official ByClass *test* split, drawn by this recipe (the
# subset's own README): numpy.random.default_rng(SUBSET_SEED); for each class in label order, a permutation of its
# images; the first SUBSET_TEST are the test images and the next up to SUBSET_TRAIN the training images; each set
# sorted by its index in the official split. Files are gzip level 9 with mtime 0 and no file name.
SUBSET_SEED, SUBSET_TEST, SUBSET_TRAIN = 0, 200, 1000
SUBSET_SHA256 = {  # as published with the subset
    "emnist-byclass-train-images-idx3-ubyte.gz": "b00641e9af495b185e8e65c82d626d6fab62771e72509c40765d5ecabd155412",
    "emnist-byclass-train-labels-idx1-ubyte.gz": "ca8038b02ad445254a4c75788bffea6ab31d59bc066058e602f43a8c5f94cba3",
    "emnist-byclass-test-images-idx3-ubyte.gz": "4ace59fdb601e865b6f80ee5dc040ecfbba0decced1e8dbf11bba74db7e377e9",
    "emnist-byclass-test-labels-idx1-ubyte.gz": "759adb9bc01ebe0f20d8ee62dec46a0f207c09fcff4b1036167c8f3808a903b4",
    "emnist-byclass-mapping.txt": "68fa9091ed325830418b5a8d732f32316e54a480b9f8994a161abb4eddd0d078",
}


def subset_indices(labels: np.ndarray, classes: int, seed: int = SUBSET_SEED, test: int = SUBSET_TEST,
                   train: int = SUBSET_TRAIN) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) indices into the official test split, by the subset's recipe."""
    rng = np.random.default_rng(seed)
    train_idx, test_idx = [], []
    for c in range(classes):
        perm = rng.permutation(np.flatnonzero(labels == c))
        test_idx.append(perm[:test])
        train_idx.append(perm[test:test + train])
    return np.sort(np.concatenate(train_idx)), np.sort(np.concatenate(test_idx))


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """An idx file (images: n x 28 x 28 uint8, or labels: n uint8), gzip level 9 with mtime 0 and no file name,
    so that the same arrays always give the same bytes; written atomically."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">I", IMAGE_MAGIC if array.ndim == 3 else LABEL_MAGIC) + b"".join(
        struct.pack(">I", d) for d in array.shape)
    with atomic_open(Path(path)) as f, gzip.GzipFile(filename="", mode="wb", compresslevel=9, fileobj=f,
                                                      mtime=0) as z:
        z.write(header + array.tobytes())


def derive_subset(official: str | os.PathLike, dest: str | os.PathLike) -> list[str]:
    """Write the record's subset into dest from the official ByClass files in `official` (their test split and
    mapping), and return the files whose sha256 differs from the published one (empty: the record's data)."""
    official, dest = Path(official), Path(dest)
    classes = len(read_mapping(official))
    images = read_idx(official / image_file("test"), IMAGE_MAGIC, 3)  # as stored: EMNIST's transposed bytes
    labels = read_idx(official / label_file("test"), LABEL_MAGIC, 1)
    if len(images) != len(labels):
        raise DataError(f"{official / label_file('test')}: {len(labels)} labels for {len(images)} images")
    train, test = subset_indices(labels, classes)
    for name, idx in (("train", train), ("test", test)):
        write_idx(dest / image_file(name), images[idx])
        write_idx(dest / label_file(name), labels[idx])
    if official != dest:
        with atomic_open(dest / MAPPING_FILE) as f:
            f.write((official / MAPPING_FILE).read_bytes())
    return [name for name, digest in SUBSET_SHA256.items() if sha256(dest / name) != digest]


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
