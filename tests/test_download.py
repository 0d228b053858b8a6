"""`ktlib download`: the official archive fetched and checked, the record's subset derived from it and checked
against its published sums, and nothing written into the destination until everything has passed: a failed or
refused download leaves the data directory byte for byte as it was."""
import hashlib
import http.server
import io
import json
import shutil
import sys
import threading
import time
import zipfile
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from conftest import on_a_small_disk, run, write_emnist

from ktlib import cli
from ktlib.compute import data as D
from ktlib.record import download as DL


def _official_like_archive(src: Path) -> bytes:
    """A zip laid out like NIST's gzip.zip: gzip/<file> for ByClass and other splits."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name in D.data_files():
            z.write(src / name, f"gzip/{name}")
        z.writestr("gzip/emnist-balanced-mapping.txt", "0 48\n")
    return buf.getvalue()


class QuietFiles(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@contextmanager
def loopback(handler):
    """Serve `handler` on 127.0.0.1 in a thread; yields the base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def served(tiny_dir, tmp_path):
    """The archive, served over loopback HTTP; yields (url, bytes)."""
    site = tmp_path / "site"
    site.mkdir()
    archive = _official_like_archive(tiny_dir)
    (site / "gzip.zip").write_bytes(archive)
    with loopback(partial(QuietFiles, directory=str(site))) as base:
        yield f"{base}/gzip.zip", archive


def test_the_full_download_verifies_and_extracts_only_byclass(served, tiny_dir, tmp_path):
    url, archive = served
    dest = tmp_path / "out"
    DL.download(dest, url=url, md5=hashlib.md5(archive).hexdigest(), progress=False, full=True)
    assert sorted(p.name for p in dest.iterdir()) == sorted(D.data_files())
    for name in D.data_files():
        assert (dest / name).read_bytes() == (tiny_dir / name).read_bytes()
    assert len(D.load(dest).train.labels) == 62 * 12


def test_a_download_killed_earlier_leaves_no_temporary_file_after_the_next(served, tmp_path):
    url, archive = served
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / ".gzip.zip.4242.0badcafe.part").write_bytes(b"half an archive")
    (dest / f".{D.image_file('train')}.4242.0badcafe.part").write_bytes(b"half a file")
    DL.download(dest, url=url, md5=hashlib.md5(archive).hexdigest(), progress=False, full=True)
    assert sorted(p.name for p in dest.iterdir()) == sorted(D.data_files())


def test_download_from_a_file_url_with_sha256(tiny_dir, tmp_path):
    archive = tmp_path / "gzip.zip"
    archive.write_bytes(_official_like_archive(tiny_dir))
    dest = DL.download(tmp_path / "out", url=archive.as_uri(), md5=None,
                      sha256_hex=hashlib.sha256(archive.read_bytes()).hexdigest(), progress=False, full=True)
    assert D.checksums(dest) == D.checksums(tiny_dir)


def test_the_default_download_derives_the_subset_and_refuses_one_unlike_the_records(served, tiny_dir, tmp_path,
                                                                                    monkeypatch):
    url, archive = served
    dest = tmp_path / "out"
    with pytest.raises(D.DataError, match=rf"{D.image_file('train')}.* differ from the sha256 sums published with the "
                                          rf"record's subset\); nothing was written to {dest}"):
        DL.download(dest, url=url, md5=hashlib.md5(archive).hexdigest(), progress=False)
    assert not dest.exists() and not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]
    DL.derive_subset(tiny_dir, tmp_path / "derived")
    monkeypatch.setattr(DL, "SUBSET_SHA256", D.checksums(tmp_path / "derived"))  # as if these were the published sums
    DL.download(dest, url=url, md5=hashlib.md5(archive).hexdigest(), progress=False)
    assert D.checksums(dest) == D.checksums(tmp_path / "derived") and len(list(dest.iterdir())) == 5
    derived, tiny = D.load(dest), D.load(tiny_dir)
    assert len(derived.test.labels) == len(tiny.test.labels) and len(derived.train.labels) == 0  # < 200 per class


