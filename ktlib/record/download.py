"""Fetch the official EMNIST archive and derive the record's subset from it, into a new directory that takes the
data directory's place whole (ktlib.record.store.new_directory)."""
from __future__ import annotations

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
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ktlib.compute.data import (
    IMAGE_MAGIC,
    LABEL_MAGIC,
    MAPPING_FILE,
    DataError,
    data_files,
    image_file,
    label_file,
    load,
    read_idx,
    read_mapping,
    sha256,
)
from ktlib.paths import DEFAULT_DATA_DIR
from ktlib.record.store import atomic_open, ktlib_parts, new_directory, remove_stale_parts

# The official archive (gzip.zip, about 560 MB) that NIST publishes; the md5 is the one torchvision pins.
EMNIST_URL = "https://biometrics.nist.gov/cs_links/EMNIST/gzip.zip"
EMNIST_MD5 = "58c8d27c78d21e728a6bc7b3cc06412e"
# How long a download may take in all: 560 MB at 80 kB/s. A server silent for READ_SECONDS ends it sooner, and so
# does one whose pace, once PACE_SECONDS have passed, would not bring the whole archive within the deadline.
DOWNLOAD_SECONDS, READ_SECONDS, PACE_SECONDS = 2 * 3600, 60, 60
ARCHIVE = "gzip.zip"



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
                load(new)  # every file whole and readable, before it takes dest's place
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


