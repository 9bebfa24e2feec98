"""spine_segcls speed against MONAI, in one run on this machine.

(a) Inference on a 256×256×64 volume at 0.8×0.8×3 mm, file to file: volgan's pipeline against the same
    network through MONAI's reference pipeline (LoadImaged, Orientationd, Spacingd, NormalizeIntensityd,
    SlidingWindowInferer, Invertd, SaveImaged). Target: at most 0.5× the reference's time, with a mean Dice
    of at least 0.99 between the two outputs.
(b) The report's segmentation metrics (Dice, IoU, HD95, NSD for labels 1–5) on 20 volumes of 128³:
    volgan.evaluation.metrics against MONAI's DiceMetric, MeanIoU, HausdorffDistanceMetric(percentile=95) and
    SurfaceDiceMetric, given one-hot tensors made before the clock starts. Like with like: once with one thread
    on each side (torch's and volgan's KD-tree queries; MONAI's distance transform is scipy's, one thread), and
    once with every core on each side. Target: at least 3× faster, same values.

    python scripts/bench_segcls.py [--model CKPT] [--repeats 3]

Without --model a small model is trained first (32³ phantoms, a few epochs) so that outputs are not noise.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from benchmarks import ROOT, write_section

import volgan.evaluation.metrics
from volgan.data.io import read_volume, write_nifti
from volgan.data.phantom import PhantomConfig, generate_case, make_dataset
from volgan.evaluation.metrics import segmentation_metrics
from volgan.segcls.predict import load_model, predict


def train_small_model(folder: Path) -> Path:
    data = folder / "data"
    make_dataset(data, 40, PhantomConfig(size=(32, 32, 32)), seed=11, workers=2)
    subprocess.run([sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/train.json",
                    "--bundle_root", str(folder / "bundle"), "--dataset_dir", str(data), "--max_epochs", "15",
                    "--patch", "[32,32,32]"], cwd=ROOT / "bundles" / "spine_segcls", check=True,
                   capture_output=True)
    return folder / "bundle" / "models" / "model.pt"


def volgan_inference(model, src: Path, dst: Path, precision: str = "fp32") -> None:
    volume = read_volume(src)
    write_nifti(predict(model, volume, precision=precision).label, dst)


def monai_reference(model, src: Path, out_dir: Path):
    """The same network through MONAI's dictionary transforms; returns a callable that runs one file."""
    from monai.data import MetaTensor
    from monai.inferers import SlidingWindowInferer
    from monai.transforms import (
        Activationsd,
        AsDiscreted,
        Compose,
        EnsureChannelFirstd,
        Invertd,
        LoadImaged,
        NormalizeIntensityd,
        Orientationd,
        SaveImaged,
        Spacingd,
    )

    pre = Compose([LoadImaged("image"), EnsureChannelFirstd("image"), Orientationd("image", axcodes="RAS"),
                   Spacingd("image", pixdim=model.prep.spacing, mode="bilinear"), NormalizeIntensityd("image")])
    post = Compose([Activationsd("pred", softmax=True),
                    Invertd("pred", transform=pre, orig_keys="image", nearest_interp=False, to_tensor=True),
                    AsDiscreted("pred", argmax=True),
                    SaveImaged("pred", output_dir=str(out_dir), output_postfix="ref", separate_folder=False,
                               output_dtype=np.uint8, resample=False, print_log=False)])
    inferer = SlidingWindowInferer(roi_size=model.prep.patch, sw_batch_size=2, overlap=0.25, mode="constant")

    @torch.inference_mode()
    def run():
        data = pre({"image": str(src)})
        image = data["image"]
        logits = inferer(image.as_tensor()[None].to(model.device), lambda x: model.network(x)[0])[0]
        data["pred"] = MetaTensor(logits.cpu(), meta=dict(image.meta),
                                  applied_operations=list(image.applied_operations))
        return post(data)

    return run


