"""The hardware a stage trains on, set up once: mixed precision that fits it, CPU attention kernels and
``torch.compile``, CPU threads, the C allocator, and the ``accelerate.Accelerator``.

    precision, reason = resolve_mixed_precision("auto", cpu=True)   # bf16 only where a probe measured it faster
    accelerator = make_accelerator(mixed_precision=precision, log_with=available_trackers(["tensorboard"]))

Each choice is measured on the machine it runs on (a matmul probe for bf16, an attention probe for the
kernels, the cores other processes keep busy for the threads) and logged with its reason, because the
right answer differs between CPU kinds (AVX2-only, AVX-512 BF16, AMX) and GPUs.
"""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import torch

from .dropout import ATTENTION, attention_dropout, use_cpu_dropout
from .errors import UserError
from .flops import measure_matmul_peak
from .metrics_log import available_trackers
from .objectives import encoder_of
from .textio import atomic_write_json

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------
# Mixed precision that fits the hardware
# ----------------------------------------------------------------------------------------------
#: bf16 is chosen on a CPU only when its matmuls beat fp32 by this factor in the probe (AMX / AVX512-BF16
#: CPUs measure several times faster; AVX2-only CPUs emulate bf16 and measure several times slower).
CPU_BF16_MIN_SPEEDUP = 1.25


def resolve_mixed_precision(setting: str, *, cpu: bool = False) -> tuple[str, str]:
    """``(precision, reason)``: ``setting`` itself unless it is ``auto``; then bf16 on a GPU that supports
    it, fp16 (with loss scaling) on one that does not, and on a CPU bf16 only where a short matmul probe
    (:func:`cpu_matmul_probe`, cached per machine) shows it faster than fp32, fp32 (``no``) otherwise."""
    if setting != "auto":
        return setting, "set explicitly"
    if torch.cuda.is_available() and not cpu:
        name = torch.cuda.get_device_name()
        if torch.cuda.is_bf16_supported():
            return "bf16", f"auto: {name} supports bf16"
        return "fp16", f"auto: {name} has no bf16, so fp16 with loss scaling"
    fast, figures = cpu_bf16_reading()
    if fast:
        return "bf16", f"auto: {figures}"
    return "no", f"auto: fp32, since {figures}"


def cpu_bf16_reading() -> tuple[bool, str]:
    """(whether bf16 matmuls beat fp32 on this CPU by ``CPU_BF16_MIN_SPEEDUP``, the measured figures),
    from :func:`cpu_matmul_probe` (cached per machine)."""
    probe = cpu_matmul_probe()
    speedup = probe["bf16_gflops"] / max(probe["fp32_gflops"], 1e-9)
    figures = (f"{probe['cpu']}: bf16 matmul {probe['bf16_gflops']:.0f} GFLOP/s vs fp32 {probe['fp32_gflops']:.0f} "
               f"({speedup:.2f}x)")
    return speedup >= CPU_BF16_MIN_SPEEDUP, figures


#: Environment variables that cap the instruction set of PyTorch's CPU kernels (oneDNN, which runs bf16
#: matmuls; MKL, fp32 matmuls; ATen's own kernels). With one set, the CPU's flags overstate what runs.
CPU_ISA_LIMITS = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS", "ATEN_CPU_CAPABILITY")


def cpu_name() -> str:
    """The CPU's model name and its bf16-relevant features (what the precision probe depends on), and any
    instruction-set limit set in the environment (:data:`CPU_ISA_LIMITS`): the probe's cache is keyed on
    this text, so a limited run measures again instead of reusing the unlimited machine's choice."""
    import platform

    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                info.setdefault(key.strip(), value.strip())
                if "model name" in info and "flags" in info:
                    break
    except OSError:
        pass
    name = info.get("model name") or platform.processor() or platform.machine()
    flags = set(info.get("flags", "").split())
    features = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    limits = [f"{var}={os.environ[var]}" for var in CPU_ISA_LIMITS if os.environ.get(var)]
    return f"{name} ({', '.join(features) or 'no AVX2'}" + (f"; {', '.join(limits)})" if limits else ")")