def official_split(seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic official test split: 62 classes of 150 to 260 images, in random order, random pixels."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.repeat(np.arange(62), rng.integers(150, 260, 62))).astype(np.uint8)
    return rng.integers(0, 256, (len(labels), 28, 28), dtype=np.uint8), labels


def write_official(where: Path, images: np.ndarray, labels: np.ndarray, mapping: Path) -> Path:
    DL.write_idx(where / D.image_file("test"), images)
    DL.write_idx(where / D.label_file("test"), labels)
    shutil.copyfile(mapping, where / D.MAPPING_FILE)
    return where


def test_the_subset_is_the_same_bytes_from_the_same_split_and_a_changed_pixel_is_caught(tiny_dir, tmp_path,
                                                                                       monkeypatch):
    images, labels = official_split()
    official = write_official(tmp_path / "official", images, labels, tiny_dir / D.MAPPING_FILE)
    DL.derive_subset(official, tmp_path / "a")
    published = D.checksums(tmp_path / "a")
    monkeypatch.setattr(DL, "SUBSET_SHA256", published)  # as if these were the published sums
    assert DL.derive_subset(official, tmp_path / "b") == []
    train, _ = DL.subset_indices(labels, 62)
    images[train[0], 3, 4] ^= 1  # one pixel of one training image
    changed = write_official(tmp_path / "changed", images, labels, tiny_dir / D.MAPPING_FILE)
    assert DL.derive_subset(changed, tmp_path / "c") == [D.image_file("train")]


def test_the_recipe_gives_the_subsets_documented_counts_per_class():
    source = {"0": 5778, "A": 1062, "B": 648, "j": 317, "f": 400}  # from the subset's README
    labels = np.repeat(np.arange(len(source)), list(source.values()))
    train, test = DL.subset_indices(labels, len(source))
    assert np.bincount(labels[train]).tolist() == [1000, 862, 448, 117, 200]
    assert np.bincount(labels[test]).tolist() == [200] * 5
    assert not set(train) & set(test)


def test_download_with_a_wrong_checksum_leaves_nothing_behind(served, tmp_path):
    url, _ = served
    dest = tmp_path / "out"
    with pytest.raises(D.DataError, match="md5 .* does not match the expected 0{32}"):
        DL.download(dest, url=url, md5="0" * 32, progress=False)
    assert not dest.exists() and not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]


