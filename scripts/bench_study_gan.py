"""The study's GAN at its profile's budget, by batch size: the same presentations in more or fewer optimiser
steps, judged as the study's quality section judges its synthetic pool.

    python scripts/bench_study_gan.py --study DIR [--batch-sizes 8,2,1] [--cases 24] [--seed 0]

From the finished study in DIR (``volgan study``; any profile) this retrains the GAN of the full real pool
(``gan-N``: its own training cases, the profile's size, spacing, width, seed and GAN presentations) once per batch
size, draws ``--cases`` synthetic volumes with real-deformed label maps (the study's default source) and runs
``volgan quality`` on them with the study's real-only 100:0 model of seed 0 as the judge. Reported per batch
size: optimiser steps, the GAN's training time (the bundle run, 2 threads), and the quality row of
``bench_label_sources.py``. The issue's targets: anatomy consistency ≥ 0.85 per label; the judge's tumor Dice on
tumor-bearing synthetic volumes ≥ 0.8 × its real test figure; tumor-free volumes with a tumor found ≤ 10%.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from bench_label_sources import quality_table, row, study_parts
from benchmarks import write_section

from volgan.data.datalist import read_datalist
from volgan.evaluation.quality import quality_report
from volgan.gan.synth import load_synthesizer, synthesize
from volgan.study.build import gan_overrides
from volgan.study.profiles import StudyProfile
from volgan.study.stages import run_bundle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--study", required=True, help="a finished volgan study folder")
    parser.add_argument("--batch-sizes", default="8,2,1", help="comma-separated GAN batch sizes")
    parser.add_argument("--cases", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    study = Path(args.study)
    gan, real, judge = study_parts(study)
    profile = StudyProfile.from_dict(json.loads((study / "profile.json").read_text(encoding="utf-8")))
    pool = gan / "data"  # the GAN's own training cases (their datalist)
    n = len(read_datalist(pool).cases)
    epochs = profile.gan_epochs(n)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for batch_size in (int(b) for b in args.batch_sizes.split(",")):
            folder = Path(tmp) / f"batch{batch_size}"
            folder.mkdir()
            start = time.perf_counter()
            run_bundle("spine_cgan", folder, gan_overrides(replace(profile, gan_batch_size=batch_size), pool, n))
            seconds = time.perf_counter() - start
            synthesize(load_synthesizer(folder), folder / "synthetic", n_cases=args.cases, seed=args.seed,
                       label_source="real-deformed", pool=pool)
            report = quality_report(real, folder / "synthetic", folder / "quality", model=judge, seed=args.seed)
            steps = epochs * math.ceil(n / batch_size)
            rows.append(f"| {batch_size} | {steps} | {seconds:.0f} s |" + row("real-deformed", report)[1:])
            print(rows[-1], flush=True)
    body = (f"The study's GAN of the full real pool ({gan.name}: {n} real volumes, profile {profile.name}, "
            f"{profile.gan_presentations} presentations = {epochs} epochs), retrained per batch size; "
            f"{args.cases} synthetic volumes with real-deformed label maps (equal classes, seed {args.seed}), judged "
            f"by the study's real-only 100:0 model of seed 0. GAN time: the bundle run on 2 CPU cores.\n\n"
            + quality_table(["GAN batch size", "optimiser steps", "GAN time"], rows))
    write_section("The study's GAN by batch size", body,
                  f"python scripts/bench_study_gan.py --study {study.name} --batch-sizes {args.batch_sizes} "
                  f"--cases {args.cases}")


if __name__ == "__main__":
    main()
