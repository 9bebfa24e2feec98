"""The two synthetic label sources compared on a finished study's own GAN, judged by its own real-only model.

    python scripts/bench_label_sources.py --study DIR [--cases 24] [--seed 0]

From the study in DIR (``volgan study``; any profile) this takes the GAN of the full real pool (``gan-N``), draws
``--cases`` synthetic volumes (equal classes) with each label source of ``volgan synth``: ``gan`` (the label
generator) and ``real-deformed`` (real training maps of that GAN's pool, deformed, with new tumors), the same
image generator painting both, and runs ``volgan quality`` on each with the study's real-only 100:0 model of seed 0
as the judge (the study's quality section uses the same judge). Reported per source: label consistency per
anatomy label, the judge's tumor Dice on tumor-bearing synthetic volumes against its tumor Dice on the real
test set, tumor-free synthetic volumes the judge calls a tumor in, the Fréchet distances (random ResNet-10 and the
judge's encoder, each with its real-vs-real floor), MS-SSIM diversity, memorization p-value and verdict, and
tumor sites verified. The issue's targets: tumor-bearing tumor Dice ≥ 0.8 × the real test's; tumor-free volumes
with a tumor found ≤ 10%; anatomy consistency ≥ 0.85 per label.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from benchmarks import write_section

from volgan.evaluation.quality import quality_report
from volgan.evaluation.rendering import fmt
from volgan.gan.synth import LABEL_SOURCES, load_synthesizer, synthesize


def study_parts(study: Path) -> tuple[Path, Path, Path]:
    """(the GAN stage of the full pool, the real data, the judge's model) of a finished study."""
    stages = json.loads((study / "manifest.json").read_text(encoding="utf-8"))["stages"]
    quality = stages["quality"]["deps"]  # ("data", "synth-N", judge run)
    full = quality[1].removeprefix("synth-")
    return study / "stages" / f"gan-{full}", study / "stages" / "data" / "real", \
        study / "stages" / quality[2] / "models" / "model_final.pt"


QUALITY_COLUMNS = ("label source", "anatomy consistency Dice, vertebra / disc / cord / CSF (target ≥ 0.85 each)",
                   "judge's tumor Dice on tumor-bearing synthetic volumes (target ≥ 0.8 × real test)",
                   "tumor-free volumes with a tumor found (target ≤ 10%)", "Fréchet, random ResNet-10 (real floor)",
                   "Fréchet, judge's encoder (real floor)", "MS-SSIM synthetic vs real", "memorization (smoothed)",
                   "tumor sites verified", "targets met")


def quality_table(leading: list[str], rows: list[str]) -> str:
    """A Markdown table of :func:`row` lines, each after ``leading`` columns of its own."""
    columns = [*leading, *QUALITY_COLUMNS]
    return "| " + " | ".join(columns) + " |\n" + "|---" * len(columns) + "|\n" + "\n".join(rows) + "\n"


def row(source: str, report: dict) -> str:
    c, o, m = report["label_consistency"], report["overall"], report["memorization"]["smoothed"]
    anatomy = " / ".join(fmt(c["dice"][k]["mean"]) for k in ("vertebra", "disc", "cord", "csf"))
    free = c["tumor_free"]
    met = sum(t["met"] for t in c["targets"])
    return (f"| {source} | {anatomy} | {fmt(c['tumor_bearing']['tumor_dice'])} (real test "
            f"{fmt(c['real_test']['tumor_dice'])}) | {free['with_tumor_found']} of {free['of']} | "
            f"{fmt(o['frechet_synthetic_vs_real'], 3)} ({fmt(o['frechet_real_vs_real'], 3)}) | "
            f"{fmt(o.get('frechet_judge_synthetic_vs_real'), 3)} ({fmt(o.get('frechet_judge_real_vs_real'), 3)}) | "
            f"{fmt(o['msssim_synthetic'])} vs {fmt(o['msssim_real'])} | p = {fmt(m['p_value'], 3)}, {m['verdict']} | "
            f"{report['tumor_site_verified']['n']} of {report['tumor_site_verified']['of']} | "
            f"{met} of {len(c['targets'])} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--study", required=True, help="a finished volgan study folder")
    parser.add_argument("--cases", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    study = Path(args.study)
    gan, real, judge = study_parts(study)
    synth = load_synthesizer(gan)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for source in LABEL_SOURCES:
            out = Path(tmp) / source
            synthesize(synth, out / "synthetic", n_cases=args.cases, seed=args.seed, label_source=source,
                       pool=gan / "data" if source == "real-deformed" else None)
            report = quality_report(real, out / "synthetic", out / "quality", model=judge, seed=args.seed)
            rows.append(row(source, report))
            print(rows[-1], flush=True)
    profile = json.loads((study / "profile.json").read_text(encoding="utf-8")) \
        if (study / "profile.json").is_file() else {}
    body = (f"The study's own GAN of the full real pool ({gan.name}; profile {profile.get('name', '?')}, "
            f"{profile.get('gan_presentations', '?')} GAN presentations), {args.cases} synthetic volumes per source "
            f"(equal classes, seed {args.seed}), judged by the study's real-only 100:0 model of seed 0.\n\n"
            + quality_table([], rows))
    write_section("Synthetic label sources on the study's own GAN", body,
                  f"python scripts/bench_label_sources.py --study {study.name} --cases {args.cases}")


if __name__ == "__main__":
    main()
