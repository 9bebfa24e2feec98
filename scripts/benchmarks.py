"""Shared by the benchmark scripts: write a named section of BENCHMARKS.md atomically."""

from __future__ import annotations

import platform
import re
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from volgan.data.files import write_text  # noqa: E402


def machine() -> str:
    """This machine in one line: architecture, cores and whether its CPU computes bfloat16 natively (training's
    ``"auto"`` precision follows it), Python, torch and GPU."""
    import os

    import torch

    from volgan.training import bf16_autocast

    gpu = f"CUDA {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "no GPU"
    # training's "auto" arithmetic differs between CPUs, and with it every trained model's figures
    arithmetic = ("native bfloat16 (training's auto: bf16)" if bf16_autocast("auto", "cpu")
                  else "no native bfloat16 (training's auto: fp32)")
    return (f"{platform.machine()}, {os.cpu_count()} CPU cores ({arithmetic}), Python {platform.python_version()}, "
            f"torch {torch.__version__}, {gpu}")


def write_section(name: str, body: str, command: str, measured_on: str | None = None) -> None:
    """Replace (or append) the section ``name`` of BENCHMARKS.md with ``body``; ``measured_on`` names the machine that
    measured when it is not this one (default: this one)."""
    path = ROOT / "BENCHMARKS.md"
    header = "# volgan benchmarks\n\nWritten by the scripts under `scripts/`; each section says how to re-run it.\n"
    text = path.read_text(encoding="utf-8") if path.exists() else header
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True).stdout.strip()
        changed = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                  ":!BENCHMARKS.md"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        commit += " with uncommitted changes" if changed else ""
    except OSError:
        commit = "?"
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    block = (f"<!-- {name} -->\n## {name}\n\nCommand: `{command}`  \nMeasured {stamp} at commit {commit} on "
             f"{measured_on or machine()}.\n\n{body.strip()}\n<!-- /{name} -->")
    pattern = re.compile(rf"<!-- {re.escape(name)} -->.*?<!-- /{re.escape(name)} -->", re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    write_text(path, text)
