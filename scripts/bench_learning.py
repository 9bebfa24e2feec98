"""How the quick profile's real-only arm learns with its training budget and recipe, and which tumor score ranks.

    python scripts/bench_learning.py [--presentations 300,600,1200] [--seeds 2] [--out DIR]

One spine_segcls model per row on the quick profile's real pool (24 phantoms of 32³ at 1.5 mm with the anatomy
at natural size, ``--anatomy-field 96``, seed 0; no augmentation, ``val_fraction 0``), evaluated on 48 clean real
test phantoms of the same generator. Rows: the bundle's recipe at each budget; the same at 600 presentations
with the previous recipe (per-volume Dice, tumor weight 1); and in float32 instead of bfloat16. Reported:
tumor-detection AUC from the classifier head (1 − p(none)) and from the segmentation (volgan.segcls.inference: the
largest tumor component's probability mass), tumor Dice of the tumor-bearing volumes (0 where no tumor is
predicted), anatomy Dice (mean of labels 1–4), whether the tumor call is the same for every volume, and the
training time (2 CPU threads, the bundle command as a user runs it). The bundle recipe's rows are repeated for
``--seeds`` training seeds and their mean is reported beside them. The study issue's targets: AUC ≥ 0.85, tumor
Dice ≥ 0.40, anatomy Dice ≥ 0.90.
"""

from __future__ import annotations

import argparse
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
from volgan.evaluation.metrics import confusion_counts, dice_iou, roc_auc
from volgan.labels import TUMOR_LABEL
from volgan.segcls.predict import load_model, predict

PREVIOUS_RECIPE = ("--batch_dice", "false", "--tumor_weight", "1")


def make_data(folder: Path) -> Path:
    subprocess.run([sys.executable, "-m", "volgan", "phantom", "--out", str(folder), "--cases", "72", "--size", "32",
                    "--spacing", "1.5", "--seed", "0", "--test-fraction", str(48 / 72), "--anatomy-field", "96"],
                   check=True, stdout=subprocess.DEVNULL)
    return folder


def train(data: Path, out: Path, presentations: int, extra: tuple[str, ...] = (), seed: int = 0) -> float:
    epochs = max(1, round(presentations / 24))
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/train.json",
                    "--bundle_root", str(out), "--dataset_dir", str(data), "--max_epochs", str(epochs),
                    "--patch", "[32,32,32]", "--batch_size", "2", "--val_fraction", "0", "--val_interval",
                    str(epochs), "--augment", "none", "--progress", "false", "--seed", str(seed), *extra],
                   cwd=ROOT / "bundles" / "spine_segcls", check=True, capture_output=True)
    return time.perf_counter() - start


def evaluate(model_file: Path, test) -> dict:
    model = load_model(model_file, "cpu")
    head, segmentation, truth, tumor_dice, anatomy, calls = [], [], [], [], [], set()
    for case in test:
        image, label = read_volume(case.image), read_volume(case.label, label=True)
        prediction = predict(model, image)
        head.append(1.0 - float(prediction.head_probabilities[0]))
        segmentation.append(prediction.tumor_evidence_mm3)
        calls.add(prediction.tumor_probability >= 0.5)
        truth.append(int(case.tumor_type != 0))
        scores = {k: dice_iou(v)[0] for k, v in confusion_counts(prediction.label.array, label.array).items()}
        if case.tumor_type:
            tumor_dice.append(0.0 if np.isnan(scores[TUMOR_LABEL]) else scores[TUMOR_LABEL])
        anatomy.append(float(np.nanmean([scores[k] for k in (1, 2, 3, 4)])))
    truth = np.array(truth)
    return {"auc_head": roc_auc(np.array(head), truth), "auc_segmentation": roc_auc(np.array(segmentation), truth),
            "tumor_dice": float(np.mean(tumor_dice)), "anatomy_dice": float(np.mean(anatomy)),
            "one_call": len(calls) == 1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--presentations", default="300,600,1200")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--out", help="working folder (a temporary one unless given)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    budgets = [int(p) for p in args.presentations.split(",")]
    plan = [(str(p), "bundle recipe, bf16 auto", p, (), seed) for p in budgets for seed in range(args.seeds)]
    plan += [("600", "previous recipe (per-volume Dice, tumor weight 1), bf16 auto", 600, PREVIOUS_RECIPE, 0),
             ("600", "bundle recipe, fp32", 600, ("--amp", "false"), 0)]
    rows, by_budget = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.out or tmp)
        data = make_data(work / "data")
        test = read_datalist(data).split("test")
        for k, (label, recipe, presentations, extra, seed) in enumerate(plan):
            seconds = train(data, work / f"run{k}", presentations, extra, seed)
            r = evaluate(work / f"run{k}" / "models" / "model_final.pt", test)
            if not extra:
                by_budget.setdefault(presentations, []).append(r)
            rows.append(f"| {label} | {recipe} | {seed} | {seconds:.0f} s | {r['auc_head']:.3f} | "
                        f"{r['auc_segmentation']:.3f} | {r['tumor_dice']:.3f} | {r['anatomy_dice']:.3f} | "
                        f"{'yes' if r['one_call'] else 'no'} |")
            print(rows[-1], flush=True)
    means = []
    for presentations, results in by_budget.items():
        mean = {key: float(np.mean([r[key] for r in results])) for key in ("auc_segmentation", "tumor_dice",
                                                                           "anatomy_dice")}
        met = (mean["auc_segmentation"] >= 0.85 and mean["tumor_dice"] >= 0.40 and mean["anatomy_dice"] >= 0.90)
        means.append(f"| {presentations} | {len(results)} | {mean['auc_segmentation']:.3f} | {mean['tumor_dice']:.3f} "
                     f"| {mean['anatomy_dice']:.3f} | {'all met' if met else 'NOT all met'} |")
    body = ("24 real training phantoms (32³ at 1.5 mm, anatomy at natural size), 48 clean real test phantoms (36 with "
            "a tumor), 2 threads; the training time includes the bundle command's start-up.\n\n"
            "| presentations | recipe | seed | training | AUC, classifier head | AUC, segmentation (the tumor call) | "
            "tumor Dice | anatomy Dice | one call for all |\n|---|---|---|---|---|---|---|---|---|\n"
            + "\n".join(rows) + "\n\nBundle recipe, mean over seeds (targets: AUC ≥ 0.85, tumor Dice ≥ 0.40, "
            "anatomy Dice ≥ 0.90):\n\n| presentations | seeds | AUC | tumor Dice | anatomy Dice | targets |\n"
            "|---|---|---|---|---|---|\n" + "\n".join(means) + "\n")
    write_section("Real-only arm: learning with the training budget", body,
                  f"python scripts/bench_learning.py --presentations {args.presentations} --seeds {args.seeds}")


if __name__ == "__main__":
    main()