def cached_cpu_probe(name: str, key: str, measure: Callable[[], dict], cache_dir: Optional[Path] = None) -> dict:
    """``measure()`` once per machine: its result is cached in ``$MLM_PRETRAIN_CACHE`` (default
    ``~/.cache/mlm_pretrain``) under ``name`` and ``key`` together with the CPU model and features, the
    torch version and thread count. Re-runs and resumes on one machine make the same choice."""
    import hashlib

    cpu = cpu_name()
    cache_dir = Path(cache_dir or os.environ.get("MLM_PRETRAIN_CACHE") or Path.home() / ".cache" / "mlm_pretrain")
    digest = hashlib.sha256(f"{cpu}\0{torch.__version__}\0{torch.get_num_threads()}\0{key}".encode()).hexdigest()
    path = cache_dir / f"{name}_{digest[:16]}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        pass
    result = {"cpu": cpu, "torch": torch.__version__, "threads": torch.get_num_threads(), **measure()}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, result)
    except OSError:  # a read-only home: measure again next time
        pass
    return result


def cpu_matmul_probe(cache_dir: Optional[Path] = None) -> dict:
    """fp32 and bf16 matmul GFLOP/s of this CPU (a fraction of a second, :func:`cached_cpu_probe`)."""
    return cached_cpu_probe("cpu_matmul", "", lambda: {
        f"{p}_gflops": measure_matmul_peak(p, "cpu", n=512, seconds=0.1) / 1e9 for p in ("fp32", "bf16")}, cache_dir)


#: The math SDPA backend replaces flash attention on a CPU only when it is at least this much faster.
CPU_MATH_ATTENTION_MIN_SPEEDUP = 1.1


def cpu_attention_backends(precision: str, *, batch: int, heads: int, seq: int, head_dim: int,
                           cache_dir: Optional[Path] = None) -> tuple[Optional[list], str]:
    """``(backends, reason)``: the ``scaled_dot_product_attention`` backends to train with on a CPU
    (None: PyTorch's own choice), from a probe of forward + backward at the model's shape.

    PyTorch picks its flash-attention kernel on a CPU whenever it can (no attention dropout). Its bf16
    backward runs about twice as slow as the math backend's at sequence 128 on an AMX Xeon (23 against
    13 ms for 32 x 4 heads x 128 x 64, where fp32 flash beats math: 11 against 14), while at sequence
    512 flash wins in both precisions. So both are timed (:func:`sdpa_seconds`, a fraction of a second
    at ``min(batch, 8)`` rows; cached per machine and shape by :func:`cached_cpu_probe`) and math is
    kept where it is :data:`CPU_MATH_ATTENTION_MIN_SPEEDUP` times faster. Training only: forward alone
    (evaluation) is fastest with flash."""
    from torch.nn.attention import SDPBackend

    name = "fp32" if precision == "no" else precision
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
    shape = (max(1, min(batch, 8)), heads, seq, head_dim)

    def measure() -> dict:
        try:
            return {"flash_ms": 1e3 * sdpa_seconds(SDPBackend.FLASH_ATTENTION, dtype, shape),
                    "math_ms": 1e3 * sdpa_seconds(SDPBackend.MATH, dtype, shape)}
        except RuntimeError as e:  # a build or shape without the CPU flash kernel: nothing to choose
            return {"error": str(e).splitlines()[0][:80]}

    probe = cached_cpu_probe("cpu_attention", f"{name}\0{shape}", measure, cache_dir)
    if "error" in probe:
        return None, f"PyTorch's choice (no flash attention to compare: {probe['error']})"
    figures = (f"{name} forward+backward at {'x'.join(map(str, shape))}: flash {probe['flash_ms']:.1f} ms, "
               f"math {probe['math_ms']:.1f} ms")
    if probe["flash_ms"] >= CPU_MATH_ATTENTION_MIN_SPEEDUP * probe["math_ms"]:
        return [SDPBackend.MATH], f"math ({figures})"
    return None, f"PyTorch's choice, flash ({figures})"


