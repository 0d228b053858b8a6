"""Build ktlib/compute/kernels.c with the machine's C compiler on first use, cache it, and call it through ctypes."""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path

import platformdirs
import torch

from ktlib.config import NATIVE_CODE_BITS as CODE_BITS
from ktlib.config import NATIVE_MAX_BATCH as MAX_BATCH
from ktlib.paths import from_env, probe

SOURCE = Path(__file__).with_name("kernels.c")
CACHE_ENV = "KTLIB_CACHE_DIR"
TARGET_ENV = "KTLIB_NATIVE_TARGET"
# What kernels.c is built for, MAX_BATCH images a batch and CODE_BITS units in F6, is ktlib.config's, which refuses
# anything else for engine="native" before any work; the library is checked against them when it loads.
# Tried in turn: the first set the compiler accepts is used (not every compiler knows every flag).
# -ffp-contract=fast: a * b + c is one fused multiply-add wherever the CPU has them. It is GCC's default, said outright
# because the numbers depend on it and clang's default contracts less; only GCC 12.2 has been measured.
# --param=avoid-fma-max-bits=0: GCC's tunings for AMD Zen (znver1: 128 bits; znver2, znver3: 256; GCC 12.2's
# -march=native picks znver3 on a Zen 4) leave a * b + c unfused where it adds into a sum carried round a loop, on
# vectors up to that width. Measured on a Zen 4 with GCC 12.2, the AVX2 build's sums then differed from the record
# kernels' fingerprints in their last bits; 0 lifts that threshold (Intel's tunings have it at 0 already). A compiler
# that refuses the flag takes the next set (clang was not tried).
_SAME_FMAS = "--param=avoid-fma-max-bits=0"
_FAST = ["-O3", "-march=native", "-mprefer-vector-width=512", "-fno-math-errno", "-ffp-contract=fast"]
_NATIVE = ["-O3", "-march=native", "-fno-math-errno", "-ffp-contract=fast"]
_AVX2 = ["-O3", "-march=native", "-mno-avx512f", "-fno-math-errno", "-ffp-contract=fast"]
FLAG_SETS = (_FAST + [_SAME_FMAS], _FAST, _NATIVE + [_SAME_FMAS], _NATIVE, ["-O3"])
# What $KTLIB_NATIVE_TARGET can ask for: this CPU's widest vectors (the default); about the code a CPU without
# AVX-512 gets (x86 only; such a CPU compiles for itself); or no machine-specific instruction at all. The last two
# exist to be tested here.
TARGETS = {"native": FLAG_SETS,
           "no-avx512": (_AVX2 + [_SAME_FMAS], _AVX2),
           "portable": (["-O3"],)}


class NativeUnavailable(RuntimeError):
    """No C compiler, or the kernels would not build: engine="batched" needs none."""


def compiler() -> str | None:
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")


@lru_cache(maxsize=None)
def _version_text(cc: str) -> str:
    """What `cc --version` prints, asked once per compiler (an OSError or SubprocessError where it does not run)."""
    return subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout


def compiler_version(cc: str | None = None) -> str:
    """The first line `cc --version` prints (of `compiler()` by default): the kernels' numbers depend on the compiler
    that built them. "none" without a compiler; "unknown" where it does not run."""
    cc = cc or compiler()
    if cc is None:
        return "none"
    try:
        out = _version_text(cc)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (out.strip().splitlines() or ["unknown"])[0]


