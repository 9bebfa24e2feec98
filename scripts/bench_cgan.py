"""spine_cgan targets on 48 phantom training volumes of 32³ on this machine.

Targets: training to the default schedule of bundles/spine_cgan/configs/train.json in under 20 minutes;
label-consistency Dice ≥ 0.6 on tumor and ≥ 0.8 on each anatomy label; synthetic MS-SSIM diversity within
15% of real; no synthetic volume nearer to a training volume than the nearest test volume is.

    python scripts/bench_cgan.py [--work DIR] [--segcls-epochs 60] [--judge-cases 400] [--judge-epochs 20]

Steps: 60 phantoms of 32³ (48 training, 12 test) → the GAN bundle trained to its default schedule (timed)
→ two spine_segcls judges for label consistency, each with its own Dice on the real test set beside (what
consistency can show is capped by what the judge does on real volumes):

- the pool judge, trained on the GAN's own 48 training volumes (``--segcls-epochs``): what a user with only
  these data has;
- the reference judge, trained on ``--judge-cases`` other phantoms (another seed; ``--judge-epochs``): a
  better instrument, independent of the GAN's data. The verdict is on this judge.

→ 48 synthetic volumes (equal classes, seed 0) → ``volgan quality`` with the reference judge → the 12 real
test label maps painted by the image generator (``volgan synth --labels``) and judged too, which separates
the image generator from the label generator. The diversity verdict is on the mean MS-SSIM of 48 volumes
over ``--diversity-seeds`` synthesis seeds (0, 1, …): one draw of 48 volumes moves the synthetic figure by
several hundredths.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from benchmarks import ROOT, write_section

from volgan.data.datalist import read_datalist
from volgan.data.io import read_volume
from volgan.data.phantom import PhantomConfig, make_dataset
from volgan.evaluation.metrics import segmentation_metrics
from volgan.evaluation.quality import load_arrays, quality_report
from volgan.evaluation.similarity import DIVERSITY_PAIRS, label_consistency
from volgan.gan.synth import load_synthesizer, synthesize
from volgan.gan.trainer import msssim_diversity
from volgan.labels import LABELS
from volgan.segcls.predict import load_model, predict
from volgan.transforms import Preprocessing

TARGET_TRAIN_S = 20 * 60
GRID = Preprocessing((1.5,) * 3, (32,) * 3)
ANATOMY = ("vertebra", "disc", "cord", "csf")


def bundle_run(name: str, *args: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/train.json",
                    "--progress", "false", *args],
                   cwd=ROOT / "bundles" / name, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def real_test_dice(model_path: Path, data: Path) -> dict[int, float]:
    model = load_model(model_path, "cpu")
    rows = []
    for case in read_datalist(data).split("test"):
        image, label = read_volume(case.image), read_volume(case.label, label=True)
        metrics = segmentation_metrics(predict(model, image).label.array, label.array, image.spacing)
        rows.append([metrics[k]["Dice"] for k in range(1, 6)])
    values = np.array(rows)
    return {k: float(np.nanmean(values[:, k - 1])) for k in range(1, 6)}


def consistency(model_path: Path, datalist: Path) -> tuple[dict[str, float], dict[int, float], int]:
    """Mean Dice per label between a datalist's label maps and the judge's predictions on its images, the
    tumor Dice per tumor_type, and how many tumor-free volumes the judge finds a tumor in."""
    cases = read_datalist(datalist).cases
    images, labels = load_arrays(cases, GRID)
    dice, _ = label_consistency(load_model(model_path, "cpu"), images, labels, np.diag([*GRID.spacing, 1.0]))
    types = np.array([c.tumor_type for c in cases])
    means = {LABELS[k]: float(np.nanmean(dice[:, k - 1])) for k in range(1, 6)}
    per_type = {t: float(np.nanmean(dice[types == t, 4])) for t in (1, 2, 3) if (types == t).any()}
    false_tumors = int(np.sum((types == 0) & np.isfinite(dice[:, 4])))  # Dice 0, not NaN: a tumor was found
    return means, per_type, false_tumors


def describe(name: str, judge: tuple, ceiling: dict[int, float]) -> str:
    means, per_type, false_tumors = judge
    return (f"| {name} | {means['tumor']:.3f} (intramedullary {per_type.get(1, np.nan):.2f}, intradural "
            f"extramedullary {per_type.get(2, np.nan):.2f}, vertebral {per_type.get(3, np.nan):.2f}) | "
            + ", ".join(f"{means[k]:.3f}" for k in ANATOMY) + f" | {false_tumors} | {ceiling[5]:.3f}; "
            + ", ".join(f"{ceiling[k]:.3f}" for k in range(1, 5)) + " |\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work", help="keep the data and models here (default: a temporary folder)")
    parser.add_argument("--segcls-epochs", type=int, default=60)
    parser.add_argument("--judge-cases", type=int, default=400)
    parser.add_argument("--judge-epochs", type=int, default=20)
    parser.add_argument("--synthetic", type=int, default=48)
    parser.add_argument("--diversity-seeds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        data, judge_data = work / "real", work / "judge_data"
        if not (data / "dataset.json").exists():
            make_dataset(data, 60, PhantomConfig(size=(32, 32, 32)), seed=21, test_fraction=0.2, workers=2)
        if not (judge_data / "dataset.json").exists():
            make_dataset(judge_data, args.judge_cases, PhantomConfig(size=(32, 32, 32)), seed=77, test_fraction=0,
                         workers=2)
        gan_root, pool_root, judge_root = work / "cgan", work / "segcls", work / "judge"
        train_s = bundle_run("spine_cgan", "--bundle_root", str(gan_root), "--dataset_dir", str(data))
        print(f"GAN trained in {train_s:.0f} s", flush=True)
        pool_s = bundle_run("spine_segcls", "--bundle_root", str(pool_root), "--dataset_dir", str(data),
                            "--patch", "[32,32,32]", "--max_epochs", str(args.segcls_epochs))
        judge_s = bundle_run("spine_segcls", "--bundle_root", str(judge_root), "--dataset_dir", str(judge_data),
                             "--patch", "[32,32,32]", "--max_epochs", str(args.judge_epochs))
        pool_model, judge_model = pool_root / "models" / "model.pt", judge_root / "models" / "model.pt"
        ceilings = {name: real_test_dice(m, data) for name, m in (("pool", pool_model), ("reference", judge_model))}
        synth = load_synthesizer(gan_root, "cpu")
        synthesize(synth, work / "synthetic", n_cases=args.synthetic, seed=0, overwrite=True)
        synthesize(synth, work / "painted", labels=data / "labelsTs", seed=0, overwrite=True)
        report = quality_report(data, work / "synthetic", work / "quality", model=judge_model, overwrite=True)
        judged = {name: consistency(model, work / "synthetic") for name, model in
                  (("pool", pool_model), ("reference", judge_model))}
        painted = consistency(judge_model, work / "painted")
        n_none = sum(1 for c in read_datalist(work / "synthetic").cases if c.tumor_type == 0)
        n_painted = len(read_datalist(work / "painted").cases)
        per_seed = [report["overall"]["msssim_synthetic"]]
        for seed in range(1, args.diversity_seeds):
            cases = synthesize(synth, work / f"synthetic_seed{seed}", n_cases=args.synthetic, seed=seed,
                               overwrite=True)
            images, _ = load_arrays(cases, GRID)
            per_seed.append(msssim_diversity(torch.from_numpy(images[:, None]), DIVERSITY_PAIRS))
    dice = {k: v["mean"] for k, v in report["label_consistency"]["dice"].items()}
    overall, memo = report["overall"], report["memorization"]
    smooth = memo["smoothed"]
    real_msssim = overall["msssim_real"]
    mean_msssim = float(np.mean(per_seed))
    gap = abs(mean_msssim - real_msssim) / real_msssim
    ci = overall["diversity_gap_ci"]
    anatomy_ok = all(dice[k] is not None and dice[k] >= 0.8 for k in ANATOMY)
    checks = [
        ("training to the default schedule", f"{train_s / 60:.1f} min", "< 20 min", train_s < TARGET_TRAIN_S),
        ("label consistency, tumor Dice (reference judge)", f"{dice['tumor']:.3f}" if dice["tumor"] is not None
         else "–", "≥ 0.6", dice["tumor"] is not None and dice["tumor"] >= 0.6),
        ("label consistency, anatomy Dice (vertebra, disc, cord, CSF; reference judge)",
         ", ".join(f"{dice[k]:.3f}" for k in ANATOMY), "each ≥ 0.8", anatomy_ok),
        (f"MS-SSIM diversity synthetic (mean of {len(per_seed)} synthesis seeds × {args.synthetic} volumes) vs real",
         f"{mean_msssim:.3f} (seeds: {', '.join(f'{v:.3f}' for v in per_seed)}) vs {real_msssim:.3f} "
         f"(gap {100 * gap:.1f}%; seed 0 alone {100 * overall['diversity_gap']:.1f}%, 95% bootstrap interval "
         f"{100 * ci[0]:.0f}–{100 * ci[1]:.0f}%)", "gap ≤ 15%", gap <= 0.15),
        ("synthetic volumes nearer to training than the nearest test volume",
         f"{memo['synthetic_nearer_than_nearest_test']} of {report['n']['synthetic']} (nearest synthetic "
         f"{memo['synthetic_to_train']['min']:.3f}, nearest test {memo['test_to_train']['min']:.3f}; "
         f"{memo['expected_by_chance']:.1f} expected by chance alone, as many or more with probability "
         f"{memo['chance_of_as_many']:.2f})", "0",
         memo["synthetic_nearer_than_nearest_test"] == 0),
    ]
    body = "| target | measured | goal | verdict |\n|---|---|---|---|\n" + "".join(
        f"| {name} | {value} | {goal} | {'met' if ok else 'NOT met'} |\n" for name, value, goal, ok in checks)
    body += ("\nLabel consistency by judge (mean Dice between each label map and the judge's prediction on its "
             "image; a tumor-free volume in which the judge finds a tumor counts 0 in the tumor mean):\n\n"
             "| volumes, judge | tumor (by type) | vertebra, disc, cord, CSF | tumor-free volumes with a tumor found"
             " | the judge on the real test set: tumor; vertebra, disc, cord, CSF |\n|---|---|---|---|---|\n"
             + describe(f"{args.synthetic} synthetic, pool judge ({args.segcls_epochs} epochs on the GAN's 48, "
                        f"{pool_s / 60:.1f} min)", judged["pool"], ceilings["pool"])
             + describe(f"{args.synthetic} synthetic, reference judge ({args.judge_epochs} epochs on "
                        f"{args.judge_cases} other phantoms, {judge_s / 60:.1f} min)", judged["reference"],
                        ceilings["reference"])
             + describe(f"the {n_painted} real test label maps painted by the image generator, reference judge",
                        painted, ceilings["reference"])
             + f"\n{n_none} of the {args.synthetic} synthetic volumes are tumor-free.\n")
    body += (f"\nMemorization with every volume smoothed alike (σ = 1 voxel; synthetic images carry less noise, "
             f"which lowers their raw RMS distances): {smooth['synthetic_nearer_than_nearest_test']} of "
             f"{report['n']['synthetic']} synthetic volumes nearer than the nearest test volume (nearest synthetic "
             f"{smooth['synthetic_to_train']['min']:.3f}, nearest test {smooth['test_to_train']['min']:.3f}; as many "
             f"or more by chance with probability {smooth['chance_of_as_many']:.2f}). "
             f"By chance alone, were synthetic volumes as far from the training set as test volumes are, "
             f"{memo['expected_by_chance']:.1f} of {report['n']['synthetic']} would fall below the least of "
             f"{report['n']['real_test']} test distances: the target of 0 is stricter than chance. Median distance "
             f"to the nearest training volume: synthetic {memo['synthetic_to_train']['median']:.3f}, test "
             f"{memo['test_to_train']['median']:.3f}.\n")
    pose = report["pose_spread"]
    body += ("\nPose spread (standard deviation over label maps; `volgan.gan.pose`): "
             + ", ".join(f"{name} {r:.2f} real / {s:.2f} synthetic" for name, r, s in
                         zip(pose["fields"], pose["real_train"], pose["synthetic"], strict=True)) + ".\n")
    body += (f"\nContext: Fréchet distance (random ResNet-10 features) synthetic vs real "
             f"{overall['frechet_synthetic_vs_real']:.2f}, real vs real floor {overall['frechet_real_vs_real']:.2f}; "
             f"tumor site matching its class at synthesis {report['tumor_site_verified']['n']} of "
             f"{report['tumor_site_verified']['of']}.\n")
    print(body)
    print(json.dumps(report["label_consistency"]["dice"], indent=1))
    write_section("spine_cgan targets", body, "python scripts/bench_cgan.py")


if __name__ == "__main__":
    main()
