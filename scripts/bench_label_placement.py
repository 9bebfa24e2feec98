"""Real-deformed label maps by placement rule, judged as the study's quality section judges its synthetic pool.

    python scripts/bench_label_placement.py --study DIR [--gan GAN_DIR] [--cases 24] [--seed 0] [--write]

From the finished study in DIR (``volgan study``; any profile) this draws ``--cases`` synthetic volumes (equal
classes) with real-deformed label maps from the GAN of the full real pool (``gan-N``, or ``--gan``: a spine_cgan
bundle folder trained on that same pool, such as one retrained at another batch size), once per placement rule of
:func:`volgan.gan.label_sources.deformed_real_label`:

- ``source``: from a map of the asked class (a tumor-free map for a tumor-free volume), the new tumor grown at the
  removed one's site;
- ``anywhere``: from a map of any class, the new tumor anywhere in its host tissue (the rule before).

Each set goes through ``volgan quality`` with the study's real-only 100:0 model of seed 0 as the judge. The
issue's targets: anatomy consistency ≥ 0.85 per label; the judge's tumor Dice on tumor-bearing synthetic volumes
≥ 0.8 × its real test figure; tumor-free volumes with a tumor found ≤ 10%.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from bench_label_sources import quality_table, row, study_parts
from benchmarks import write_section

from volgan.evaluation.quality import quality_report
from volgan.gan.synth import PLACEMENTS, load_synthesizer, synthesize


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--study", required=True, help="a finished volgan study folder")
    parser.add_argument("--gan", help="a spine_cgan bundle folder trained on the study's full pool (default: its own)")
    parser.add_argument("--gan-note", default="", help="how --gan was trained, for the record")
    parser.add_argument("--cases", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--write", action="store_true", help="write the section into BENCHMARKS.md")
    args = parser.parse_args()
    study = Path(args.study)
    own_gan, real, judge = study_parts(study)
    gan = Path(args.gan) if args.gan else own_gan
    profile = json.loads((study / "profile.json").read_text(encoding="utf-8"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for placement in PLACEMENTS:
            folder = Path(tmp) / placement
            synthesize(load_synthesizer(gan), folder / "synthetic", n_cases=args.cases, seed=args.seed,
                       label_source="real-deformed", pool=own_gan / "data", placement=placement)
            report = quality_report(real, folder / "synthetic", folder / "quality", model=judge, seed=args.seed)
            rows.append(f"| {placement} " + row("real-deformed", report))
            print(rows[-1], flush=True)
    which = f"`--gan` ({args.gan_note or 'a GAN of the same pool'})" if args.gan else f"the study's own {own_gan.name}"
    body = (f"Study profile {profile['name']}: {args.cases} synthetic volumes with real-deformed label maps (equal "
            f"classes, seed {args.seed}) from {which}, judged by the study's real-only 100:0 model of seed 0.\n\n"
            + quality_table(["placement"], rows))
    if args.write:
        gan_label = args.gan_note or "a retrained GAN" if args.gan else "the study's own GAN"
        write_section(f"Label maps from the source's class and site ({profile['name']} profile, {gan_label})", body,
                      f"python scripts/bench_label_placement.py --study {study.name}"
                      + (" --gan GAN_DIR" if args.gan else "") + f" --cases {args.cases} --write")
    else:
        print(body)


if __name__ == "__main__":
    main()