def cache_dir() -> Path:
    """$KTLIB_CACHE_DIR, which must be writable; else the user's cache directory (platformdirs: ~/.cache/ktlib on
    Linux), or the temporary directory where that cannot be written."""
    given = from_env(CACHE_ENV)
    if given is not None:
        try:
            probe(given)
        except OSError as e:
            raise NativeUnavailable(f"${CACHE_ENV}={os.environ[CACHE_ENV]} ({given}) cannot be written, so the "
                                    f"native kernels cannot be built there: {e.strerror or e}; point it at a "
                                    f"writable directory, or unset it") from None
        return given
    base = Path(platformdirs.user_cache_dir("ktlib"))  # ~/.cache/ktlib on Linux ($XDG_CACHE_HOME honoured)
    for candidate in (base, Path(tempfile.gettempdir()) / "ktlib"):
        try:
            probe(candidate)
            return candidate
        except OSError:
            continue
    raise NativeUnavailable(f"no writable cache directory for the native kernels (tried {base} and the "
                            f"temporary directory); set ${CACHE_ENV}")


def cpu() -> dict[str, str]:
    """The first CPU's fields as /proc/cpuinfo gives them ("model name", "cpu family", "model", "flags", ...);
    empty where there is no /proc/cpuinfo. A virtual machine may hide the model name."""
    try:
        block = Path("/proc/cpuinfo").read_text().split("\n\n")[0]
    except OSError:
        return {}
    return {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in block.splitlines() if ":" in line)}


def cpu_name() -> str:
    """The CPU as /proc/cpuinfo names it, with its family and model (a virtual machine may hide the model name)."""
    fields = cpu()
    if not fields:
        return platform.processor() or platform.machine()
    return f"{fields.get('model name', '?')} (family {fields.get('cpu family', '?')}, model {fields.get('model', '?')})"


def _machine() -> str:
    """What -march=native compiles for: a library built for one CPU must not be loaded on another."""
    fields = cpu()
    if not fields:
        return platform.processor() + platform.machine()
    return "\n".join(f"{k}: {fields.get(k, '')}" for k in ("model name", "cpu family", "model", "flags"))


def target() -> str:
    """$KTLIB_NATIVE_TARGET, else "native"; anything not in TARGETS is one clear error."""
    name = os.environ.get(TARGET_ENV) or "native"
    if name not in TARGETS:
        raise NativeUnavailable(f"${TARGET_ENV}={name!r} is not one of {', '.join(TARGETS)}")
    return name


def build(source: Path | None = None, flag_sets=None) -> Path:
    """The compiled library of a C source (the kernels by default) for this compiler and CPU, with the first
    of flag_sets (default: those of `target()`) the compiler accepts: from the cache, or compiled into it."""
    source = source or SOURCE
    flag_sets = flag_sets or TARGETS[target()]
    cc = compiler()
    if cc is None:
        raise NativeUnavailable("the native engine needs a C compiler (cc, gcc or clang; $CC) and none was "
                                "found; install one, or use engine='batched' (pure PyTorch, about 2x slower)")
    try:
        version = _version_text(cc)
    except (OSError, subprocess.SubprocessError) as e:
        raise NativeUnavailable(f"the C compiler {cc!r} does not run ({e}); use engine='batched'") from None
    key = hashlib.sha256("\0".join([source.read_text(), cc, version, repr(flag_sets), _machine()]).encode())
    built = cache_dir() / f"{source.stem}-{key.hexdigest()[:16]}.so"
    if built.exists():
        return built
    tmp = built.with_name(f".{built.name}.{os.getpid()}.part")
    errors = []
    for flags in flag_sets:
        out = subprocess.run([cc, *flags, "-shared", "-fPIC", str(source), "-o", str(tmp)],
                             capture_output=True, text=True)
        if out.returncode == 0:
            os.replace(tmp, built)  # atomic: another process may be building the same file
            return built
        errors.append(f"{cc} {' '.join(flags)}: {out.stderr.strip()[-500:]}")
    tmp.unlink(missing_ok=True)
    raise NativeUnavailable(f"{source.name} did not compile; use engine='batched'.\n" + "\n".join(errors))