def test_a_download_cut_short_is_a_clear_error_and_leaves_nothing_behind(tmp_path):
    class CutShort(QuietFiles):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.write(b"PK" * 50)  # then the connection closes, 99,900 bytes early

    with loopback(CutShort) as base, \
            pytest.raises(D.DataError, match="download cut short, 100 of 100000 bytes received"):
        DL.download(tmp_path / "out", url=f"{base}/gzip.zip", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_download_reports_an_unreachable_url(tmp_path):
    with pytest.raises(D.DataError, match="download failed"):
        DL.download(tmp_path / "out", url=(tmp_path / "absent.zip").as_uri(), progress=False)


def test_archive_without_byclass_files_is_rejected(tmp_path):
    archive = tmp_path / "gzip.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("gzip/emnist-digits-mapping.txt", "0 48\n")
    with pytest.raises(D.DataError, match="archive lacks"):
        DL.extract_byclass(archive, tmp_path / "out")


# --------------------------------------------------------------------------- a good data directory is never damaged


def sums(directory: Path) -> dict[str, str]:
    """The sha256 of every file under directory's parent, by path: equal sums mean the data directory is as it was
    and nothing was left beside it."""
    return {str(p.relative_to(directory.parent)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.parent.rglob("*")) if p.is_file()}


def archive_of(src: Path, change=None) -> bytes:
    """An official-like archive of the files in src, after change(files), a dict of their bytes by name."""
    files = {name: (src / name).read_bytes() for name in D.data_files()}
    if change:
        change(files)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, content in files.items():
            z.writestr(f"gzip/{name}", content)
    return buf.getvalue()


def cut(name: str):
    def change(files: dict) -> None:
        files[name] = files[name][: len(files[name]) // 2]
    return change


FAILURES = {  # the archive served, the md5 given, and what the download is asked for; what the error says
    "a wrong md5": (lambda good: archive_of(good), lambda archive: "0" * 32, False, "does not match the expected"),
    "another archive, whose subset is not the record's": (
        lambda good: archive_of(write_emnist(good.parent / "another", {"train": 3, "test": 3}, seed=5)),
        lambda archive: hashlib.md5(archive).hexdigest(), False, "is not the record's data"),
    "a full archive with a damaged image file": (lambda good: archive_of(good, cut(D.image_file("train"))),
                                                 lambda archive: hashlib.md5(archive).hexdigest(), True,
                                                 "not a readable gzip file"),
}


@pytest.mark.parametrize("case", FAILURES)
def test_a_failed_download_leaves_a_good_data_directory_as_it_was(tmp_path, case):
    make, md5, full, says = FAILURES[case]
    good = write_emnist(tmp_path / "data" / "emnist")
    site = tmp_path / "site"
    site.mkdir()
    archive = make(good)
    (site / "gzip.zip").write_bytes(archive)
    before = sums(good)
    with pytest.raises(D.DataError, match=says):
        DL.download(good, url=(site / "gzip.zip").as_uri(), md5=md5(archive), progress=False, full=full)
    assert sums(good) == before


def test_a_download_into_a_good_data_directory_replaces_it_whole(tmp_path, tiny_dir):
    dest = write_emnist(tmp_path / "data" / "emnist", seed=1)  # good data, of another draw
    archive = tmp_path / "gzip.zip"
    archive.write_bytes(archive_of(tiny_dir))
    DL.download(dest, url=archive.as_uri(), md5=hashlib.md5(archive.read_bytes()).hexdigest(), progress=False,
               full=True)
    assert D.checksums(dest) == D.checksums(tiny_dir)
    assert sorted(p.name for p in dest.iterdir()) == sorted(D.data_files())
    assert [p.name for p in dest.parent.iterdir()] == ["emnist"]


def test_a_directory_holding_other_files_is_refused_before_any_byte_is_fetched(tmp_path):
    dest = write_emnist(tmp_path / "data" / "emnist")
    (dest / "README.md").write_text("my notes")
    before = sums(dest)
    with pytest.raises(D.DataError, match=f"{dest} holds README.md, which a download does not write"):
        DL.download(dest, url="http://127.0.0.1:9/never-asked", progress=False)
    assert sums(dest) == before


@pytest.mark.parametrize("flags, says", [
    (["--md5", ""], "--md5 '' is not an md5 sum (32 hex digits)"),
    (["--md5", "abc"], "--md5 'abc' is not an md5 sum (32 hex digits)"),
    (["--sha256", "0" * 63], "is not an sha256 sum (64 hex digits)"),
    (["--deadline", "0"], "--deadline 0.0: the seconds a download may take must be a number > 0"),
    (["--deadline", "nan"], "--deadline nan"),
])
def test_a_download_without_a_sum_to_check_or_a_deadline_is_refused_before_any_byte_is_fetched(tmp_path, capsys,
                                                                                             flags, says):
    dest = tmp_path / "out"
    assert cli.main(["download", "--dest", str(dest), "--url", "http://127.0.0.1:9/never-asked", *flags]) == 2
    assert says in capsys.readouterr().err and not dest.exists()


class Trickle(http.server.BaseHTTPRequestHandler):
    """A byte every tenth of a second, for ten seconds at most; with or without saying how many are coming."""
    length = True

    def do_GET(self):
        self.send_response(200)
        if self.length:
            self.send_header("Content-Length", "1000000")
        self.end_headers()
        try:
            for _ in range(100):
                self.wfile.write(b"P")
                self.wfile.flush()
                time.sleep(0.1)
        except OSError:  # the client gave up
            pass

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("length", [True, False], ids=["with-length", "without"])
def test_a_trickling_server_ends_the_download_with_one_error_by_its_deadline(tmp_path, monkeypatch, length):
    monkeypatch.setattr(DL, "PACE_SECONDS", 0.5)  # with a length, the pace shows it sooner than the deadline
    start = time.monotonic()
    with loopback(type("T", (Trickle,), {"length": length})) as base, \
            pytest.raises(D.DataError, match="the download cannot finish within its deadline of 2 s"):
        DL.download(tmp_path / "out", url=f"{base}/gzip.zip", progress=False, deadline=2)
    assert time.monotonic() - start < (1.5 if length else 4)
    assert list(tmp_path.iterdir()) == []


class Silent(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.end_headers()
        self.wfile.flush()
        time.sleep(3)

    def log_message(self, *args):
        pass


def test_a_server_that_goes_silent_ends_the_download_with_one_error(tmp_path, monkeypatch):
    monkeypatch.setattr(DL, "READ_SECONDS", 0.5)
    with loopback(Silent) as base, pytest.raises(D.DataError, match="the server sent nothing for 0.5 s"):
        DL.download(tmp_path / "out", url=f"{base}/gzip.zip", progress=False)
    assert list(tmp_path.iterdir()) == []


SMALL_DISK = """
import hashlib, json, os, shutil, sys
from pathlib import Path
from ktlib import cli
good, disk, archive = map(Path, sys.argv[1:4])
dest = disk / "emnist"
shutil.copytree(good, dest)
sums = lambda: {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(disk.rglob("*")) if p.is_file()}
before = sums()
sha = hashlib.sha256(archive.read_bytes()).hexdigest()
rc = cli.main(["download", "--full", "--dest", str(dest), "--url", archive.as_uri(), "--sha256", sha])
print(json.dumps({"rc": rc, "same": sums() == before, "left": sorted(os.listdir(disk))}))
"""


def test_a_full_disk_leaves_the_data_directory_as_it_was(tmp_path, tiny_dir):
    good = write_emnist(tmp_path / "good", seed=1)
    archive = tmp_path / "gzip.zip"
    archive.write_bytes(archive_of(tiny_dir))
    size = sum(p.stat().st_size for p in good.iterdir()) // 1024 + 5 * 4 + 8  # the data fit, the archive beside not
    disk = tmp_path / "disk"
    out = run(on_a_small_disk([sys.executable, "-c", SMALL_DISK, str(good), str(disk), str(archive)], disk,
                              size=f"{size}k"))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"rc": 2, "same": True, "left": ["emnist"]}
    assert f"No space left on device; nothing was written to {disk / 'emnist'}" in out.stderr


def test_a_symbolic_link_is_followed_and_the_directory_it_names_is_the_one_replaced(tmp_path, tiny_dir):
    real = write_emnist(tmp_path / "real", seed=1)
    link = tmp_path / "link"
    link.symlink_to(real)
    archive = tmp_path / "gzip.zip"
    archive.write_bytes(archive_of(tiny_dir))
    DL.download(link, url=archive.as_uri(), md5=hashlib.md5(archive.read_bytes()).hexdigest(), progress=False,
               full=True)
    assert link.is_symlink() and link.resolve() == real and D.checksums(real) == D.checksums(tiny_dir)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emnist", "gzip.zip", "link", "real"]


def test_a_file_put_in_the_destination_during_the_download_is_kept_and_the_download_refused(tmp_path, tiny_dir,
                                                                                           monkeypatch):
    dest = write_emnist(tmp_path / "data" / "emnist", seed=1)
    archive = tmp_path / "gzip.zip"
    archive.write_bytes(archive_of(tiny_dir))
    fetch = DL.fetch

    def fetch_while_someone_writes(*args, **kwargs):
        (dest / "notes.txt").write_text("written while the archive came")
        return fetch(*args, **kwargs)

    monkeypatch.setattr(DL, "fetch", fetch_while_someone_writes)
    before = {name: (dest / name).read_bytes() for name in D.data_files()}
    with pytest.raises(D.DataError, match=f"{dest} holds notes.txt, which a download does not write"):
        DL.download(dest, url=archive.as_uri(), md5=hashlib.md5(archive.read_bytes()).hexdigest(), progress=False,
                   full=True)
    assert {name: (dest / name).read_bytes() for name in D.data_files()} == before
    assert (dest / "notes.txt").exists() and [p.name for p in dest.parent.iterdir()] == ["emnist"]


def test_only_the_temporary_files_ktlib_names_are_taken_for_its_own(tmp_path):
    dest = write_emnist(tmp_path / "data" / "emnist")
    (dest / "my-annotations.part").write_text("mine")
    with pytest.raises(D.DataError, match="holds my-annotations.part, which a download does not write"):
        DL.download(dest, url="http://127.0.0.1:9/never-asked", progress=False)


def test_the_cli_checks_the_sums_given_and_the_official_md5_only_when_none_is(tmp_path, tiny_dir, capsys):
    archive = tmp_path / "gzip.zip"
    archive.write_bytes(archive_of(tiny_dir))
    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    url = ["--url", archive.as_uri(), "--full"]
    assert cli.main(["download", "--dest", str(tmp_path / "a"), *url]) == 2  # the official archive's md5, by default
    assert f"does not match the expected {DL.EMNIST_MD5}" in capsys.readouterr().err
    assert cli.main(["download", "--dest", str(tmp_path / "b"), *url, "--sha256", sha]) == 0
    assert D.checksums(tmp_path / "b") == D.checksums(tiny_dir)
