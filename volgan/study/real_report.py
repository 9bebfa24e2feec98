"""The study report's real-MRI section: every trained model's check on real scans
(:mod:`volgan.evaluation.real_mri`) gathered per run and per arm, a sentence for the findings, a table and a
figure of a real slice with each arm's prediction.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from volgan.evaluation.real_mri import HEALTHY_CUTOFF
from volgan.evaluation.rendering import fmt
from volgan.study.records import PlannedArm

MIN_SCANS_FOR_ORDER = 5  # annotated real scans needed before the arms' order on them is compared with the phantoms'


def _arm_label(arm: PlannedArm) -> str:
    if arm.section == "sweep":
        share = round(100 * arm.share)
        return f"sweep {100 - share}:{share}"
    return f"{arm.arm} (pool {arm.real_pool})"


def gather(arms: list[PlannedArm], stages: Path) -> dict | None:
    """Every run's real-MRI rows, and per arm (its seeds together) each scan's mean Dice per annotated label, mean
    tumor probability and the healthy scans called a tumor.

    Parameters
    ----------
    arms : list[PlannedArm]
        the study's arms (section, arm, seed, real_pool, share and their run, eval and real_check stage keys).
    stages : Path
        the study's ``stages`` folder.

    Returns
    -------
    dict | None
        ``scans`` (name, annotated labels, tumor_type), ``per_run`` ({run: rows}) and ``per_arm`` (rows), or None when
        no check ran.
    """
    per_run, scans = {}, {}
    for arm in arms:
        path = stages / arm.real_check / "real_mri.json"
        if not path.is_file():
            return None
        doc = json.loads(path.read_text(encoding="utf-8"))
        per_run[arm.run] = doc["rows"]
        for row in doc["rows"]:
            scans[row["scan"]] = {"annotated": row["annotated"], "tumor_type": row["tumor_type"]}
    groups: dict[tuple, list[dict]] = {}
    for arm in arms:
        groups.setdefault((arm.section, arm.arm, arm.real_pool, arm.share), []).append(arm)
    per_arm = []
    for (section, name, pool, share), members in groups.items():
        runs = [per_run[a.run] for a in sorted(members, key=lambda a: a.seed)]
        entry = {"section": section, "arm": name, "real_pool": pool, "synthetic_share": share,
                 "label": _arm_label(members[0]), "seeds": len(runs), "scans": {}}
        for scan in scans:
            rows = [next(r for r in run if r["scan"] == scan) for run in runs]
            dice = {label: _mean([r["dice"].get(label) for r in rows]) for label in rows[0]["dice"]}
            entry["scans"][scan] = {"dice": dice, "dice_per_seed": {label: [r["dice"].get(label) for r in rows]
                                                                    for label in rows[0]["dice"]},
                                    "tumor_probability": _mean([r["tumor_probability"] for r in rows]),
                                    "tumor_probability_max": max(r["tumor_probability"] for r in rows)}
        healthy = [(r["scan"], r["healthy_called_tumor"]) for run in runs for r in run
                   if r["healthy_called_tumor"] is not None]
        entry["healthy_called_tumor"] = {"n": sum(called for _, called in healthy), "of": len(healthy)}
        per_arm.append(entry)
    return {"scans": [{"name": k, **v} for k, v in scans.items()], "healthy_cutoff": HEALTHY_CUTOFF,
            "per_run": per_run, "per_arm": per_arm}


def _mean(values) -> float | None:
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return float(np.mean(finite)) if finite else None


def _cord_or_first(entry: dict) -> tuple[str, float | None]:
    dice = entry["dice"]
    label = "cord" if "cord" in dice else next(iter(dice), "")
    return label, dice.get(label)


def healthy_calls(real: dict) -> tuple[int, int]:
    """How many checks of a healthy real scan (every model, every healthy scan) called a tumor, and of how many.

    Parameters
    ----------
    real : dict
        :func:`gather`'s output.

    Returns
    -------
    tuple[int, int]
        (called, checks).
    """
    return (sum(a["healthy_called_tumor"]["n"] for a in real["per_arm"]),
            sum(a["healthy_called_tumor"]["of"] for a in real["per_arm"]))


def real_only_arm(real: dict) -> dict | None:
    """The real-only arm's results (the sweep's 100:0, mean over seeds), or None when the study has none.

    Parameters
    ----------
    real : dict
        :func:`gather`'s output.

    Returns
    -------
    dict | None
        its entry of ``real["per_arm"]``.
    """
    return next((a for a in real["per_arm"] if a["section"] == "sweep" and a["synthetic_share"] == 0), None)


def finding(real: dict, phantom_order: list[str]) -> list[str]:
    """Sentences for the findings: how the models do on the real scans, and whether the arms' order on the phantoms
    holds there (or that too few real scans exist to tell).

    Parameters
    ----------
    real : dict
        :func:`gather`'s output.
    phantom_order : list[str]
        the arms' labels, best first, by the phantom test set's anatomy Dice.

    Returns
    -------
    list[str]
        the sentences.
    """
    scans = [s["name"] for s in real["scans"]]
    lines = []
    called, of = healthy_calls(real)
    reference = real_only_arm(real)
    if reference is not None:
        parts = []
        for scan in scans:
            label, dice = _cord_or_first(reference["scans"][scan])
            p_tumor = reference["scans"][scan]["tumor_probability"]
            parts.append(f"{scan} {label} Dice {fmt(dice)}, tumor probability {fmt(p_tumor)}")
        lines.append("Real MRI, real-only model (sweep 100:0, mean over seeds): " + "; ".join(parts) + ".")
    if of:
        lines.append(f"Real MRI: {called} of {of} checks of a healthy real scan (every model, every healthy scan) "
                     f"called a tumor (probability ≥ {HEALTHY_CUTOFF}); "
                     + ("the tumor calls on phantoms do not carry over to these scans." if called else
                        "no model called a tumor on a healthy real scan."))
    annotated = [s for s in real["scans"] if s["annotated"]]
    if len(annotated) < MIN_SCANS_FOR_ORDER:
        lines.append(f"Real MRI: {len(annotated)} annotated real scan(s), fewer than {MIN_SCANS_FOR_ORDER}: too few to "
                     "tell whether the arms' order on the phantoms holds on real scans (add yours with "
                     "--real-check).")
    else:
        real_mean = {a["label"]: _mean([_cord_or_first(a["scans"][s])[1] for s in scans]) for a in real["per_arm"]}
        real_order = sorted(real_mean, key=lambda k: -(real_mean[k] if real_mean[k] is not None else -1))
        shared = [a for a in phantom_order if a in real_mean]
        rho = _spearman([shared.index(a) for a in shared], [real_order.index(a) for a in shared])
        lines.append(f"Real MRI: the arms' order by Dice on {len(annotated)} real scans against their order on the "
                     f"phantoms: Spearman {fmt(rho)} ({'the order holds' if rho >= 0.5 else 'the order does not hold'} "
                     "at 0.5).")
    return lines


def _spearman(a: list[int], b: list[int]) -> float:
    if len(a) < 3:
        return math.nan
    return float(np.corrcoef(np.argsort(np.argsort(a)), np.argsort(np.argsort(b)))[0, 1])


def table(real: dict) -> tuple[str, list[str], list[list[str]]]:
    """The report's table: per arm, each scan's Dice on its annotated label(s) and tumor probability (mean over
    seeds), and how often a healthy scan was called a tumor.

    Parameters
    ----------
    real : dict
        :func:`gather`'s output.

    Returns
    -------
    tuple[str, list[str], list[list[str]]]
        title, header and rows.
    """
    scans = [s["name"] for s in real["scans"]]
    header = ["arm"]
    for scan in scans:
        label, _ = _cord_or_first(real["per_arm"][0]["scans"][scan])
        header += [f"{scan}: {label} Dice", f"{scan}: p(tumor)"]
    header.append("healthy scans called tumor")
    rows = []
    for arm in real["per_arm"]:
        row = [arm["label"]]
        for scan in scans:
            entry = arm["scans"][scan]
            row += [fmt(_cord_or_first(entry)[1]), fmt(entry["tumor_probability"])]
        row.append(f"{arm['healthy_called_tumor']['n']} of {arm['healthy_called_tumor']['of']}")
        rows.append(row)
    title = ("Real MRI check: every model on real scans (only the labels each scan's reference annotates are scored; "
             "mean over seeds)")
    return title, header, rows


FIGURE_ARMS = (("sweep", 0.0), ("sweep", 0.1), ("sweep", 1.0))
FIGURE_HEIGHT_MM = 160.0  # the height of scan shown


def figure(real: dict, arms: list[PlannedArm], stages: Path, folder: Path) -> dict[str, str]:
    """A real slice of each scan with the seed-0 prediction of each arm of the augmentation comparison (largest
    pool) and of the sweep's 100:0, 90:10 and 0:100, the reference cord outlined.

    Parameters
    ----------
    real : dict
        :func:`gather`'s output.
    arms : list[PlannedArm]
        the study's arms.
    stages : Path
        the study's ``stages`` folder.
    folder : Path
        the report's ``figures`` folder.

    Returns
    -------
    dict[str, str]
        {file name: caption}.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import nibabel as nib

    from volgan.evaluation.rendering import save_figure

    pools = [a.real_pool for a in arms if a.section == "augmentation"]
    chosen = [a for a in arms if a.seed == 0 and ((a.section, a.share) in FIGURE_ARMS or (
        a.section == "augmentation" and pools and a.real_pool == max(pools)))]
    scans = json.loads((stages / chosen[0].real_check / "real_mri.json").read_text(encoding="utf-8"))["scans"]
    fig, axes = plt.subplots(len(scans), len(chosen), figsize=(1.9 * len(chosen), 2.6 * len(scans)), squeeze=False)
    colours = matplotlib.colors.ListedColormap(["none", "#e6c229", "#3b8bd4", "#e8463a", "#56b870", "#b03ad4"])
    for i, scan in enumerate(scans):
        image = nib.as_closest_canonical(nib.load(scan["image"]))
        data = np.asarray(image.dataobj, dtype=np.float32)
        reference = None
        if scan["label"]:
            reference = np.asarray(nib.as_closest_canonical(nib.load(scan["label"])).dataobj) > 0
        centre = np.argwhere(reference).mean(0) if reference is not None and reference.any() \
            else np.asarray(data.shape) / 2
        x = int(np.round(centre[0]))
        zooms = image.header.get_zooms()[:3]
        half = int(FIGURE_HEIGHT_MM / 2 / zooms[2])  # a long scan (PAM50: 550 mm) is shown about its cord's middle
        z0 = int(np.clip(round(centre[2]) - half, 0, max(data.shape[2] - 2 * half, 0)))
        rows = slice(z0, z0 + 2 * half)
        low, high = np.percentile(data, [1, 99])
        for j, arm in enumerate(chosen):
            ax = axes[i, j]
            pred_file = stages / arm.real_check / "predictions" / f"{scan['name']}_seg.nii.gz"
            pred = np.asarray(nib.as_closest_canonical(nib.load(pred_file)).dataobj)
            shown = data[x][:, rows]
            extent = (0, shown.shape[0] * zooms[1], 0, shown.shape[1] * zooms[2])
            ax.imshow(shown.T, cmap="gray", origin="lower", vmin=low, vmax=high, extent=extent)
            ax.imshow(pred[x][:, rows].T, cmap=colours, vmin=0, vmax=5, origin="lower", alpha=0.55,
                      interpolation="nearest", extent=extent)
            if reference is not None:
                ax.contour(reference[x][:, rows].T.astype(float), levels=[0.5], colors="white", linewidths=0.8,
                           extent=extent, origin="lower")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(_arm_label(arm), fontsize=8)
            if j == 0:
                ax.set_ylabel(scan["name"], fontsize=8)
    fig.suptitle("Real MRI, mid-cord sagittal slice: each arm's prediction (seed 0; yellow vertebra, blue disc, "
                 "red cord, green CSF, purple tumor), reference cord outlined in white", fontsize=9)
    folder.mkdir(parents=True, exist_ok=True)
    save_figure(fig, folder / "real_mri.png")
    return {"real_mri.png": "Real MRI: each arm's prediction on a real slice (reference cord outlined)"}