def check(lib: ctypes.CDLL) -> None:
    """kernels.c hard-codes the net: refuse it unless its constants are ktlib.compute.model's and ours."""
    from ktlib.compute.model import LAYERS, TANH_A, reference

    lib.kt_tanh_a.restype = ctypes.c_float
    sizes = (ctypes.c_int * len(LAYERS))()
    lib.kt_layer_sizes(sizes)
    want = {"parameters per layer": [sum(p.numel() for p in layer.parameters()) for layer in reference().layers()],
            "A of A tanh(S a)": float(ctypes.c_float(TANH_A).value), "batch limit": MAX_BATCH, "code bits": CODE_BITS}
    got = {"parameters per layer": list(sizes), "A of A tanh(S a)": lib.kt_tanh_a(),
           "batch limit": lib.kt_max_batch(), "code bits": lib.kt_code_bits()}
    wrong = [f"{name}: {got[name]} in kernels.c, {want[name]} in ktlib" for name in want if got[name] != want[name]]
    if wrong:
        raise NativeUnavailable("kernels.c does not match the net it computes: " + "; ".join(wrong))


def library() -> ctypes.CDLL:
    """The kernels for `target()`, built or loaded on first use, checked against the net."""
    return _load(SOURCE, target())


@lru_cache(maxsize=None)  # a step of the F6-only runs is tens of microseconds: the library is looked up once per target
def _load(source: Path, name: str) -> ctypes.CDLL:
    return _load_flags(source, tuple(tuple(flags) for flags in TARGETS[name]))


@lru_cache(maxsize=None)
def _load_flags(source: Path, flag_sets: tuple[tuple[str, ...], ...]) -> ctypes.CDLL:
    """The library of a C source built with the first of flag_sets the compiler accepts, loaded and checked."""
    lib = ctypes.CDLL(str(build(source, [list(flags) for flags in flag_sets])))
    i, p = ctypes.c_int, ctypes.c_void_p
    lib.kt_gradients.argtypes = [i, i, i, p, p, p, i, i, p, p, i, p, p, i]
    lib.kt_outputs.argtypes = [i, i, i, p, p, i, i, i, p, p, i, p]
    lib.kt_epoch.argtypes = [i, i, i, p, p, p, i, i, p, p, i, p, p, i, p, p, p, i] + [ctypes.c_double] * 4 + [p, p, i, p]
    lib.kt_gradients.restype = i
    lib.kt_outputs.restype = lib.kt_epoch.restype = ctypes.c_int64
    lib.kt_adam.argtypes = [p, p, p, p, ctypes.c_int64, p] + [ctypes.c_double] * 4
    lib.kt_vectors.restype = lib.kt_kernel.restype = ctypes.c_char_p
    lib.kt_sigmoid.argtypes = [p, p, ctypes.c_int64]
    lib.kt_nearest.argtypes = [p, ctypes.c_int64, p, i, p]
    lib.kt_nearest.restype = ctypes.c_int64
    check(lib)
    return lib


def sigmoid(x: torch.Tensor) -> torch.Tensor:
    """The kernels' own sigmoid (their activation function, exp and a division) of x, value by value."""
    x = x.contiguous()
    out = torch.empty_like(x)
    library().kt_sigmoid(_ptr(x), _ptr(out), x.numel())
    return out


def vectors() -> str:
    """The vector instructions the loaded kernels were compiled to (kt_vectors): avx512, avx2, sse2, neon."""
    return library().kt_vectors().decode()


def kernel() -> str:
    """How the loaded kernels compute (kt_kernel): their vectors and register blocking."""
    return library().kt_kernel().decode()


def _ptr(t: torch.Tensor, dtype=torch.float32) -> int:
    assert t.dtype == dtype and t.is_contiguous(), (t.dtype, t.shape)
    return t.data_ptr()


