"""Where the quick study's real-only models find a tumor on healthy real scans: the tumor evidence (the largest
predicted tumor component's probability mass, mm³, what the tumor probability is read from) over the whole scan and
counting only components within 10 or 20 mm of the predicted cord, and the tumor probability gated by the largest
component's contrast against the tissue around it, on the shipped real scans and the phantom test set (with its AUC
and its calls at the 30 mm³ cutoff, or at p = 0.5); and whether the call answers to a lesion put into the healthy
real scans (:func:`lesion_proxy`); how the real scans' tissues compare with the phantoms' (:func:`tissue_levels`),
and how the healthy real scans' cord and tumor labels move when an intensity curve moves the cord's z-normalised level
(:func:`curve_rows`).

    python scripts/bench_tumor_evidence.py [--seeds 0,1] [--out DIR] [--write]

It asks whether "a tumor probability that needs evidence" of an anatomical kind (a tumor must lie at the cord, as the
phantom's intramedullary and extramedullary tumors do) or of a contrast kind (a tumor must stand out from the tissue
around it in the same scan) would clear the healthy real scans. Models: the quick study's
100:0 recipe, trained as ``scripts/bench_real_mri.py`` trains them (a folder from it can be given as ``--out``).
Threads: torch's default (both cores of this machine).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from bench_real_mri import mask_span, study_recipe
from benchmarks import write_section
from monai.data import MetaTensor
from scipy import ndimage

from volgan.data.io import Volume, read_volume, write_volume
from volgan.evaluation.metrics import confusion_counts, dice_iou, roc_auc
from volgan.evaluation.real_mri import shipped_scans
from volgan.labels import CORD, TUMOR_LABEL
from volgan.segcls.pipeline import (
    MIN_TUMOR_CONTRAST,
    MIN_TUMOR_MM3,
    ModelInferer,
    model_input,
    tumor_call,
    tumor_probability_from_segmentation,
)
from volgan.segcls.predict import load_model, predict

LESION_BRIGHTNESS = (1.3, 1.6)  # the inserted lesion's intensity, × the cord's own
LESION_SIZES = ((5.0, 12.0), (8.0, 24.0))  # (across, along the cord), mm: a small lesion and one filling the cord
GATES = (None, 20.0, 10.0)  # mm from the predicted cord; None: anywhere (the shipped rule)


@torch.inference_mode()
def grid_probabilities(model, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Softmax probabilities (6, X, Y, Z) on the model grid, through the bundle's own model input and inferer, and
    that input (X, Y, Z, z-normalised)."""
    volume = read_volume(path)
    image = MetaTensor(torch.from_numpy(np.ascontiguousarray(volume.array, dtype=np.float32))[None],
                       affine=torch.as_tensor(volume.affine))
    x = model_input(model.prep.spacing)({"image": image})["image"]
    seg = ModelInferer(model.prep.patch, 4, 0.25)(x.unsqueeze(0), lambda w: model.network(w)[0])
    return torch.softmax(torch.as_tensor(seg)[0].float(), 0).numpy(), np.asarray(x.as_tensor()[0], np.float32)


def contrast_call(probabilities: np.ndarray, image: np.ndarray, spacing) -> tuple[float, float, float]:
    """The tumor probability from the largest predicted tumor component's mass alone (volgan's call before
    spine_segcls 0.9.0), the shipped one, which gates it by the component's contrast against the tissue around it
    (:func:`volgan.segcls.pipeline.tumor_call`), and that contrast."""
    call = tumor_call(probabilities, image, float(np.prod(spacing)))
    return tumor_probability_from_segmentation(call.evidence_mm3), call.probability, call.contrast


