"""The study on its two executors, one after the other on this machine: the local worker processes and a local Ray
instance, timed as a user runs them, and whether they give the same figures.

    python scripts/bench_executors.py [--profile tiny|quick] [--write]

Each run is ``volgan study --profile P --out TMP/NAME --quiet`` in a fresh folder (``--executor ray`` for Ray, which
starts its own local instance and stops it at the end), so start-up and every stage are counted. Both build two
stages at a time on 2 cores (the local executor's default; Ray's one core per task). The figures compared are
study.json's ``results``, ``findings``, ``claims``, ``real_mri`` and ``quality`` (without the paths it names).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import write_section

SECTION = "Study executors: local workers and Ray"
EXECUTORS = {"local": [], "ray": ["--executor", "ray"]}


def figures(study: Path) -> dict:
    """study.json's figures, without the paths that differ between two study folders."""
    doc = json.loads((study / "study.json").read_text(encoding="utf-8"))
    quality = doc["quality"]
    quality.pop("real", None), quality.pop("synthetic", None)
    quality.get("label_consistency", {}).pop("model", None)
    return {k: doc[k] for k in ("results", "findings", "claims", "real_mri")} | {"quality": quality}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="tiny", choices=["tiny", "quick"])
    parser.add_argument("--write", action="store_true", help="write the section into BENCHMARKS.md")
    args = parser.parse_args()
    seconds, studies = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, extra in EXECUTORS.items():
            out = Path(tmp) / name
            start = time.perf_counter()
            result = subprocess.run([sys.executable, "-m", "volgan", "study", "--profile", args.profile, "--out",
                                     str(out), "--quiet", *extra], capture_output=True, text=True)
            seconds[name] = time.perf_counter() - start
            if result.returncode:
                sys.exit(f"volgan study on the {name} executor failed: {result.stderr.strip()[-500:]}")
            studies[name] = figures(out)
            print(f"{name}: {seconds[name]:.1f} s", file=sys.stderr)
    same = studies["local"] == studies["ray"]
    body = "\n".join([
        f"The {args.profile} study from nothing on each executor, one after the other, two stages at a time on 2 "
        "cores (local: two worker processes of one thread; Ray: a local instance, tasks of one core).", "",
        "| executor | wall time | against local |", "|---|---|---|",
        *[f"| {name} | {seconds[name]:.1f} s | {seconds[name] / seconds['local']:.2f}× |" for name in EXECUTORS], "",
        f"Same study.json figures (results, findings, claims, real MRI, quality): **{'yes' if same else 'NO'}**."])
    print(body)
    if args.write:
        write_section(SECTION, body, f"python scripts/bench_executors.py --profile {args.profile}")


if __name__ == "__main__":
    main()
