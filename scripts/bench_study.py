"""The quick study's wall time on this machine (target: under 25 minutes on 2 CPU cores), with the time
of each kind of stage, and what it found.

    python scripts/bench_study.py [--profile quick] [--out DIR]

Runs ``volgan study --profile quick`` from nothing in a fresh folder (a temporary one unless ``--out``)
as a user would, timing the command itself.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from benchmarks import write_section

TARGET_S = 25 * 60


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--out", help="study folder (must not exist yet)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or Path(tmp) / "study")
        if out.exists():
            sys.exit(f"bench_study: {out} exists; the benchmark needs a fresh folder")
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "volgan", "study", "--profile", args.profile, "--out", str(out),
                        "--quiet"], check=True)
        wall = time.perf_counter() - start
        stages = json.loads((out / "manifest.json").read_text(encoding="utf-8"))["stages"]
        study = json.loads((out / "study.json").read_text(encoding="utf-8"))
    seconds, counts = defaultdict(float), defaultdict(int)
    for entry in stages.values():
        seconds[entry["kind"]] += entry["seconds"]
        counts[entry["kind"]] += 1
    rows = "".join(f"| {kind} | {counts[kind]} | {seconds[kind]:.0f} s |\n" for kind in
                   ("data", "gan", "synth", "run", "eval", "quality", "report") if kind in counts)
    met = "met" if wall < TARGET_S else "NOT met"
    body = (f"| what | figure |\n|---|---|\n| `volgan study --profile {args.profile}` from nothing, wall time | "
            f"{wall / 60:.1f} min |\n| target: under 25 min on 2 CPU cores | {met} ({wall / TARGET_S:.2f}× the "
            f"budget) |\n\n| stage kind | stages | time |\n|---|---|---|\n{rows}\n"
            f"Findings of this run ({study['n']['seeds']} seeds, {study['n']['test']} test volumes):\n\n"
            + "".join(f"- {line}\n" for line in study["findings"]))
    print(body)
    write_section(f"Study, {args.profile} profile", body, f"python scripts/bench_study.py --profile {args.profile}")


if __name__ == "__main__":
    main()