def lesion_proxy(scan, folder: Path, brightness: float, size: tuple[float, float] = LESION_SIZES[0]
                 ) -> tuple[Path, np.ndarray]:
    """A healthy real scan with an intramedullary lesion put in: an ellipsoid ``size`` mm (across, along the cord;
    default 5 and 12), centred on the cord mask's middle slice and kept inside the mask, its intensities
    × ``brightness`` with a 0.7 mm blurred edge (hyperintense, as intramedullary tumors mostly are on T2). A proxy for
    a real lesion scan (none ships), not a lesion: it asks whether the call answers to a lesion in the cord.

    Returns the proxy's path and the lesion mask (X, Y, Z bool) on the scan's grid."""
    image, mask = read_volume(scan.image), read_volume(scan.label)
    spacing = np.array(image.spacing)
    axis, first, last = mask_span(mask)  # along the voxel axis nearest superior-inferior
    cord = mask.array > 0
    middle = (first + last) // 2
    centre = np.insert(np.array(ndimage.center_of_mass(np.take(cord, middle, axis=axis))), axis, middle)
    radii = np.where(np.arange(3) == axis, size[1] / 2.0, size[0] / 2.0)
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in image.shape], indexing="ij"), -1)
    lesion = ((((grid - centre) * spacing / radii) ** 2).sum(-1) <= 1.0) & cord
    weight = ndimage.gaussian_filter(lesion.astype(np.float32), 0.7 / spacing)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{scan.name}_lesion_{size[0]:g}x{size[1]:g}mm_x{brightness:g}.nii.gz"
    write_volume(Volume(image.array.astype(np.float32) * (1.0 + (brightness - 1.0) * weight), image.affine), path)
    return path, lesion


CURVES = (0.5, 1.0, 1.5)  # powers of the intensity curve put on the healthy real scans (1: the scan as it is)


def cord_z(image: np.ndarray, cord: np.ndarray) -> float:
    """The cord's median intensity z-normalised over the whole scan, as the model's input is (mean 0, sd 1)."""
    return float((np.median(image[cord]) - image.mean()) / image.std())


def tissue_levels(image: np.ndarray, cord: np.ndarray, spacing) -> dict:
    """What a scan's tissues look like next to its CSF: the cord's median and the 25th, 50th and 90th percentiles of
    the voxels over 8 mm from the cord, each ÷ the CSF's median, and the cord's median z-normalised over the whole
    scan (as the model's input is). CSF: the voxels within 8 mm of the cord brighter than halfway between the cord's
    median and the 90th percentile of that shell (bright CSF, as on T2), the same rule on real scans and phantoms.

    Parameters
    ----------
    image : np.ndarray
        (X, Y, Z) intensities.
    cord : np.ndarray
        (X, Y, Z) bool, the reference cord.
    spacing : sequence of float
        voxel size, mm.

    Returns
    -------
    dict
        ``cord_csf``, ``rest`` (three ratios) and ``cord_z``.
    """
    a = image.astype(np.float64)
    near = ndimage.distance_transform_edt(~cord, sampling=spacing) <= 8.0
    shell = a[near & ~cord]
    cord_median = float(np.median(a[cord]))
    csf = float(np.median(shell[shell > (cord_median + np.percentile(shell, 90)) / 2.0]))
    return {"cord_csf": cord_median / csf, "rest": np.percentile(a[~near], [25, 50, 90]) / csf,
            "cord_z": cord_z(a, cord)}


def tissue_table(scans, phantoms) -> list[str]:
    """Markdown rows of :func:`tissue_levels` for each real scan and the range over the phantom cases given."""
    def row(name, levels):
        return (f"| {name} | {levels['cord_csf']:.2f} | " + " / ".join(f"{v:.2f}" for v in levels["rest"])
                + f" | {levels['cord_z']:.2f} |")
    lines = ["| scan | cord ÷ CSF | beyond 8 mm, 25th / 50th / 90th percentile ÷ CSF | cord, z-normalised |",
             "|---|---|---|---|"]
    for scan in scans:
        image = read_volume(scan.image)
        lines.append(row(scan.name, tissue_levels(image.array, read_volume(scan.label).array > 0, image.spacing)))
    levels = []
    for case in phantoms:
        image = read_volume(case.image)
        levels.append(tissue_levels(image.array, read_volume(case.label).array == CORD, image.spacing))
    low = {k: np.min([v[k] for v in levels], 0) for k in levels[0]}
    high = {k: np.max([v[k] for v in levels], 0) for k in levels[0]}
    lines.append(f"| phantom training cases (the study's, {len(levels)}): lowest–highest | "
                 f"{low['cord_csf']:.2f}–{high['cord_csf']:.2f} | "
                 + " / ".join(f"{a:.2f}–{b:.2f}" for a, b in zip(low["rest"], high["rest"], strict=True))
                 + f" | {low['cord_z']:.2f}–{high['cord_z']:.2f} |")
    return lines


