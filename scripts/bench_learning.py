"""How the quick profile's real-only arm learns with its training budget, and which tumor score ranks best.

    python scripts/bench_learning.py [--presentations 300,1200,3000] [--out DIR]

One spine_segcls model per budget (bundle defaults, no augmentation, ``val_fraction 0``) on the quick profile's
real pool (24 phantoms of 32³ at 1.5 mm, seed 0) is evaluated on 48 clean real test phantoms of the same
generator. Reported: tumor-detection AUC from the classifier head (1 − p(none)) and from the segmentation (the
largest predicted tumor component's summed probability; the highest voxel tumor probability), tumor Dice of the
tumor-bearing volumes (0 where no tumor is predicted), anatomy Dice (mean of labels 1–4), whether the head gives
every volume the same call, and the training time (2 CPU threads, fp32). The quick study's models get 300
presentations; the targets of the study issue are AUC ≥ 0.85, tumor Dice ≥ 0.40, anatomy Dice ≥ 0.90.
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
from scipy import ndimage

from volgan.datalist import read_datalist
from volgan.inference import load_model, predict, to_model_grid
from volgan.io import read_volume
from volgan.labels import TUMOR_LABEL
from volgan.metrics import confusion_counts, dice_iou, roc_auc


def make_data(folder: Path) -> Path:
    subprocess.run([sys.executable, "-m", "volgan", "phantom", "--out", str(folder), "--cases", "72", "--size", "32",
                    "--spacing", "1.5", "--seed", "0", "--test-fraction", str(48 / 72)], check=True,
                   stdout=subprocess.DEVNULL)
    return folder


def train(data: Path, out: Path, presentations: int) -> float:
    epochs = max(1, round(presentations / 24))
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/train.json",
                    "--bundle_root", str(out), "--dataset_dir", str(data), "--max_epochs", str(epochs),
                    "--patch", "[32,32,32]", "--batch_size", "2", "--val_fraction", "0", "--val_interval",
                    str(epochs), "--augment", "none", "--progress", "false"],
                   cwd=ROOT / "bundles" / "spine_segcls", check=True, capture_output=True)
    return time.perf_counter() - start


def evaluate(model_file: Path, test) -> dict:
    model = load_model(model_file, "cpu")
    head, component, peak, truth, tumor_dice, anatomy = [], [], [], [], [], []
    for case in test:
        image, label = read_volume(case.image), read_volume(case.label, label=True)
        x, _, _ = to_model_grid(image, model.prep)
        with torch.no_grad():
            seg, cls = model.network(x)
        p = torch.softmax(seg[0].float(), 0)[TUMOR_LABEL].numpy()
        parts, n = ndimage.label(p > 0.5)
        head.append(1.0 - float(torch.softmax(cls[0].float(), 0)[0]))
        peak.append(float(p.max()))
        component.append(float(np.max(ndimage.sum(p, parts, range(1, n + 1)))) if n else 1e-3 * float(p.max()))
        truth.append(int(case.tumor_type != 0))
        scores = {k: dice_iou(v)[0] for k, v in confusion_counts(predict(model, image).label.array,
                                                                 label.array).items()}
        if case.tumor_type:
            tumor_dice.append(0.0 if np.isnan(scores[TUMOR_LABEL]) else scores[TUMOR_LABEL])
        anatomy.append(float(np.nanmean([scores[k] for k in (1, 2, 3, 4)])))
    truth = np.array(truth)
    return {"auc_head": roc_auc(np.array(head), truth), "auc_component": roc_auc(np.array(component), truth),
            "auc_peak": roc_auc(np.array(peak), truth), "tumor_dice": float(np.mean(tumor_dice)),
            "anatomy_dice": float(np.mean(anatomy)), "one_call": len({h >= 0.5 for h in head}) == 1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--presentations", default="300,1200,3000")
    parser.add_argument("--out", help="working folder (a temporary one unless given)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.out or tmp)
        data = make_data(work / "data")
        test = read_datalist(data).split("test")
        for presentations in (int(p) for p in args.presentations.split(",")):
            seconds = train(data, work / f"p{presentations}", presentations)
            r = evaluate(work / f"p{presentations}" / "models" / "model_final.pt", test)
            rows.append(f"| {presentations} | {seconds:.0f} s | {r['auc_head']:.3f} | {r['auc_component']:.3f} | "
                        f"{r['auc_peak']:.3f} | {r['tumor_dice']:.3f} | {r['anatomy_dice']:.3f} | "
                        f"{'yes' if r['one_call'] else 'no'} |")
            print(rows[-1], flush=True)
    body = ("One seed, 24 real training phantoms, 48 clean real test phantoms (36 with a tumor), fp32, 2 threads.\n\n"
            "| presentations | training | AUC, classifier head | AUC, largest tumor component | AUC, peak voxel | "
            "tumor Dice | anatomy Dice | one call for all |\n|---|---|---|---|---|---|---|---|\n"
            + "\n".join(rows) + "\n")
    write_section("Real-only arm: learning with the training budget", body,
                  f"python scripts/bench_learning.py --presentations {args.presentations}")


if __name__ == "__main__":
    main()