def gradients(n: int, theta: torch.Tensor, grad: torch.Tensor, x: torch.Tensor, target: torch.Tensor,
              idx: torch.Tensor, keep: torch.Tensor, frozen: torch.Tensor | None = None) -> torch.Tensor:
    """Into grad (R, P): each run's batch gradient. x: (R, N, ...) layer-n inputs, target: (R, N, 20),
    idx: (R, B) the batch's indices into each run's N images, keep: (P,) 0 for the weights C3's connection
    table removes (stacked.keep_mask); frozen: None, or (R, maps of layer n) bool, the maps of a partly transferred
    level (n = 2, C3, or 4, C5) whose gradients the kernel holds at zero."""
    R, N = x.shape[:2]
    held, held_ptr, maps = _held(frozen)
    status = library().kt_gradients(n, R, theta.shape[1], _ptr(theta), _ptr(grad), _ptr(x), N,
                                    x[0, 0].numel(), _ptr(target), _ptr(idx, torch.int64), idx.shape[1], _ptr(keep),
                                    held_ptr, maps)
    if status:
        raise _refused("kt_gradients", n, idx.shape[1], frozen)
    return grad


def _held(frozen: torch.Tensor | None) -> tuple:
    """The frozen maps as kt_gradients and kt_epoch take them: (their bytes, which the caller keeps alive through the
    call; a pointer to them, or None; maps per run)."""
    if frozen is None:
        return None, None, 0
    held = frozen.to(torch.uint8).contiguous()
    return held, _ptr(held, torch.uint8), held.shape[1]


def _refused(name: str, n: int, batch: int, frozen: torch.Tensor | None) -> ValueError:
    return ValueError(f"{name} refused n={n}, batch {batch} (at most {MAX_BATCH})"
                      + ("" if frozen is None else f", or frozen maps of shape {tuple(frozen.shape)}"))


