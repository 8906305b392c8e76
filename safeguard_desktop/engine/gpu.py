"""GPU memory from `nvidia-smi`, and whether a model will fit before it is loaded.

Without nvidia-smi (no NVIDIA GPU, or another vendor) the answer is "unknown", never an error:
Ollama still runs, on whatever it finds.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
from dataclasses import dataclass

QUERY = "--query-gpu=memory.total,memory.used,memory.free"
MIB = 1024 * 1024
# Room for the context (KV cache; small for gpt-oss's sliding-window layers) and runtime
# buffers on top of the weights: 20b (13.8 GB) fits a 16 GiB card, 120b (65.3 GB) an 80 GB one.
OVERHEAD_FACTOR = 1.05
OVERHEAD_BYTES = 512 * 1024**2


@dataclass(frozen=True)
class Gpu:
    index: int
    total: int  # bytes
    used: int
    free: int


@dataclass(frozen=True)
class VramReport:
    gpus: tuple[Gpu, ...] = ()
    problem: str | None = None  # why it is unknown

    @property
    def known(self) -> bool:
        return bool(self.gpus)

    @property
    def total(self) -> int:
        return sum(g.total for g in self.gpus)

    @property
    def free(self) -> int:
        return sum(g.free for g in self.gpus)


@dataclass(frozen=True)
class FitCheck:
    fits: bool | None  # None: unknown (no nvidia-smi)
    needed: int  # bytes, model size plus overhead
    model_size: int
    free: int | None
    message: str


def gb(n: int) -> str:
    return f"{n / 1e9:.1f} GB"


def parse_nvidia_smi(output: str) -> tuple[Gpu, ...]:
    """Lines of "total, used, free" in MiB, one per GPU."""
    gpus = []
    for i, line in enumerate(x for x in output.splitlines() if x.strip()):
        try:
            total, used, free = (int(float(v.strip())) * MIB for v in line.split(",")[:3])
        except ValueError:
            continue  # "[N/A]" or "[Not Supported]"
        gpus.append(Gpu(i, total, used, free))
    return tuple(gpus)


async def query_vram(nvidia_smi: str | None = None, *, timeout: float = 5.0) -> VramReport:
    """Ask nvidia-smi (async, with a timeout); an unknown report when it is absent or fails."""
    exe = nvidia_smi or shutil.which("nvidia-smi")
    if not exe:
        return VramReport(problem="nvidia-smi not found (no NVIDIA GPU or driver)")
    try:
        proc = await asyncio.create_subprocess_exec(
            exe,
            QUERY,
            "--format=csv,noheader,nounits",
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
    except OSError as exc:
        return VramReport(problem=f"nvidia-smi could not run ({exc.strerror or exc})")
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        return VramReport(problem=f"nvidia-smi did not answer within {timeout:g} s")
    if proc.returncode != 0:
        text = (err or out).decode(errors="replace").strip().splitlines()
        return VramReport(problem=f"nvidia-smi failed: {text[0] if text else proc.returncode}")
    gpus = parse_nvidia_smi(out.decode(errors="replace"))
    return VramReport(gpus) if gpus else VramReport(problem="nvidia-smi reported no GPU memory")


def fit_check(name: str, model_size: int, vram: VramReport) -> FitCheck:
    """Will `name` (its file size from /api/tags) fit in the free GPU memory?"""
    needed = int(model_size * OVERHEAD_FACTOR) + OVERHEAD_BYTES
    if not vram.known:
        return FitCheck(
            None,
            needed,
            model_size,
            None,
            f"GPU memory unknown ({vram.problem}); {name} ({gb(model_size)}) may run on the "
            "CPU, which is much slower.",
        )
    if needed <= vram.free:
        return FitCheck(
            True,
            needed,
            model_size,
            vram.free,
            f"{name} ({gb(model_size)}) fits: about {gb(needed)} needed, {gb(vram.free)} of "
            "GPU memory free.",
        )
    return FitCheck(
        False,
        needed,
        model_size,
        vram.free,
        f"{name} ({gb(model_size)}) needs about {gb(needed)} of GPU memory but only "
        f"{gb(vram.free)} is free: Ollama would run part of it on the CPU, which is much "
        "slower. Unload other models or use a smaller one (gpt-oss-safeguard:20b fits 16 GB).",
    )
