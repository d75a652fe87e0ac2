"""One GPU per local job: a pool of (device, slot) pairs guarded by file locks.

The Snakefile resolves the pool once (config `gpus`, else `CUDA_VISIBLE_DEVICES`, else `nvidia-smi`) and exports
it to every job as `LAYERLAB_GPUS` (comma-separated device ids), `LAYERLAB_GPU_SLOTS` (jobs per device) and
`LAYERLAB_GPU_LOCKS` (lock folder). A job calls `claim()` before torch initialises CUDA: it takes the first free
slot, spreading jobs over devices before stacking them, and sets `CUDA_VISIBLE_DEVICES` to that one device. The
lock is an `flock` held by the open file for the life of the process, so a killed job frees its slot.
Inside a SLURM allocation (`SLURM_JOB_ID` set) SLURM binds devices itself and `claim()` does nothing.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import time
from pathlib import Path

ENV_DEVICES, ENV_SLOTS, ENV_LOCKS = "LAYERLAB_GPUS", "LAYERLAB_GPU_SLOTS", "LAYERLAB_GPU_LOCKS"
_held: list = []  # open lock files of this process (closing one would release its slot)


def detect() -> list[str]:
    """Visible GPUs: `CUDA_VISIBLE_DEVICES` if set, else the indices `nvidia-smi` lists, else none."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d.strip() for d in visible.split(",") if d.strip() and d.strip() != "-1"]
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def resolve(spec: dict | None) -> tuple[list[str], int]:
    """The pool from the config's `gpus` ({devices: auto | [ids], slots_per_gpu: n}): (device ids, slots each)."""
    spec = spec or {}
    devices = spec.get("devices", "auto")
    devices = detect() if devices == "auto" else [str(d) for d in devices]
    return devices, int(spec.get("slots_per_gpu", 1))


def export(devices: list[str], slots: int, lock_dir: str | os.PathLike) -> dict[str, str]:
    """The environment that tells jobs about the pool (the Snakefile puts it into os.environ)."""
    return {ENV_DEVICES: ",".join(devices), ENV_SLOTS: str(slots), ENV_LOCKS: str(lock_dir)}


def _try_lock(path: Path):
    f = open(path, "a+")  # kept open: the lock lives as long as the file object
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        return None
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")
    f.flush()
    return f


def acquire(devices: list[str], slots: int, lock_dir: str | os.PathLike, timeout: float | None = None,
            poll: float = 0.5) -> tuple[str, int, object]:
    """Take a free (device, slot), waiting up to `timeout` seconds (None: forever). Returns (device, slot, lock);
    the slot is held until the lock file is closed or the process ends. Slot-major order spreads jobs over
    devices: with 2 devices x 2 slots, the first two jobs get different devices."""
    if not devices or slots < 1:
        raise ValueError("empty GPU pool")
    lock_dir = Path(lock_dir)
    lock_dir.mkdir(parents=True, exist_ok=True)
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        for slot in range(slots):
            for dev in devices:
                f = _try_lock(lock_dir / f"gpu{dev}.slot{slot}.lock")
                if f is not None:
                    return dev, slot, f
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError(f"no free GPU slot in {lock_dir} after {timeout} s")
        time.sleep(poll)


def claim(environ=os.environ, timeout: float | None = None) -> str | None:
    """In a job: pin this process to one pooled GPU via CUDA_VISIBLE_DEVICES (before CUDA initialises).
    Returns the device id, or None when there is no pool (CPU run) or SLURM binds devices."""
    if _held:
        return environ.get("CUDA_VISIBLE_DEVICES")
    devices = [d for d in environ.get(ENV_DEVICES, "").split(",") if d]
    if not devices or "SLURM_JOB_ID" in environ or not environ.get(ENV_LOCKS):
        return None
    dev, _, lock = acquire(devices, int(environ.get(ENV_SLOTS, "1")), environ[ENV_LOCKS], timeout=timeout)
    _held.append(lock)
    environ["CUDA_VISIBLE_DEVICES"] = dev
    return dev