def epoch(n: int, theta: torch.Tensor, grad: torch.Tensor, x: torch.Tensor, target: torch.Tensor,
          perms: torch.Tensor, batch: int, keep: torch.Tensor, frozen: torch.Tensor | None, moments: tuple,
          count: torch.Tensor, lr: float, betas: tuple[float, float], eps: float, tail: int | None = None,
          codes: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """One epoch of training steps in one call (kt_epoch): each run's batches in the order perms (R, N) gives, each a
    `gradients` and torch.optim.Adam's step of theta (R, P) with its state: moments (m, v), each (R, P), and count,
    torch's float32 step count; all updated in place. lr, betas, eps: the step's, as torch._fused_adam_ takes them.
    tail: how many of theta's last values torch's Adam rounds apart (kt_epoch): the size % 8 of the tensor it steps,
    theta's own by default; a group's rows split over threads pass the whole group's where they end it, else 0.
    codes: also the runs' outputs on their own images after the epoch, and their nearest codes (`classify`), returned
    as classify returns them; None, nothing is returned."""
    R, N = x.shape[:2]
    held, held_ptr, maps = _held(frozen)
    m, v = moments
    tail = theta.numel() % 8 if tail is None else tail
    out, found, codes, code_count = _classified(R, N, codes)
    status = library().kt_epoch(n, R, theta.shape[1], _ptr(theta), _ptr(grad), _ptr(x), N, x[0, 0].numel(),
                                _ptr(target), _ptr(perms, torch.int64), batch, _ptr(keep), held_ptr, maps,
                                _ptr(m), _ptr(v), _ptr(count), tail, lr, *betas, eps,
                                None if out is None else _ptr(out), None if codes is None else _ptr(codes), code_count,
                                None if found is None else _ptr(found, torch.int64))
    if status == -2:
        raise MemoryError(f"kt_epoch could not allocate a batch's indices for {R} runs")
    if status < 0:
        raise _refused("kt_epoch", n, batch, frozen)
    return None if out is None else (out, None if status else found)


def adam(theta: torch.Tensor, grad: torch.Tensor, moments: tuple, count: torch.Tensor, lr: float,
         betas: tuple[float, float], eps: float) -> None:
    """torch.optim.Adam's step of theta with its state, in place (kt_adam): the step kt_epoch takes, which a test holds
    to torch._fused_adam_'s bits where PyTorch runs its AVX-512 code. count: torch's float32 step count."""
    m, v = moments
    if not theta.shape == grad.shape == m.shape == v.shape:
        raise ValueError(f"Adam's step needs parameters, gradients and moments of one shape, not {theta.shape}, "
                         f"{grad.shape}, {m.shape}, {v.shape}")
    library().kt_adam(_ptr(theta), _ptr(grad), _ptr(m), _ptr(v), theta.numel(), _ptr(count), lr, *betas, eps)


def nearest(outputs: torch.Tensor, codes: torch.Tensor) -> torch.Tensor | None:
    """The index of each output's nearest code, as ktlib.compute.model.predict gives it, where kt_nearest can vouch
    for every one (no output near-equidistant from two codes, within what float32 rounding could bridge in torch's
    sums); None where it cannot, and the caller asks predict. outputs (..., 20), codes (C, 20)."""
    if outputs.shape[-1] != CODE_BITS:
        raise ValueError(f"kt_nearest takes {CODE_BITS} values an output, not {tuple(outputs.shape)}")
    out, codes = outputs.contiguous(), _codes(codes)
    found = torch.empty(out.shape[:-1], dtype=torch.int64)
    unsure = library().kt_nearest(_ptr(out), found.numel(), _ptr(codes), len(codes), _ptr(found, torch.int64))
    return None if unsure else found


def _codes(codes: torch.Tensor) -> torch.Tensor:
    """The codes the nearest are found among, contiguous, as the kernels read them: (C, 20), else one clear error."""
    if codes.dim() != 2 or codes.shape[1] != CODE_BITS:
        raise ValueError(f"the nearest codes are found among codes of {CODE_BITS} values, not {tuple(codes.shape)}")
    return codes.contiguous()


def _classified(R: int, M: int, codes: torch.Tensor | None) -> tuple:
    """What a call that also finds the nearest codes passes: (outputs (R, M, 20) to fill, nearest (R, M) to fill, the
    codes contiguous, their count); without codes, (None, None, None, 0)."""
    if codes is None:
        return None, None, None, 0
    codes = _codes(codes)
    return torch.empty(R, M, CODE_BITS), torch.empty(R, M, dtype=torch.int64), codes, len(codes)


def outputs(n: int, theta: torch.Tensor, x: torch.Tensor, shared: bool) -> torch.Tensor:
    """The outputs (R, M, 20) of the R runs whose parameters are theta, on x: (R, M, ...) inputs of
    layer n, or one (M, ...) set for all runs when shared."""
    R, M = len(theta), x.shape[0] if shared else x.shape[1]
    out = torch.empty(R, M, CODE_BITS)
    _kt_outputs(n, theta, x, shared, out, None, 0, None)
    return out


def classify(n: int, theta: torch.Tensor, x: torch.Tensor, shared: bool,
             codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`outputs`, and each output's nearest code as `nearest` finds it, in the same call: (outputs, nearest (R, M)),
    with None for the nearest where kt_nearest could not vouch for every one."""
    out, found, codes, code_count = _classified(len(theta), x.shape[0] if shared else x.shape[1], codes)
    unsure = _kt_outputs(n, theta, x, shared, out, codes, code_count, found)
    return out, None if unsure else found


def _kt_outputs(n, theta, x, shared, out, codes, code_count, found) -> int:
    features = x[0].numel() if shared else x[0, 0].numel()
    unsure = library().kt_outputs(n, len(theta), theta.shape[1], _ptr(theta), _ptr(x), out.shape[1], features,
                                  int(shared), _ptr(out), None if codes is None else _ptr(codes), code_count,
                                  None if found is None else _ptr(found, torch.int64))
    if unsure < 0:
        raise ValueError(f"kt_outputs refused n={n}")
    return unsure
