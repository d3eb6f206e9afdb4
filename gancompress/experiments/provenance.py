"""Where a measured figure comes from: the machine and the commit, for every result JSON
(``gancompress baselines``, ``gancompress benchmark --runtimes``)."""
from __future__ import annotations

import os
import platform
import subprocess

import torch


def machine_record(device: torch.device) -> dict:
    """Where the figures were measured: cores, torch threads, processor, torch version, device."""
    record = {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
              "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "platform": platform.platform(),
              "processor": platform.processor() or platform.machine(), "torch": torch.__version__,
              "training_device": str(device)}
    if device.type == "cuda":
        record["gpu"] = torch.cuda.get_device_name(device)
    return record


def commit_record() -> dict:
    """The checkout's commit and whether it had uncommitted changes (None outside a git checkout)."""
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10, check=True)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip()
    sha = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if sha else None
    return {"commit": sha, "dirty": bool(status) if status is not None else None}
