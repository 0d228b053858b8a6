import gzip
import hashlib
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from conftest import CHARS, as_ordinary_user, dry_run, idx_bytes, ktlib_cli, run, write_emnist, write_gz, write_mapping

from ktlib.compute import data as D
from ktlib.record import download as DL

# --------------------------------------------------------------------------- reading


def test_reads_both_splits_with_counts_and_mapping(tiny_dir):
    data = D.load(tiny_dir)
    assert data.train.images.shape == (62 * 12, 28, 28) and data.test.images.shape == (62 * 12, 28, 28)
    assert data.train.labels.shape == (62 * 12,)
    assert "".join(data.mapping[i] for i in range(62)) == CHARS
    assert (data.counts("train") == 12).all() and (data.counts("test") == 12).all()


def test_images_come_back_upright(tmp_path):
    upright = np.zeros((1, 28, 28), np.uint8)
    upright[0, 3, :] = 255  # a horizontal stroke near the top
    write_mapping(tmp_path / D.MAPPING_FILE)
    write_gz(tmp_path / D.image_file("test"), idx_bytes(upright.transpose(0, 2, 1), D.IMAGE_MAGIC))
    write_gz(tmp_path / D.label_file("test"), idx_bytes(np.array([0]), D.LABEL_MAGIC))
    np.testing.assert_array_equal(D.read_split(tmp_path, "test").images, upright)


def test_input_is_padded_to_32_with_background_and_scaled():
    images = np.zeros((2, 28, 28), np.uint8)
    images[:, 10, 10] = 255
    x = D.to_input(images)
    assert x.shape == (2, 1, 32, 32) and x.dtype == np.float32
    assert x[0, 0, 0, 0] == pytest.approx(D.BACKGROUND)  # the padding is background
    assert x[0, 0, 12, 12] == pytest.approx(D.INK)       # pixel (10, 10) moves by PAD=2
    assert x.min() == pytest.approx(-0.1) and x.max() == pytest.approx(1.175)


def test_data_dir_comes_from_the_environment(tiny_dir, monkeypatch):
    monkeypatch.setenv(D.DATA_DIR_ENV, str(tiny_dir))
    assert D.resolve_data_dir() == tiny_dir
    assert D.resolve_data_dir(tiny_dir / "..") != tiny_dir  # an explicit directory wins


def test_missing_data_dir_names_the_variable_and_the_download(tmp_path, monkeypatch):
    monkeypatch.delenv(D.DATA_DIR_ENV, raising=False)
    with pytest.raises(D.DataError, match=rf"does not exist.*\${D.DATA_DIR_ENV}.*ktlib download"):
        D.resolve_data_dir(tmp_path / "nowhere")


def _corrupt(kind: str, root: Path) -> tuple[str, str]:
    """Damage one file of a valid directory; returns (file name, expected message)."""
    images, labels = root / D.image_file("train"), root / D.label_file("train")
    raw = gzip.decompress(images.read_bytes())
    if kind == "missing file":
        labels.unlink()
        return labels.name, "file not found"
    if kind == "truncated gzip":
        images.write_bytes(images.read_bytes()[:-100])
        return images.name, "not a readable gzip file"
    if kind == "not gzip":
        images.write_bytes(raw)
        return images.name, "not a readable gzip file"
    if kind == "bad magic":
        write_gz(images, b"\x00\x00\x08\x01" + raw[4:])
        return images.name, "bad magic number 0x00000801, expected 0x00000803"
    if kind == "short payload":
        write_gz(images, raw[:-5])
        return images.name, "header says"
    if kind == "short header":
        write_gz(images, raw[:9])
        return images.name, "too short for an idx header"
    if kind == "count mismatch":
        lab = gzip.decompress(labels.read_bytes())
        write_gz(labels, idx_bytes(np.frombuffer(lab[8:-1], np.uint8), D.LABEL_MAGIC))
        return labels.name, "743 labels for 744 images"
    if kind == "wrong size":
        write_gz(images, idx_bytes(np.zeros((62 * 12, 27, 28)), D.IMAGE_MAGIC))
        return images.name, "27x28, expected 28x28"
    if kind == "label outside mapping":
        write_mapping(root / D.MAPPING_FILE, CHARS[:61])
        return labels.name, r"labels \[61\] are not in"
    if kind == "bad mapping line":
        (root / D.MAPPING_FILE).write_text("0 48\nzero 49\n")
        return D.MAPPING_FILE + ":2", "expected 'label ascii_code'"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["missing file", "truncated gzip", "not gzip", "bad magic", "short payload",
                                  "short header", "count mismatch", "wrong size", "label outside mapping",
                                  "bad mapping line"])
