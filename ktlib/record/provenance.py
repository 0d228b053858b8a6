"""Where the numbers came from: the commit of the code that made them, and the versions of what ran it."""
from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

import torch

from ktlib.compute.native import TARGET_ENV, compiler_version, cpu_name


def git_commit() -> str:
    """HEAD of the checkout ktlib runs from, marked -dirty when the code that makes the numbers differs from it.

    Only ktlib/ and the lock file count: the notebooks and results files are rewritten by the very build
    that records this."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--",
                                ":(top)ktlib", ":(top)requirements.lock"], cwd=here,
                               capture_output=True, text=True, check=True).stdout.strip()
        return head + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def older_commit(commit: str, than: str, root: str | os.PathLike = ".") -> bool:
    """Whether `commit` comes strictly before `than` in the history of the checkout `root` (False when git
    cannot tell, as for an unknown commit)."""
    a, b = commit.removesuffix("-dirty"), than.removesuffix("-dirty")
    if a == b:
        return False
    try:
        found = subprocess.run(["git", "merge-base", "--is-ancestor", a, b], cwd=root, capture_output=True)
        return found.returncode == 0
    except OSError:
        return False


def target_name() -> str:
    """The native kernels' build $KTLIB_NATIVE_TARGET asks for (native, no-avx512, portable): they differ in bits."""
    return os.environ.get(TARGET_ENV) or "native"


def versions() -> dict:
    """The versions of Python and the packages that compute the numbers, the CPU they ran on (the plain path's and
    torch's own sums round by CPU: book/reproducibility.md, "Across CPUs") and the C compiler of the native kernels."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version(), "platform": platform.platform(), "cpu": cpu_name(),
           "native_target": target_name(), "native_compiler": compiler_version(),
           "torch_threads": torch.get_num_threads(),
           "torch_cpu_capability": torch.backends.cpu.get_cpu_capability()}
    for pkg in ("ktlib", "torch", "numpy", "pandas"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out
