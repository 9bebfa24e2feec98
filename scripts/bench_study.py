"""The quick study's wall time on this machine (target: under 30 minutes on 2 CPU cores), with the time
of each kind of stage; whether its real-only 100:0 arm learned the tumor task (tumor-detection AUC ≥ 0.85,
tumor Dice ≥ 0.40, anatomy Dice ≥ 0.90, no model with one call for every test volume); the resolution (median
95% CI width of the paired AUC differences, target ≤ 0.15); the papers' claims as tested; and its findings.

    python scripts/bench_study.py [--profile quick] [--out DIR]

Runs ``volgan study --profile quick`` from nothing in a fresh folder (a temporary one unless ``--out``)
as a user would, timing the command itself.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from benchmarks import write_section

from volgan.evaluation.rendering import fmt

TIME_TARGETS_S = {"tiny": 60, "quick": 30 * 60, "standard": 3 * 3600}  # on this 2-core machine
LEARNING_TARGETS = {"auc": 0.85, "tumor_dice": 0.40, "anatomy_dice": 0.90}
RESOLUTION_TARGET = 0.15
FALLBACK_AUC = 0.75


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--out", help="study folder (must not exist yet)")
    parser.add_argument("--finished", help="summarize this finished study instead of running one; its wall time from "
                                           "nothing, timed outside, goes in --wall-seconds")
    parser.add_argument("--wall-seconds", type=float, help="with --finished: the study command's measured wall time")
    parser.add_argument("--timed-command", default="volgan study --profile quick --out study",
                        help="with --finished: the command that was timed, for the record")
    parser.add_argument("--conditions", default="",
                        help="with --finished: how the timed run shared the machine, written beside its wall time")
    args = parser.parse_args()
    if args.finished:
        if args.wall_seconds is None:
            sys.exit("bench_study: --finished needs --wall-seconds")
        body = summarize(Path(args.finished), args.wall_seconds, args.profile, args.conditions)
        print(body)
        write_section(f"Study, {args.profile} profile", body,
                      f"{args.timed_command} (timed); python scripts/bench_study.py --profile {args.profile} "
                      f"--finished {args.finished} --wall-seconds {args.wall_seconds}")
        return
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or Path(tmp) / "study")
        if out.exists():
            sys.exit(f"bench_study: {out} exists; the benchmark needs a fresh folder")
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "volgan", "study", "--profile", args.profile, "--out", str(out),
                        "--quiet"], check=True)
        wall = time.perf_counter() - start
        body = summarize(out, wall, args.profile)
    print(body)
    write_section(f"Study, {args.profile} profile", body, f"python scripts/bench_study.py --profile {args.profile}")


def summarize(out: Path, wall: float, profile: str, conditions: str = "") -> str:
    """The BENCHMARKS section of the finished study in ``out`` that took ``wall`` seconds."""
    stages = json.loads((out / "manifest.json").read_text(encoding="utf-8"))["stages"]
    study = json.loads((out / "study.json").read_text(encoding="utf-8"))
    seconds, counts = defaultdict(float), defaultdict(int)
    for entry in stages.values():
        seconds[entry["kind"]] += entry["seconds"]
        counts[entry["kind"]] += 1
    rows = "".join(f"| {kind} | {counts[kind]} | {seconds[kind]:.0f} s |\n" for kind in
                   ("data", "gan", "synth", "run", "eval", "quality", "report") if kind in counts)
    target = TIME_TARGETS_S.get(profile)
    shared = f" ({conditions})" if conditions else ""
    if target is None:
        timing = f"{wall / 60:.1f} min{shared} | no CPU target for this profile |"
    else:
        timing = (f"{wall / 60:.1f} min{shared} | {'met' if wall < target else 'NOT met'} (target < "
                  f"{target / 60:.0f} min: {wall / target:.2f}× the budget) |")
    reference = {r["metric"]: r for r in study["results"] if r["section"] == "sweep" and r["arm"] == "100:0"
                 and r["severity"] == "clean"}
    learned = "".join(
        f"| 100:0 {name}, mean over seeds (target ≥ {target}) | {fmt(reference[name]['mean'])} "
        f"[{fmt(reference[name]['ci_low'])}, {fmt(reference[name]['ci_high'])}] | "
        f"{'met' if (reference[name]['mean'] or 0) >= target else 'NOT met'} |\n"
        for name, target in LEARNING_TARGETS.items())
    degenerate = study["degenerate_classifiers"]
    fallback = (reference["auc"]["mean"] or 0) >= FALLBACK_AUC and degenerate["n"] == 0
    widths = [r["difference"]["ci_high"] - r["difference"]["ci_low"] for r in study["results"]
              if "difference" in r and r["metric"] == "auc" and r["severity"] == "clean"
              and r["difference"]["ci_low"] is not None and r["difference"]["ci_high"] is not None]
    width = statistics.median(widths) if widths else float("nan")
    claims = "".join(f"| {c['claim']} | {c['metric']} | {c['comparison']} | "
                     f"{fmt(c['difference']['mean'])} [{fmt(c['difference']['ci_low'])}, "
                     f"{fmt(c['difference']['ci_high'])}] | {c['verdict']} |\n" for c in study["claims"])
    body = (f"| what | figure | verdict |\n|---|---|---|\n| `volgan study --profile {profile}` from nothing, "
            f"wall time | {timing}\n"
            f"{learned}| models giving every clean test volume the same tumor call (target 0) | "
            f"{degenerate['n']} of {degenerate['of']} | {'met' if degenerate['n'] == 0 else 'NOT met'} |\n"
            f"| median 95% CI width of the paired AUC differences (target ≤ {RESOLUTION_TARGET}) | {width:.3f} | "
            f"{'met' if width <= RESOLUTION_TARGET else 'NOT met'} |\n"
            f"| the profile at least learns (the issue's fallback where the targets above need more budget: 100:0 AUC "
            f"≥ {FALLBACK_AUC} and no model with one call) | AUC {fmt(reference['auc']['mean'])}, {degenerate['n']} "
            f"with one call | {'met' if fallback else 'NOT met'} |\n\n"
            f"| stage kind | stages | time, summed over its stages (built two at a time where the study's --jobs is "
            f"2, so the sum exceeds the wall time) |\n|---|---|---|\n{rows}\n"
            f"Claims of the two papers, as this run tests them:\n\n| claim | metric | comparison | difference "
            f"[95% CI] | verdict |\n|---|---|---|---|---|\n{claims}\n"
            f"Findings of this run ({study['n']['seeds']} seeds, {study['n']['test']} test volumes):\n\n"
            + "".join(f"- {line}\n" for line in study["findings"]))
    return body


if __name__ == "__main__":
    main()