def test_malformed_files_raise_one_clear_error_naming_the_file(tiny_dir, kind):
    name, message = _corrupt(kind, tiny_dir)
    with pytest.raises(D.DataError, match=message) as err:
        D.load(tiny_dir)
    assert name in str(err.value)


def test_checksums_cover_every_file(tiny_dir):
    sums = D.checksums(tiny_dir)
    assert list(sums) == D.data_files()
    assert sums[D.MAPPING_FILE] == hashlib.sha256((tiny_dir / D.MAPPING_FILE).read_bytes()).hexdigest()


# --------------------------------------------------------------------------- subsets


@pytest.fixture
def uneven(tmp_path):
    """Train counts: 12 per class except 'j' (3) and 'k' (5): too few for source duty at 10."""
    root = write_emnist(tmp_path / "emnist")
    raw = gzip.decompress((root / D.label_file("train")).read_bytes())
    labels = np.frombuffer(raw[8:], np.uint8).copy()
    for char, keep in (("j", 3), ("k", 5)):
        where = np.flatnonzero(labels == CHARS.index(char))
        labels[where[keep:]] = 0  # relabel the rest as '0'
    write_gz(root / D.label_file("train"), idx_bytes(labels, D.LABEL_MAGIC))
    return D.load(root)


SMALL = dict(source_per_class=10, target_train_per_class=4, test_per_class=5)


def test_class_split_is_disjoint_seeded_and_respects_availability(uneven):
    a, b, c = (D.split_classes(uneven, seed=s, **SMALL) for s in (1, 1, 2))
    assert a == b and a != c
    assert len(a.source) == len(a.target) == 20 and not set(a.source) & set(a.target)
    for seed in range(20):
        s = D.split_classes(uneven, seed=seed, **SMALL)
        assert CHARS.index("j") not in s.source + s.target  # 3 < 4 training images
        assert CHARS.index("k") not in s.source             # 5 < 10 training images


def test_explicit_characters_are_honoured(uneven):
    s = D.split_classes(uneven, seed=0, source_chars="0123456789ABCDEFGHIJ", target_chars="abcdefghiklmnopqrstu",
                        **SMALL)
    assert [uneven.mapping[c] for c in s.source] == list("0123456789ABCDEFGHIJ")
    assert [uneven.mapping[c] for c in s.target] == list("abcdefghiklmnopqrstu")


@pytest.mark.parametrize("kwargs, message", [
    (dict(source_chars="0123456789ABCDEFGHI?"), r"unknown character '\?'"),
    (dict(source_chars="0123456789ABCDEFGHI"), "need 20, got 19"),
    (dict(source_chars="0123456789ABCDEFGHII"), "repeat a character"),
    (dict(source_chars="0123456789ABCDEFGHIk"), r"\['k'\] have too few images \(need 10 training"),
    (dict(source_chars="0123456789ABCDEFGHIJ", target_chars="ABCDEFGHIJabcdefghik"), "overlap in"),
    (dict(target_chars="abcdefghijklmnopqrst"), r"\['j'\] have too few images \(need 4 training"),
    (dict(source_per_class=29), "only 0 classes have 29 training images"),
    (dict(n_classes=31), "only 30 classes besides the source classes have 4 training and 5 test images; 31 target"),
])
def test_impossible_class_requests_are_clear_errors(uneven, kwargs, message):
    with pytest.raises(D.DataError, match=message):
        D.split_classes(uneven, seed=0, **{**SMALL, **kwargs})


def test_draw_takes_k_distinct_images_per_class_by_seed(tiny_dir):
    data = D.load(tiny_dir)
    classes = (3, 10, 40)
    a, b = D.draw(data.train, classes, 5, seed=7), D.draw(data.train, classes, 5, seed=7)
    np.testing.assert_array_equal(a.index, b.index)
    assert len(set(a.index.tolist())) == 15
    assert np.bincount(a.y).tolist() == [5, 5, 5]
    np.testing.assert_array_equal(data.train.labels[a.index], np.repeat(classes, 5))
    assert a.x.shape == (15, 1, 32, 32)
    assert not np.array_equal(D.draw(data.train, classes, 5, seed=8).index, a.index)