def agreement(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Share of voxels with the same label, and the mean Dice of labels 1–5 between two label maps."""
    dice = [m["Dice"] for m in segmentation_metrics(a, b, (1, 1, 1)).values() if np.isfinite(m["Dice"])]
    return float((a == b).mean()), float(np.mean(dice))


def bench_inference(model, folder: Path, repeats: int) -> str:
    case = generate_case(3, 2, PhantomConfig(size=(256, 256, 64), spacing=(0.8, 0.8, 3.0), orientation="LPS"))
    src = folder / "big.nii.gz"
    write_nifti(case.image, src)
    reference = monai_reference(model, src, folder)
    times = {"fp32": [], "bf16": [], "ref": []}
    for _ in range(repeats):  # interleaved, so that machine noise hits every variant alike
        for precision in ("fp32", "bf16"):
            start = time.perf_counter()
            volgan_inference(model, src, folder / f"ours_{precision}.nii.gz", precision)
            times[precision].append(time.perf_counter() - start)
        start = time.perf_counter()
        reference()
        times["ref"].append(time.perf_counter() - start)
    ref = read_volume(folder / "big_ref.nii.gz", label=True)
    ref_time = statistics.median(times["ref"])
    rows = ""
    for precision in ("fp32", "bf16"):
        ours = read_volume(folder / f"ours_{precision}.nii.gz", label=True)
        same, dice = agreement(ours.array, ref.array)
        geometry = ours.shape == case.image.shape and np.allclose(ours.affine, case.image.affine, atol=1e-4)
        ours_time = statistics.median(times[precision])
        ratio = ours_time / ref_time
        verdict = "met" if ratio <= 0.5 and dice >= 0.99 else "NOT met"
        rows += (f"| (a) inference, 256×256×64 at 0.8×0.8×3 mm (LPS), file to file, volgan {precision}, median of "
                 f"{repeats} | volgan {ours_time:.2f} s, MONAI reference (fp32) {ref_time:.2f} s | ratio {ratio:.2f} "
                 f"(target ≤ 0.5 with Dice ≥ 0.99 between the outputs: {verdict}) | voxels agreeing "
                 f"{100 * same:.3f}%, mean Dice between the two {dice:.4f}; output in the input's shape and affine: "
                 f"{geometry} |\n")
    return rows


def bench_metrics(folder: Path, repeats: int) -> tuple[str, dict]:
    from monai.metrics import DiceMetric, HausdorffDistanceMetric, MeanIoU, SurfaceDiceMetric
    from monai.networks.utils import one_hot

    config = PhantomConfig(size=(128, 128, 128), spacing=(0.75, 0.75, 0.75))
    rng = np.random.default_rng(0)
    pairs = []
    for i in range(20):
        ref = generate_case(4, i, config).label.array
        pred = np.roll(ref, int(rng.integers(-2, 3)), axis=int(rng.integers(3)))
        pairs.append((pred, ref))
    spacing = config.spacing

    def ours():
        return [segmentation_metrics(p, r, spacing, 2.0) for p, r in pairs]

    hot = [(one_hot(torch.from_numpy(p[None, None].astype(np.int64)), 6),
            one_hot(torch.from_numpy(r[None, None].astype(np.int64)), 6)) for p, r in pairs]  # MONAI's input form

    def reference():
        metrics = [DiceMetric(include_background=False, reduction="none"),
                   MeanIoU(include_background=False, reduction="none"),
                   HausdorffDistanceMetric(include_background=False, percentile=95, reduction="none"),
                   SurfaceDiceMetric([2.0] * 5, include_background=False, reduction="none")]
        return [[m(pt, rt, spacing=spacing)[0] if i >= 2 else m(pt, rt)[0] for i, m in enumerate(metrics)]
                for pt, rt in hot]

    cores = os.cpu_count() or 1
    text, figures = "", {}
    for threads in (1, cores) if cores > 1 else (1,):
        # like with like: torch's threads and volgan's KD-tree queries both at ``threads``; MONAI's distance
        # transform (scipy's) has one thread whatever is set
        torch.set_num_threads(threads)
        volgan.evaluation.metrics.KDTREE_WORKERS = threads
        ours_t, ref_t = [], []
        for _ in range(repeats):
            start = time.perf_counter()
            mine = ours()
            ours_t.append(time.perf_counter() - start)
            start = time.perf_counter()
            theirs = reference()
            ref_t.append(time.perf_counter() - start)
        worst = 0.0
        for m, t in zip(mine, theirs, strict=True):
            for k in range(1, 6):
                if m[k]["n_ref"] and m[k]["n_pred"]:
                    for j, key in enumerate(("Dice", "IoU", "HD95", "NSD")):
                        worst = max(worst, abs(m[k][key] - float(t[j][k - 1])))
        figures[threads] = {"ours": statistics.median(ours_t), "ref": statistics.median(ref_t), "max_diff": worst}
        speedup = figures[threads]["ref"] / figures[threads]["ours"]
        verdict = "met" if speedup >= 3 and worst <= 1e-6 else "NOT met"
        text += (f"| (b) Dice, IoU, HD95, NSD of labels 1–5 on 20 volumes of 128³ (one-hot input made beforehand), "
                 f"{threads} thread(s) on each side, median of {repeats} | volgan {figures[threads]['ours']:.2f} s, "
                 f"MONAI {figures[threads]['ref']:.2f} s | speed-up {speedup:.2f}× (target ≥ 3×: {verdict}) | "
                 f"largest difference from MONAI {worst:.2e} |\n")
    torch.set_num_threads(cores)
    volgan.evaluation.metrics.KDTREE_WORKERS = -1
    return text, figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", help="checkpoint or bundle folder (default: train a small one)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model = load_model(args.model or train_small_model(folder), "cpu")
        a = bench_inference(model, folder, args.repeats)
        print(a, flush=True)
        b, _ = bench_metrics(folder, args.repeats)
        print(b)
    body = ("| benchmark | time | ratio | same output |\n|---|---|---|---|\n" + a + b +
            f"\nModel: patch {list(model.prep.patch)}, spacing {list(model.prep.spacing)} mm; sliding windows "
            f"with overlap 0.25, volgan's default of 4 windows per batch, the reference's 2, on the CPU with "
            f"{torch.get_num_threads()} threads on each side.\n")
    command = "python scripts/bench_segcls.py" + (f" --model {args.model}" if args.model else "") + \
        f" --repeats {args.repeats}"
    write_section("spine_segcls inference and metrics", body, command)


if __name__ == "__main__":
    main()
