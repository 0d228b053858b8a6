"""Building the native kernels: once per source, compiler and CPU; a missing or failing compiler is a clear error."""
import pytest

from ktlib import native


def test_the_kernels_are_compiled_once_and_then_reused(tmp_path, monkeypatch):
    monkeypatch.setenv(native.CACHE_ENV, str(tmp_path))
    first = native.build()
    assert first.parent == tmp_path and first.suffix == ".so"
    stamp = first.stat().st_mtime_ns
    assert native.build() == first and first.stat().st_mtime_ns == stamp
    assert not list(tmp_path.glob(".*.part"))  # compiled through a temporary file, renamed into place


def test_a_missing_compiler_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv(native.CACHE_ENV, str(tmp_path))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    with pytest.raises(native.NativeUnavailable, match="does not run.*engine='batched'"):
        native.build()


def test_a_compiler_that_fails_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv(native.CACHE_ENV, str(tmp_path))
    monkeypatch.setenv("CC", "false")
    with pytest.raises(native.NativeUnavailable, match="did not compile; use engine='batched'"):
        native.build()
    assert not list(tmp_path.iterdir())


def test_an_unwritable_cache_falls_back_to_the_temporary_directory(tmp_path, monkeypatch):
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    monkeypatch.setenv(native.CACHE_ENV, str(blocked / "cache"))
    assert native.cache_dir().parent == native.Path(native.tempfile.gettempdir())