def cpu_training_kernels(model: torch.nn.Module, config, precision: str, *, batch: int,
                         seq: int) -> tuple[Optional[list], str]:
    """Set ``model`` (any module holding transformers models) up for training on a CPU and return
    ``(sdpa backends, reason)`` for :func:`sdpa_backends`: dropout masks from
    :mod:`mlm_pretrain.dropout`; then, with attention dropout, that module's attention (SDPA would
    fall back to its math kernel and per-element draws), else flash or math SDPA as
    :func:`cpu_attention_backends` measures at ``config``'s shape (the main model's)."""
    use_cpu_dropout(model)
    impl = getattr(config, "_attn_implementation", None)
    if impl not in ("sdpa", ATTENTION):
        return None, f"{impl} (the model's attention implementation)"
    p = attention_dropout(config)
    if p > 0:
        return None, f"softmax(q k^T) v with CPU dropout masks (attention dropout {p:g}: mlm_pretrain.dropout)"
    return cpu_attention_backends(precision, batch=batch, heads=config.num_attention_heads, seq=seq,
                                  head_dim=config.hidden_size // config.num_attention_heads)


def _cxx_compiler() -> Optional[str]:
    """The C++ compiler torch.compile's inductor would use on a CPU (``$CXX``, else g++ / c++ / clang++)."""
    cxx = os.environ.get("CXX")
    if cxx:
        return shutil.which(cxx)
    return next((path for name in ("g++", "c++", "clang++") if (path := shutil.which(name))), None)


def compile_toolchain(setting, device_type: str) -> tuple[Optional[str], Optional[str]]:
    """``(tool, None)`` where torch.compile can build kernels on ``device_type``, else ``(None, what is
    missing)``; with ``setting`` ``True`` a missing tool is an error (call it before long work)."""
    import importlib.util

    if device_type == "cpu":
        tool = _cxx_compiler()
        missing = None if tool else ("a C++ compiler (inductor builds C++ kernels on a CPU): install one "
                                     "(`apt install g++`) or set CXX")
    else:
        tool = "triton" if importlib.util.find_spec("triton") is not None else None
        missing = None if tool else "Triton (inductor's GPU kernels; it ships with PyTorch's CUDA wheels)"
    if missing and setting is True:
        raise UserError(f"pretrain.compile=true needs {missing}; or set pretrain.compile=false")
    return tool, missing


def compile_encoders(models: Iterable[torch.nn.Module], setting, device_type: str) -> tuple[bool, str]:
    """``pretrain.compile``: ``torch.compile`` the encoder of each model (in place, ``nn.Module.compile``:
    the saved weights and their names do not change), or not. Returns ``(compiled, reason)``.

    ``auto`` compiles where it was measured to pay: a model without dropout, given the toolchain (a C++ compiler on a CPU, Triton on a GPU). With dropout on
    a CPU it stays eager: this package's dropout masks (:mod:`mlm_pretrain.dropout`) break the graph,
    and compiling measured no faster with them and slower with PyTorch's own dropout. ``True`` compiles
    whatever the model, and raises without the toolchain (:func:`compile_toolchain`)."""
    models = [m for m in models if m is not None]
    if setting is False:
        return False, "pretrain.compile=false"
    tool, missing = compile_toolchain(setting, device_type)
    if missing:
        return False, f"auto: eager, compiling needs {missing}"
    dropout = max([attention_dropout(m.config) for m in models] +
                  [mod.p for m in models for mod in m.modules() if isinstance(mod, torch.nn.Dropout)])
    if setting == "auto" and dropout > 0 and device_type == "cpu":
        return False, (f"auto: eager, the model has dropout {dropout:g} (on a CPU its masks run eager and "
                       "compiling measured no faster)")
    for m in models:
        encoder_of(m).compile()
    return True, f"{'auto' if setting == 'auto' else 'pretrain.compile=true'}: torch.compile (inductor, {tool})"


def sdpa_seconds(backend, dtype: torch.dtype, shape: tuple[int, int, int, int], reps: int = 3) -> float:
    """Best-of-``reps`` seconds of ``scaled_dot_product_attention`` forward + backward with ``backend``
    on random ``shape`` = (batch, heads, seq, head_dim) inputs (a private generator: the global RNG is
    not touched), half the rows padded by a quarter."""
    import torch.nn.functional as F
    from torch.nn.attention import sdpa_kernel

    b, _, seq, _ = shape
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(shape, generator=gen).to(dtype).requires_grad_() for _ in range(3))
    mask = torch.ones(b, 1, seq, seq, dtype=torch.bool)
    mask[: max(1, b // 2), :, :, seq * 3 // 4:] = False
    best = math.inf
    with sdpa_kernel([backend]), torch.enable_grad():
        for _ in range(reps + 1):  # the first one warms up
            t0 = time.perf_counter()
            F.scaled_dot_product_attention(q, k, v, attn_mask=mask).sum().backward()
            best = min(best, time.perf_counter() - t0)
    return best


def sdpa_backends(backends: Optional[list]):
    """A context that restricts ``scaled_dot_product_attention`` to ``backends`` (None: no restriction)."""
    import contextlib

    if backends is None:
        return contextlib.nullcontext()
    from torch.nn.attention import sdpa_kernel

    return sdpa_kernel(backends)


# ----------------------------------------------------------------------------------------------
# CPU threads
# ----------------------------------------------------------------------------------------------
def _cpu_busy_seconds(cpus: set[int]) -> Optional[float]:
    """CPU-seconds spent busy (not idle, not waiting for I/O) on ``cpus`` since boot, from ``/proc/stat``;
    None where there is no ``/proc/stat`` (not Linux)."""
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    busy = 0
    try:
        with open("/proc/stat", encoding="ascii") as f:
            for line in f:
                if not line.startswith("cpu"):
                    break
                name, *fields = line.split()
                if name == "cpu" or int(name[3:]) not in cpus:
                    continue
                values = [int(v) for v in fields[:8]]  # user nice system idle iowait irq softirq steal
                busy += sum(values) - values[3] - values[4]
    except (OSError, ValueError):
        return None
    return busy / tick


class ThreadGovernor:
    """Keeps torch's CPU threads at the number of cores that other processes leave free.

    With as many OpenMP threads as cores, PyTorch collapses when another job starts on the machine: its
    threads spin waiting for a thread whose core the other job holds (``scripts/bench_threads.py``: a
    2-thread pretraining on 2 cores fell to 24% of its speed beside another 2-thread PyTorch job, and
    the other job to 14% of its own; on one thread it kept 68%). Every ``interval`` seconds (checked
    at step boundaries: :meth:`step`) the governor reads how busy this process's cores were
    (``/proc/stat``), subtracts this process's own CPU time, and sets
    ``torch.set_num_threads(cores - busy elsewhere)``, rounded, between 1 and the thread count torch
    started with (``OMP_NUM_THREADS`` or the core count: never more). ``setting`` an integer pins that
    many threads instead. Changes are logged; :attr:`history` lists ``(seconds, threads)``.
    """

    def __init__(self, setting: str | int = "auto", *, interval: float = 3.0):
        self.ceiling = torch.get_num_threads()
        self.auto = str(setting) == "auto"
        self.interval = interval
        self.history: list[tuple[float, int]] = []
        self._start = time.monotonic()
        try:
            self.cpus = os.sched_getaffinity(0)
        except (AttributeError, OSError):
            self.cpus = set(range(os.cpu_count() or 1))
        if not self.auto:
            self.enabled = False
            self._set(int(setting), "set explicitly")
            return
        self._mark = self._sample()
        self.enabled = self.ceiling > 1 and self._mark[2] is not None  # one core, or no /proc/stat: nothing to do
        if self.enabled:  # a first reading before training starts
            time.sleep(0.2)
            self.step(force=True)
        if not self.history:
            self._set(self.ceiling, "auto: every core" if self.ceiling > 1 else "auto: one core")

    @property
    def threads(self) -> int:
        return torch.get_num_threads()

    def _sample(self) -> tuple[float, float, Optional[float]]:
        own = os.times()
        return time.monotonic(), own.user + own.system, _cpu_busy_seconds(self.cpus)

    def _set(self, n: int, reason: str) -> None:
        n = max(1, n)
        if not self.history or self.history[-1][1] != n:
            torch.set_num_threads(n)
            self.history.append((round(time.monotonic() - self._start, 1), n))
            logger.info("CPU threads: %d (%s)", n, reason)

    def busy_elsewhere(self, before, after) -> float:
        """Cores' worth of work other processes did between two samples."""
        wall = max(after[0] - before[0], 1e-6)
        return max(0.0, (after[2] - before[2]) - (after[1] - before[1])) / wall

    def step(self, force: bool = False) -> int:
        """Call once per optimizer step; re-reads the load every ``interval`` seconds. Returns the threads."""
        if not self.enabled or (not force and time.monotonic() - self._mark[0] < self.interval):
            return torch.get_num_threads()
        now = self._sample()
        if now[2] is None:  # /proc/stat became unreadable
            return torch.get_num_threads()
        other = self.busy_elsewhere(self._mark, now)
        self._mark = now
        free = len(self.cpus) - other
        target = min(self.ceiling, max(1, int(free + 0.5)))
        self._set(target, f"auto: other processes keep {other:.1f} of {len(self.cpus)} cores busy")
        return target

    def close(self) -> None:
        """Give torch its thread count back (a later stage in the same process starts from it)."""
        torch.set_num_threads(self.ceiling)

    def summary(self) -> dict:
        return {"threads": self.threads, "threads_setting": "auto" if self.auto else self.threads,
                "threads_changes": [list(h) for h in self.history]}


# ----------------------------------------------------------------------------------------------
# The C allocator on a CPU
# ----------------------------------------------------------------------------------------------
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's mallopt parameters (<malloc.h>)
GLIBC_DEFAULTS = {M_TRIM_THRESHOLD: 128 * 1024, M_MMAP_MAX: 65536}
KEEP_FREED = {M_TRIM_THRESHOLD: 2 ** 31 - 1, M_MMAP_MAX: 0}
# the same setting for another process, through glibc's environment variables (scripts/bench_pretrain.py)
KEEP_FREED_ENV = {"MALLOC_TRIM_THRESHOLD_": str(KEEP_FREED[M_TRIM_THRESHOLD]),
                  "MALLOC_MMAP_MAX_": str(KEEP_FREED[M_MMAP_MAX])}
ALLOCATOR_ENV = ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_")
OTHER_ALLOCATORS = ("jemalloc", "tcmalloc", "mimalloc")


def _glibc():
    """The C library as a ``ctypes`` handle when it is glibc with ``mallopt`` and ``malloc_trim``; else None."""
    import ctypes
    import platform

    if platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt.argtypes, libc.malloc_trim.argtypes = [ctypes.c_int, ctypes.c_int], [ctypes.c_size_t]
        return libc
    except (OSError, AttributeError):
        return None


class HeapReuse:
    """Keeps memory that training frees inside the process, for the next step to reuse (CPU training).

    glibc serves every block over its mmap threshold (128 KiB, rising to 32 MiB at most) with a fresh
    ``mmap``, unmaps it on ``free``, and gives the top of its heap back to the kernel: so each step's large tensors (a
    chunk of vocabulary logits, the embedding gradient) come back as new pages, which the kernel faults
    in and zeroes one 4 KiB page at a time. Keeping them made a BERT ``mini`` step 1.05-1.1x faster on a
    2-core Zen 4, with 95-97% fewer page faults. ``auto`` sets ``mallopt(M_MMAP_MAX, 0)`` and a
    2 GiB ``M_TRIM_THRESHOLD`` (the effect of ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=...``, what
    jemalloc/tcmalloc setups tuned for PyTorch also do): large blocks come from the heap and return to
    it, and the process keeps its peak memory until :meth:`close`, which puts glibc's defaults back and
    returns the free memory to the kernel (``malloc_trim``). Nothing is changed where the C library is
    not glibc, where another allocator is preloaded (``LD_PRELOAD``), or where ``MALLOC_*`` variables
    already tune glibc; ``system`` leaves the allocator alone. :attr:`reason` says which. (glibc before
    2.38 reuses a freed block for an aligned request of the same size only once it has merged with a
    free neighbour; the blocks a training step frees do, and peak memory stayed level: same docs.)
    """

    def __init__(self, setting: str = "auto"):
        self.active = False
        preload = os.environ.get("LD_PRELOAD", "")
        if setting == "system":
            self.reason = "system: left as it is (malloc=system)"
        elif any(name in preload for name in OTHER_ALLOCATORS):
            self.reason = f"system: another allocator is preloaded ({preload})"
        elif any(v in os.environ for v in ALLOCATOR_ENV) or "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
            self.reason = "system: MALLOC_* / GLIBC_TUNABLES variables already tune glibc"
        elif (libc := _glibc()) is None:
            self.reason = "system: the C library is not glibc"
        else:
            self.libc, self.active = libc, all(libc.mallopt(k, v) == 1 for k, v in KEEP_FREED.items())
            self.reason = ("reuse: freed blocks stay in the process for the next step (glibc M_MMAP_MAX=0, "
                           "M_TRIM_THRESHOLD=2 GiB)" if self.active else "system: glibc's mallopt refused")
            if not self.active:
                self._restore()
        logger.info("memory allocator: %s", self.reason)

    def _restore(self) -> None:
        for k, v in GLIBC_DEFAULTS.items():
            self.libc.mallopt(k, v)
        self.libc.malloc_trim(0)

    def close(self) -> None:
        """glibc's defaults back, free memory back to the kernel (a later stage starts as before)."""
        if self.active:
            self.active = False
            self._restore()

    def summary(self) -> dict:
        return {"malloc": self.reason.split(":")[0], "malloc_reason": self.reason}


def make_accelerator(*, mixed_precision: str = "no", cpu: bool = False, project_dir: Optional[Path] = None,
                     report_to: Iterable[str] = (), gradient_accumulation_steps: int = 1):
    """An ``Accelerator`` for this machine.

    Without a GPU it is built with ``cpu=True``: under ``accelerate launch --num_processes N`` that is
    what makes the N CPU processes one gloo data-parallel group (otherwise each trains alone).
    fp16 needs a GPU (loss scaling); asking for it on a CPU is an error with the fix. ``auto`` is
    resolved here (:func:`resolve_mixed_precision`) and logged with its reason; the choice is the
    Accelerator's ``mixed_precision``.
    """
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration

    use_cpu = cpu or not torch.cuda.is_available()
    mixed_precision, reason = resolve_mixed_precision(mixed_precision, cpu=use_cpu)
    if reason != "set explicitly":
        logger.info("mixed precision %s (%s); set it explicitly to repeat this run elsewhere", mixed_precision, reason)
    if mixed_precision == "fp16" and use_cpu:
        raise UserError("mixed_precision=fp16 needs a GPU (loss scaling); on a CPU use bf16 or no")
    trackers = available_trackers(report_to) if project_dir is not None else []
    # One process may run several stages (`mlm-pretrain run`, notebooks, tests), each with its own
    # mixed precision; accelerate keeps a process-wide AcceleratorState that refuses a change. Start it
    # afresh (the distributed process group lives in PartialState and is kept).
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=False)
    project = ProjectConfiguration(project_dir=str(project_dir), logging_dir=str(Path(project_dir) / "logs")) \
        if project_dir is not None else None
    accelerator = Accelerator(cpu=use_cpu, mixed_precision=mixed_precision, log_with=trackers or None,
                              project_config=project, gradient_accumulation_steps=gradient_accumulation_steps)
    warn_unsharded(accelerator)
    return accelerator


def warn_unsharded(accelerator) -> None:
    """Say so when ``accelerate launch`` asked for FSDP or DeepSpeed but this run is not sharded: on a
    CPU accelerate ignores both (``cpu=True``) and trains with plain data parallelism, every process
    holding the whole model and optimizer state."""
    from accelerate.utils import DistributedType, parse_flag_from_env

    asked = [name for name, env in (("FSDP", "ACCELERATE_USE_FSDP"), ("DeepSpeed", "ACCELERATE_USE_DEEPSPEED"))
             if parse_flag_from_env(env)]
    kind = accelerator.distributed_type
    if asked and kind not in (DistributedType.FSDP, DistributedType.DEEPSPEED) and accelerator.is_main_process:
        logger.warning("the launch asked for %s, but this run is not sharded (%s on %s): accelerate supports %s "
                       "on GPUs only, so every process holds the whole model and optimizer state; on a CPU "
                       "use scripts/accelerate/multi_cpu.yaml", asked[0], kind.value, accelerator.device.type,
                       asked[0])


# ----------------------------------------------------------------------------------------------
# The machine a training loop runs on, set up once
# ----------------------------------------------------------------------------------------------
@dataclass
class Machine:
    """What :func:`set_up_machine` chose for a training loop: the Accelerator, the precision (and why),
    and on a CPU the thread governor and the allocator setting (closed by the loop at its end)."""

    accelerator: Any
    precision: str
    precision_reason: str
    threads: Optional[ThreadGovernor] = None
    heap: Optional[HeapReuse] = None

    def tune(self, module, models, config, *, batch: int, seq: int, compile_setting) -> tuple:
        """``(attention backends, their reason, compiled, its reason)`` for ``module``: on a CPU the dropout
        masks and attention kernels measured for this shape, then ``torch.compile`` of the encoders."""
        device = self.accelerator.device.type
        attention, attention_reason = None, "PyTorch's choice"
        if device == "cpu":  # dropout masks, flash or math attention (measured)
            attention, attention_reason = cpu_training_kernels(module, config, self.precision, batch=batch, seq=seq)
            logger.info("CPU dropout masks from 64-bit random words; attention while training: %s", attention_reason)
        compiled, compile_reason = compile_encoders(models, compile_setting, device)
        logger.info("encoder %s (%s)", "compiled: the first step includes the compilation" if compiled
                    else "not compiled", compile_reason)
        return attention, attention_reason, compiled, compile_reason


def set_up_machine(pcfg, *, project_dir: Optional[Path] = None, report_to: Iterable[str] = ()) -> Machine:
    """The pretraining loop's hardware from ``pretrain.*``: mixed precision (``auto``: what this machine runs
    fastest), the Accelerator with the installed trackers, and on a CPU the threads and the allocator. A
    ``pretrain.compile=true`` without a compiler fails here, before any data work."""
    precision, reason = resolve_mixed_precision(pcfg.mixed_precision, cpu=pcfg.cpu or not torch.cuda.is_available())
    logger.info("mixed precision %s (%s)", precision, reason)
    acc = make_accelerator(mixed_precision=precision, cpu=pcfg.cpu, project_dir=project_dir, report_to=report_to)
    cpu = acc.device.type == "cpu"
    compile_toolchain(pcfg.compile, acc.device.type)
    return Machine(acc, precision, reason, ThreadGovernor(pcfg.threads) if cpu else None,
                   HeapReuse(pcfg.malloc) if cpu else None)
