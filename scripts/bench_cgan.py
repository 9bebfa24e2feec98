"""spine_cgan targets on 48 phantom training volumes of 32³ on this machine.

Targets: training to the default schedule of bundles/spine_cgan/configs/train.json in under 20 minutes;
label-consistency Dice ≥ 0.6 on tumor and ≥ 0.8 on each anatomy label; synthetic MS-SSIM diversity within
15% of real; no synthetic volume nearer to a training volume than the nearest test volume is.

    python scripts/bench_cgan.py [--work DIR] [--segcls-epochs 60] [--synthetic 48]

Steps: 60 phantoms of 32³ (48 training, 12 test) → the GAN bundle trained to its default schedule (timed)
→ a spine_segcls model trained on the same real training pool (for label consistency; its own Dice on the
real test set is reported beside, as the ceiling of what consistency can show) → 48 synthetic volumes
(equal classes, seed 0) → volgan quality. The diversity verdict is on the mean MS-SSIM of 48 volumes over
``--diversity-seeds`` synthesis seeds (0, 1, …): one draw of 48 volumes moves the synthetic figure by several
hundredths, which is the generator's diversity measured with sampling noise, not the generator's diversity.
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

from volgan.datalist import read_datalist
from volgan.gan import msssim_diversity
from volgan.inference import load_model, predict
from volgan.io import read_volume
from volgan.metrics import segmentation_metrics
from volgan.phantom import PhantomConfig, make_dataset
from volgan.quality import DIVERSITY_PAIRS, load_arrays, quality_report
from volgan.synth import load_synthesizer, synthesize
from volgan.transforms import Preprocessing

TARGET_TRAIN_S = 20 * 60


def bundle_run(name: str, *args: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/train.json", *args],
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work", help="keep the data and models here (default: a temporary folder)")
    parser.add_argument("--segcls-epochs", type=int, default=60)
    parser.add_argument("--synthetic", type=int, default=48)
    parser.add_argument("--diversity-seeds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        data = work / "real"
        if not (data / "dataset.json").exists():
            make_dataset(data, 60, PhantomConfig(size=(32, 32, 32)), seed=21, test_fraction=0.2, workers=2)
        gan_root, seg_root = work / "cgan", work / "segcls"
        train_s = bundle_run("spine_cgan", "--bundle_root", str(gan_root), "--dataset_dir", str(data))
        print(f"GAN trained in {train_s:.0f} s", flush=True)
        seg_s = bundle_run("spine_segcls", "--bundle_root", str(seg_root), "--dataset_dir", str(data),
                           "--patch", "[32,32,32]", "--max_epochs", str(args.segcls_epochs))
        ceiling = real_test_dice(seg_root / "models" / "model.pt", data)
        synth = load_synthesizer(gan_root, "cpu")
        synthesize(synth, work / "synthetic", n_cases=args.synthetic, seed=0, overwrite=True)
        report = quality_report(data, work / "synthetic", work / "quality", model=seg_root / "models" / "model.pt",
                                overwrite=True)
        per_seed = [report["overall"]["msssim_synthetic"]]
        for seed in range(1, args.diversity_seeds):
            cases = synthesize(synth, work / f"synthetic_seed{seed}", n_cases=args.synthetic, seed=seed,
                               overwrite=True)
            images, _ = load_arrays(cases, Preprocessing((1.5,) * 3, (32,) * 3))
            per_seed.append(msssim_diversity(torch.from_numpy(images[:, None]), DIVERSITY_PAIRS))
    dice = {k: v["mean"] for k, v in report["label_consistency"]["dice"].items()}
    overall, memo = report["overall"], report["memorization"]
    smooth = memo["smoothed"]
    real_msssim = overall["msssim_real"]
    mean_msssim = float(np.mean(per_seed))
    gap = abs(mean_msssim - real_msssim) / real_msssim
    ci = overall["diversity_gap_ci"]
    anatomy_ok = all(dice[k] is not None and dice[k] >= 0.8 for k in ("vertebra", "disc", "cord", "csf"))
    checks = [
        ("training to the default schedule (140 epochs)", f"{train_s / 60:.1f} min", "< 20 min",
         train_s < TARGET_TRAIN_S),
        ("label consistency, tumor Dice", f"{dice['tumor']:.3f}" if dice["tumor"] is not None else "–", "≥ 0.6",
         dice["tumor"] is not None and dice["tumor"] >= 0.6),
        ("label consistency, anatomy Dice (vertebra, disc, cord, CSF)",
         ", ".join(f"{dice[k]:.3f}" for k in ("vertebra", "disc", "cord", "csf")), "each ≥ 0.8", anatomy_ok),
        (f"MS-SSIM diversity synthetic (mean of {len(per_seed)} synthesis seeds × {args.synthetic} volumes) vs real",
         f"{mean_msssim:.3f} (seeds: {', '.join(f'{v:.3f}' for v in per_seed)}) vs {real_msssim:.3f} "
         f"(gap {100 * gap:.1f}%; seed 0 alone {100 * overall['diversity_gap']:.1f}%, 95% bootstrap interval "
         f"{100 * ci[0]:.0f}–{100 * ci[1]:.0f}%)", "gap ≤ 15%", gap <= 0.15),
        ("synthetic volumes nearer to training than the nearest test volume",
         f"{memo['synthetic_nearer_than_nearest_test']} of {report['n']['synthetic']} (nearest synthetic "
         f"{memo['synthetic_to_train']['min']:.3f}, nearest test {memo['test_to_train']['min']:.3f}; "
         f"{memo['expected_by_chance']:.1f} expected by chance alone)", "0",
         memo["synthetic_nearer_than_nearest_test"] == 0),
    ]
    body = "| target | measured | goal | verdict |\n|---|---|---|---|\n" + "".join(
        f"| {name} | {value} | {goal} | {'met' if ok else 'NOT met'} |\n" for name, value, goal, ok in checks)
    body += (f"\nMemorization with every volume smoothed alike (σ = 1 voxel; synthetic images carry less noise, "
             f"which lowers their raw RMS distances): {smooth['synthetic_nearer_than_nearest_test']} of "
             f"{report['n']['synthetic']} synthetic volumes nearer than the nearest test volume (nearest synthetic "
             f"{smooth['synthetic_to_train']['min']:.3f}, nearest test {smooth['test_to_train']['min']:.3f}). "
             f"By chance alone, were synthetic volumes as far from the training set as test volumes are, "
             f"{memo['expected_by_chance']:.1f} of {report['n']['synthetic']} would fall below the least of "
             f"{report['n']['real_test']} test distances: the target of 0 is stricter than chance.\n")
    pose = report["pose_spread"]
    body += ("\nPose spread (standard deviation over label maps; `volgan.pose`): "
             + ", ".join(f"{name} {r:.2f} real / {s:.2f} synthetic" for name, r, s in
                         zip(pose["fields"], pose["real_train"], pose["synthetic"], strict=True)) + ".\n")
    body += (f"\nContext: Fréchet distance (random ResNet-10 features) synthetic vs real "
             f"{overall['frechet_synthetic_vs_real']:.2f}, real vs real floor {overall['frechet_real_vs_real']:.2f}; "
             f"tumor site matching its class at synthesis {report['tumor_site_verified']['n']} of "
             f"{report['tumor_site_verified']['of']}. The spine_segcls model used for consistency "
             f"({args.segcls_epochs} epochs, {seg_s / 60:.1f} min) reaches on the real test set Dice "
             + ", ".join(f"{name} {ceiling[k]:.3f}" for k, name in
                         enumerate(("vertebra", "disc", "cord", "csf", "tumor"), start=1))
             + ": label consistency cannot exceed what that segmenter does on real data.\n")
    print(body)
    print(json.dumps(report["label_consistency"]["dice"], indent=1))
    write_section("spine_cgan targets", body, "python scripts/bench_cgan.py")


if __name__ == "__main__":
    main()