def curve_rows(model, seed: int, scans) -> list[str]:
    """Markdown rows: each healthy real scan with its intensities (÷ the maximum) to each power of :data:`CURVES`,
    the cord's z-normalised median, the model's cord Dice against the reference, the reference cord voxels it
    labels tumor, and the shipped tumor probability."""
    rows = []
    for scan in scans:
        image = read_volume(scan.image)
        cord = read_volume(scan.label).array > 0
        shifted = image.array.astype(np.float64) - float(image.array.min())
        cells = []
        for power in CURVES:
            curved = (shifted / (shifted.max() or 1.0)) ** power * 1000.0
            prediction = predict(model, Volume(curved.astype(np.float32), image.affine))
            label = prediction.label.array
            dice = dice_iou(confusion_counts(label, cord * CORD, (CORD,))[CORD])[0]
            cells.append(f"{cord_z(curved, cord):.2f}: {dice:.2f}, {int(((label == TUMOR_LABEL) & cord).sum())}, "
                         f"{prediction.tumor_probability:.2f}")
        rows.append(f"| quick 100:0, seed {seed} | {scan.name} | " + " | ".join(cells) + " |")
    return rows


def gated_evidence(probabilities: np.ndarray, spacing) -> dict:
    """The tumor evidence (mm³) anywhere and within each gate's distance of the largest cord component."""
    label = probabilities.argmax(0)
    full = ndimage.generate_binary_structure(3, 3)
    components, n = ndimage.label(label == TUMOR_LABEL, full)
    floor = 1e-3 * float(probabilities[TUMOR_LABEL].max())
    if not n:
        return {gate: floor for gate in GATES}
    mass = float(np.prod(spacing)) * ndimage.sum(probabilities[TUMOR_LABEL], components, range(1, n + 1))
    cords, m = ndimage.label(label == CORD, full)
    if m:
        cord = cords == 1 + int(np.argmax(ndimage.sum(np.ones_like(cords), cords, range(1, m + 1))))
        nearest = ndimage.minimum(ndimage.distance_transform_edt(~cord, sampling=spacing), components,
                                  range(1, n + 1))
    else:
        nearest = np.full(n, np.inf)
    return {gate: float(mass[nearest <= (np.inf if gate is None else gate)].max(initial=floor)) for gate in GATES}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--write", action="store_true", help="write the section into BENCHMARKS.md")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="bench-tumor-evidence-"))
    seeds = [int(s) for s in args.seeds.split(",")]
    study_recipe(out, seeds)
    from volgan.study.data import real_cases

    pool, test = real_cases(out)
    scans = shipped_scans()
    proxies = [(f"{scan.name} + lesion {a:g} × {b:g} mm ×{k:g}", scan,
                *lesion_proxy(scan, out / "lesion-proxies", k, (a, b)))
               for scan in scans for a, b in LESION_SIZES for k in LESION_BRIGHTNESS]
    lesion_lines = ["| model | scan | p, mass alone | p, shipped (contrast) | lesion voxels labeled tumor (on the "
                    "healthy scan) | tumor voxels elsewhere |", "|---|---|---|---|---|---|"]
    lines = ["| model | cord gate | phantom AUC | phantom tumors called (≥ 30 mm³) | phantom healthy called | "
             + " | ".join(f"{s.name}: evidence (mm³)" for s in scans) + " |",
             "|---|---|---|---|---|" + "---|" * len(scans)]
    curve_lines = ["| model | scan | " + " | ".join(f"power {power:g}: cord z: Dice, cord voxels labeled tumor, p"
                                                 for power in CURVES) + " |", "|---|---|" + "---|" * len(CURVES)]
    contrast_lines = ["| model | call | phantom AUC | phantom tumors called (p ≥ 0.5) | phantom healthy called | "
                      + " | ".join(f"{s.name}: p (contrast)" for s in scans) + " |",
                      "|---|---|---|---|---|" + "---|" * len(scans)]
    for seed in seeds:
        model = load_model(out / f"run-seed{seed}" / "models" / "model_final.pt")
        spacing = tuple(model.prep.spacing)
        phantom, real = [], []
        for case in test:
            probabilities, image = grid_probabilities(model, case.image)
            phantom.append((case.tumor_type != 0, gated_evidence(probabilities, spacing),
                            contrast_call(probabilities, image, spacing)))
        for scan in scans:
            probabilities, image = grid_probabilities(model, scan.image)
            real.append((gated_evidence(probabilities, spacing), contrast_call(probabilities, image, spacing)))
        healthy = {scan.name: predict(model, read_volume(scan.image)).label.array == TUMOR_LABEL for scan in scans}
        for name, scan, path, lesion in proxies:
            prediction = predict(model, read_volume(path))
            tumor = prediction.label.array == TUMOR_LABEL
            lesion_lines.append(
                f"| quick 100:0, seed {seed} | {name} | "
                f"{tumor_probability_from_segmentation(prediction.tumor_evidence_mm3):.2f} | "
                f"{prediction.tumor_probability:.2f} ({prediction.tumor_contrast:+.2f}) | "
                f"{int((tumor & lesion).sum())} of {int(lesion.sum())} ({int((healthy[scan.name] & lesion).sum())}) | "
                f"{int((tumor & ~lesion).sum())} |")
        curve_lines += curve_rows(model, seed, scans)
        truth = np.array([t for t, _, _ in phantom])
        for gate in GATES:
            evidence = np.array([e[gate] for _, e, _ in phantom])
            lines.append(f"| quick 100:0, seed {seed} | {'anywhere' if gate is None else f'≤ {gate:g} mm'} | "
                         f"{roc_auc(evidence, truth):.3f} | {int((evidence[truth] >= MIN_TUMOR_MM3).sum())} of "
                         f"{int(truth.sum())} | {int((evidence[~truth] >= MIN_TUMOR_MM3).sum())} of "
                         f"{int((~truth).sum())} | " + " | ".join(f"{e[gate]:.0f}" for e, _ in real) + " |")
        for column, name in ((0, "mass alone (before 0.9.0)"), (1, "shipped: contrast-gated")):
            p = np.array([c[column] for _, _, c in phantom])
            contrast_lines.append(
                f"| quick 100:0, seed {seed} | {name} | {roc_auc(p, truth):.3f} | {int((p[truth] >= 0.5).sum())} of "
                f"{int(truth.sum())} | {int((p[~truth] >= 0.5).sum())} of {int((~truth).sum())} | "
                + " | ".join(f"{c[column]:.2f} ({c[2]:+.2f})" for _, c in real) + " |")
    body = "\n".join(["Evidence: the largest predicted tumor component's probability mass on the model grid; a volume "
                      f"is called a tumor from {MIN_TUMOR_MM3:g} mm³ (p = 0.5). Gate: only components within that "
                      "distance of the largest predicted cord component count.", "", *lines, "",
                      "A tumor that must stand out from the tissue around it (the shipped call since spine_segcls "
                      "0.9.0, volgan.segcls.pipeline.tumor_call): the largest component's contrast is "
                      "(its median − the median of the commonest label in a 2-voxel shell around it) / that "
                      "label's interquartile range over the same scan, on the model's z-normalised input; the "
                      f"shipped p is the mass's p × min(1, |contrast| / {MIN_TUMOR_CONTRAST:g}).", "",
                      *contrast_lines, "",
                      "A lesion put into each healthy real scan (a proxy; no real lesion scan ships): an ellipsoid "
                      "of the size named (across × along the cord: a small lesion, and one as wide as the cord) "
                      "inside the cord mask at its middle slice, its intensities × the brightness named, edge "
                      "blurred 0.7 mm. Does the call answer to it, and does the model label "
                      "it tumor (voxels on the scan's grid)?", "", *lesion_lines, "",
                      "What the real scans' tissues look like against the phantoms the models learned from (the "
                      "study's T2 phantoms; CSF found by brightness within 8 mm of the cord, on both):", "",
                      *tissue_table(scans, pool), "",
                      "The healthy real scans under an intensity curve (intensities ÷ their maximum, to the power "
                      "named): the tissues keep their order, the cord's z-normalised level moves. Each cell: the "
                      "cord's z-normalised median: the cord Dice, the reference cord's voxels labeled tumor, the "
                      "shipped p.", "", *curve_lines])
    print(body)
    if args.write:
        write_section("Real MRI: where the healthy scans' tumor evidence lies", body,
                      f"python scripts/bench_tumor_evidence.py --seeds {args.seeds} --write")


if __name__ == "__main__":
    main()