def test_draw_more_than_available_is_a_clear_error(tiny_dir):
    data = D.load(tiny_dir)
    with pytest.raises(D.DataError, match="class 3: 13 images asked for, 12 available"):
        D.draw(data.train, (3,), 13, seed=0)


# --------------------------------------------------------------------------- the shared subset




def test_the_idx_writer_gives_the_published_subset_byte_for_byte(real_dir, tmp_path):
    for split in D.SPLITS:
        DL.write_idx(tmp_path / D.image_file(split), D.read_idx(real_dir / D.image_file(split), D.IMAGE_MAGIC, 3))
        DL.write_idx(tmp_path / D.label_file(split), D.read_idx(real_dir / D.label_file(split), D.LABEL_MAGIC, 1))
        for name in (D.image_file(split), D.label_file(split)):
            assert D.sha256(tmp_path / name) == DL.SUBSET_SHA256[name]


def test_real_subset_loads_with_its_documented_counts(real_dir):
    assert D.checksums(real_dir) == DL.SUBSET_SHA256
    data = D.load(real_dir)
    assert len(data.train.labels) == 40287 and len(data.test.labels) == 12400
    assert data.counts("train")[data.label_of("j")] == 117 and (data.counts("test") == 200).all()
    split = D.split_classes(data, seed=0)
    assert all(data.counts("train")[c] >= 400 for c in split.source)


def test_real_subset_images_are_upright(real_dir):
    """An upright '1' is taller than wide; stored transposed it would be wider than tall."""
    data = D.load(real_dir)
    ones = data.train.images[data.train.labels == data.label_of("1")][:200].astype(float)
    rows, cols = ones.sum(axis=(0, 2)), ones.sum(axis=(0, 1))
    spread = lambda p: np.sqrt((p * (np.arange(28) - (p * np.arange(28)).sum() / p.sum()) ** 2).sum() / p.sum())
    assert spread(rows) > 1.5 * spread(cols)


# --------------------------------------------------------------------------- what a user can get wrong


def test_a_mapping_code_that_is_no_character_names_the_file_and_line(tiny_dir):
    (tiny_dir / D.MAPPING_FILE).write_text("0 48\n1 9999999\n")
    with pytest.raises(D.DataError, match=rf"{D.MAPPING_FILE}:2: 9999999 is not the code of a printable"):
        D.read_mapping(tiny_dir)


@pytest.mark.parametrize("label", ["99999999999999999999", "1000000000000000", "256"])
def test_a_mapping_label_beyond_a_byte_names_the_file_and_line_before_any_array_is_made(tiny_dir, label):
    lines = (tiny_dir / D.MAPPING_FILE).read_text().splitlines()
    lines[-1] = f"{label} {lines[-1].split()[1]}"
    (tiny_dir / D.MAPPING_FILE).write_text("\n".join(lines) + "\n")
    with pytest.raises(D.DataError, match=rf"{D.MAPPING_FILE}:{len(lines)}: label {label} cannot be an EMNIST label"):
        D.load(tiny_dir)


def test_a_mapping_that_gives_two_labels_one_character_is_refused(tiny_dir):
    (tiny_dir / D.MAPPING_FILE).write_text("0 48\n1 49\n2 48\n")
    with pytest.raises(D.DataError, match=rf"{D.MAPPING_FILE}:3: character '0' appears twice \(also on line 1\)"):
        D.read_mapping(tiny_dir)


def test_an_idx_header_with_huge_dimensions_reports_its_true_size(tiny_dir):
    images = tiny_dir / D.image_file("train")
    write_gz(images, struct.pack(">IIII", D.IMAGE_MAGIC, 2**31, 2**31, 2**31) + bytes(100))
    with pytest.raises(D.DataError, match="header says") as err:
        D.load(tiny_dir)
    assert f"({16 + 2**93} bytes) but the file has 116 bytes" in str(err.value)


@pytest.mark.parametrize("victim", ["directory", "mapping file", "image file"])
def test_unreadable_data_is_one_clear_error_naming_it(smoke_data, tmp_path, victim):
    data = Path(shutil.copytree(smoke_data, tmp_path / "emnist"))
    path = {"directory": data, "mapping file": data / D.MAPPING_FILE,
            "image file": data / D.image_file("test")}[victim]
    path.chmod(0)
    try:
        out = run(as_ordinary_user(ktlib_cli(*dry_run(data, tmp_path / "results"))))
    finally:
        path.chmod(0o755)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert str(path) in out.stderr and "cannot be read" in out.stderr and "Permission denied" in out.stderr
