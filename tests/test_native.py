"""Building the native kernels: once per source, compiler and CPU; a missing or failing compiler is a clear error."""
import os
import tempfile
from pathlib import Path

import pytest
from conftest import as_ordinary_user, dry_run, ktlib_cli, run

from ktlib.compute import native


def test_the_kernels_are_compiled_once_and_then_reused(tmp_path, monkeypatch):
    monkeypatch.setenv(native.CACHE_ENV, str(tmp_path))
    first = native.build()
    assert first.parent == tmp_path and first.suffix == ".so"
    stamp = first.stat().st_mtime_ns
    assert native.build() == first and first.stat().st_mtime_ns == stamp
    assert not list(tmp_path.glob(".*.part"))  # compiled through a temporary file, renamed into place


def test_a_library_built_for_one_cpu_is_not_reused_on_another(tmp_path, monkeypatch):
    monkeypatch.setenv(native.CACHE_ENV, str(tmp_path / "cache"))
    source = tmp_path / "tiny.c"
    source.write_text("int kt_one(void) { return 1; }\n")
    here = native.cpu()
    assert here.get("flags") or not Path("/proc/cpuinfo").exists()  # the flags -march=native compiles for
    built = native.build(source, [["-O0"]])
    monkeypatch.setattr(native, "cpu", lambda: {**here, "flags": "sse2"})
    other = native.build(source, [["-O0"]])
    assert other != built and other.exists()
    monkeypatch.setattr(native, "cpu", lambda: dict(here))
    assert native.build(source, [["-O0"]]) == built


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


def test_without_a_cache_variable_an_unwritable_home_cache_falls_back_to_the_temporary_directory(tmp_path,
                                                                                                 monkeypatch):
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    monkeypatch.delenv(native.CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    assert native.cache_dir() == Path(tempfile.gettempdir()) / "ktlib"


def test_without_a_cache_variable_the_kernels_go_to_the_platforms_user_cache_directory(tmp_path, monkeypatch):
    monkeypatch.delenv(native.CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))  # platformdirs honours it on Linux
    assert native.cache_dir() == tmp_path / "xdg" / "ktlib"


def test_a_relative_cache_variable_is_taken_from_the_launch_directory(tmp_path, monkeypatch):
    (tmp_path / "launched-here").mkdir()
    (tmp_path / "kernel-runs-here").mkdir()
    monkeypatch.setenv("PWD", str(tmp_path / "launched-here"))
    monkeypatch.chdir(tmp_path / "kernel-runs-here")
    monkeypatch.setenv(native.CACHE_ENV, "cache")
    assert native.cache_dir() == tmp_path / "launched-here" / "cache"


def test_an_unwritable_cache_variable_is_one_clear_error_before_any_work(tmp_path, smoke_data):
    cache = tmp_path / "cache"
    cache.mkdir()
    cache.chmod(0o555)
    env = {**os.environ, native.CACHE_ENV: str(cache)}
    try:
        out = run(as_ordinary_user(ktlib_cli(*dry_run(smoke_data, tmp_path / "results"))), env=env)
    finally:
        cache.chmod(0o755)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert f"${native.CACHE_ENV}={cache} ({cache}) cannot be written" in out.stderr
    assert "Permission denied" in out.stderr and "did not compile" not in out.stderr
    assert "source net" not in out.stderr and not (tmp_path / "results").exists()


def test_the_loader_refuses_kernels_built_for_another_net(tmp_path, monkeypatch):
    """kernels.c hard-codes the net's sizes: a copy whose C5 is one parameter off is refused when it loads."""
    changed = tmp_path / "kernels.c"
    changed.write_text(native.SOURCE.read_text().replace("{156, 12, 2416, 32, 48120, 2420}",
                                                          "{156, 12, 2416, 32, 48121, 2420}"))
    monkeypatch.setattr(native, "SOURCE", changed)
    monkeypatch.setenv(native.CACHE_ENV, str(tmp_path / "cache"))
    with pytest.raises(native.NativeUnavailable, match=r"parameters per layer: \[156, 12, 2416, 32, 48121, 2420\] "
                                                       r"in kernels.c, \[156, 12, 2416, 32, 48120, 2420\] in ktlib"):
        native.library()


def test_the_kernels_sigmoid_is_the_sigmoid_to_three_units_in_the_last_place():
    """exp to about 1 ulp, then 1 + e and a division, each correctly rounded: at most 3 ulps of the result
    wherever exp is not clamped; beyond that (|z| > 87) the clamp moves only values far below one ulp of 1."""
    import torch

    z = torch.linspace(-86, 86, 1_000_001)
    exact = torch.sigmoid(z.double())
    got = native.sigmoid(z)
    ulp = (torch.nextafter(got, torch.tensor(2.0)) - got).double()
    assert ((got.double() - exact).abs() / ulp).max() <= 3
    wide = torch.linspace(-200, 200, 100_001)
    assert (native.sigmoid(wide).double() - torch.sigmoid(wide.double())).abs().max() <= 3 * 2.0 ** -24
