"""Stages side by side: one spine_segcls run on every core against two runs at once, each on its share.

    python scripts/bench_study_jobs.py --study DIR [--epochs 6]

From the finished study in DIR (any profile) this trains the real-only 100:0 arm of seed 0 (its own datalist,
the profile's size, spacing, widths and batch size, ``--epochs`` epochs, no augmentation) in fresh processes:
once alone with ``os.cpu_count()`` torch threads, then twice at the same time with half the threads each, as
``volgan study --jobs 2`` builds its stages. Reported: the wall time of each, and the volumes trained per second
side by side over those alone (the ratio that decides ``volgan.study.run.default_jobs``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import write_section

SECTION = "Study stages side by side"


def child(threads: int, study: Path, epochs: int) -> None:
    """Train the run once in this process with ``threads`` torch threads."""
    import torch

    torch.set_num_threads(threads)
    from volgan.study.stages import run_bundle

    run = reference_run(study)
    profile = json.loads((study / "profile.json").read_text(encoding="utf-8"))
    s, sp = profile["size"], profile["spacing"]
    with tempfile.TemporaryDirectory() as tmp:
        run_bundle("spine_segcls", Path(tmp), {
            "dataset_dir": str(run), "max_epochs": epochs, "patch": [s, s, s], "spacing": [sp] * 3,
            "channels": profile["channels"], "batch_size": profile["batch_size"], "augment": "none", "seed": 0,
            "learning_rate": profile["learning_rate"], "val_fraction": 0.0, "val_interval": epochs + 1})


def reference_run(study: Path) -> Path:
    stages = json.loads((study / "manifest.json").read_text(encoding="utf-8"))["stages"]
    key = next(k for k, v in stages.items() if v["kind"] == "run" and v["label"].startswith("spine_segcls sweep 100:0")
               and v["label"].endswith("seed 0"))
    return study / "stages" / key


def timed(commands: list[list[str]], threads: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    start = time.perf_counter()
    procs = [subprocess.Popen(c, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for c in commands]
    for proc in procs:
        _, err = proc.communicate()
        if proc.returncode:
            sys.exit(f"bench_study_jobs: a training process failed: {err.strip().splitlines()[-1:]}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", required=True, help="a finished volgan study folder")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    study = Path(args.study)
    if args.child:
        child(args.child, study, args.epochs)
        return
    cores = os.cpu_count() or 1
    half = max(1, cores // 2)
    command = [sys.executable, __file__, "--study", str(study), "--epochs", str(args.epochs), "--child"]
    alone = timed([command + [str(cores)]], cores)
    together = timed([command + [str(half)]] * 2, half)
    cases = len(json.loads((reference_run(study) / "trained_on.json").read_text(encoding="utf-8")))
    ratio = 2 * alone / together
    body = (f"The real-only 100:0 run of seed 0 ({cases} volumes, {args.epochs} epochs, no augmentation, each in a "
            f"fresh process, start-up included) on {cores} cores.\n\n"
            "| how | runs | wall time | volumes a second |\n|---|---|---|---|\n"
            f"| one run, {cores} threads | 1 | {alone:.1f} s | {cases * args.epochs / alone:.1f} |\n"
            f"| two runs at once, {half} thread(s) each | 2 | {together:.1f} s | "
            f"{2 * cases * args.epochs / together:.1f} |\n\n"
            f"Side by side: **{ratio:.2f}×** the volumes a second of one run alone.")
    print(body)
    write_section(SECTION, body, f"python scripts/bench_study_jobs.py --study STUDY --epochs {args.epochs}")


if __name__ == "__main__":
    main()
