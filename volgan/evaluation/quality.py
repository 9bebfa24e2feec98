"""Synthetic-quality report: Fréchet distance, MS-SSIM diversity, memorization and label consistency,
overall and per ``tumor_type``.

All volumes are brought to the synthetic data's grid with volgan's declared preprocessing (RAS, the
synthetic spacing, centre crop/pad to the synthetic shape, z-normalisation), so real and synthetic are
compared alike.

Features for the Fréchet distance: MONAI's 3D ResNet-10, randomly initialised with a fixed seed and used
without its classifier (512 features after global pooling). Why: no pretrained 3D MRI network can be
downloaded here, and a fixed random convolutional network is deterministic, needs nothing outside the
package, and still separates intensity, texture and shape statistics; its absolute values mean little, so
the report puts the real-vs-real value (two halves of the real training pool) beside it as the floor. With a
judge (``--model``), a second Fréchet distance uses the judge's own encoder (:func:`judge_features`), a network
trained on this domain; every figure names its extractor.

Memorization: each synthetic volume's RMS distance (z-normalised units) to its nearest real training
volume, against the same distance for each real test volume. A synthetic volume nearer to the training
set than the nearest test volume is counted as a possible copy, beside the count expected by chance (the
least of n test distances is an extreme: a synthetic volume distributed like the test volumes falls below
it with probability 1 / (n + 1)).

Diversity: mean MS-SSIM over up to 512 distinct pairs of synthetic volumes, and of real training volumes,
each with a 95% percentile-bootstrap interval over volumes (a mean over pairs of a few dozen volumes moves by
several hundredths with which volumes were drawn: 48 synthetic volumes from five seeds of the same generator
gave 0.42 to 0.47), and the gap |synthetic − real| / real with its interval.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch

from volgan.data.datalist import Case, read_datalist
from volgan.data.files import staged_output_dir, strict_json, write_text
from volgan.data.io import read_volume
from volgan.data.loader import subject_for
from volgan.errors import VolganInputError
from volgan.evaluation.rendering import fmt
from volgan.evaluation.similarity import (
    BOOTSTRAP_RESAMPLES,
    diversity_figures,
    frechet_distance,
    label_consistency,
    memorization_figures,
    smoothed,
    summary_of,
    tumor_consistency,
)
from volgan.gan.pose import POSE_FIELDS, pose_spread
from volgan.labels import LABELS, TUMOR_TYPES
from volgan.transforms import Preprocessing, preprocessing

QUALITY_ENTRIES = ("quality.json", "quality.md", "quality.png")
FEATURE_NETWORK = "MONAI resnet10 (3D), random weights with torch seed 0, global-average-pooled 512 features"


@dataclass(frozen=True)
class QualityReport:
    """``quality.json``, the synthetic-quality report, as the study reads it: where the data came from, the grid
    (``shape`` in voxels, ``spacing`` in mm), the label source, the feature networks, the counts, the Fréchet
    distances and MS-SSIM diversity ``overall`` and ``per_type``, memorization, label consistency, pose spread and
    the tumor sites verified. The sections are the JSON's own (see ``quality.md`` for their meaning)."""

    real: str
    synthetic: str
    grid: dict
    label_source: str | None
    feature_network: str
    feature_networks: dict
    n: dict
    overall: dict
    per_type: dict[str, dict]
    memorization: dict
    label_consistency: dict
    pose_spread: dict
    tumor_site_verified: dict

    def to_dict(self) -> dict:
        """The report as ``quality.json`` holds it.

        Returns
        -------
        dict
            every section, in the file's order.
        """
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> QualityReport:
        """The record from ``quality.json``'s content.

        Parameters
        ----------
        data : dict
            the parsed file.

        Returns
        -------
        QualityReport
            the record.
        """
        return cls(**{f.name: data.get(f.name) for f in fields(cls)})


def load_arrays(cases: list[Case], prep: Preprocessing) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, S, S, S) z-normalised and label maps (N, S, S, S) on the common grid.

    Parameters
    ----------
    cases : list[Case]
        the cases (images, label maps where they have one).
    prep : Preprocessing
        the common grid: ``spacing`` in mm and ``patch`` (S, S, S) in voxels.

    Returns
    -------
    tuple[np.ndarray, np.ndarray]
        images (N, S, S, S) float32 and label maps (N, S, S, S) uint8, zeros for a case without one.
    """
    pipeline = preprocessing(prep)
    images, labels = [], []
    for case in cases:
        subject = pipeline(subject_for(case))
        images.append(subject["image"].data[0].numpy().astype(np.float32))
        labels.append(subject["label"].data[0].numpy().astype(np.uint8) if "label" in subject
                      else np.zeros(images[-1].shape, np.uint8))
    return np.stack(images), np.stack(labels)


def feature_network() -> torch.nn.Module:
    """MONAI's 3D ResNet-10, randomly initialised with seed 0 (torch's random state is left as it was), without its
    classifier: the fixed encoder of the report's "random features" Fréchet distance.

    Returns
    -------
    torch.nn.Module
        the network in eval mode: (B, 1, S, S, S) → (B, 512) features.
    """
    from monai.networks.nets import resnet10

    state = torch.random.get_rng_state()
    torch.manual_seed(0)
    net = resnet10(spatial_dims=3, n_input_channels=1, feed_forward=False)
    torch.random.set_rng_state(state)
    return net.eval()


@torch.no_grad()
def features(images: np.ndarray, net: torch.nn.Module) -> np.ndarray:
    """The features of ``net`` for every image, in batches of 8, without gradients.

    Parameters
    ----------
    images : np.ndarray
        (N, S, S, S) z-normalised images.
    net : torch.nn.Module
        a network giving (B, D) features for (B, 1, S, S, S) images (:func:`feature_network`).

    Returns
    -------
    np.ndarray
        (N, D) float64 features.
    """
    out = [net(torch.from_numpy(images[i: i + 8, None])).numpy() for i in range(0, len(images), 8)]
    return np.concatenate(out).astype(np.float64)


JUDGE_FEATURES = ("the judge's own encoder: spine_segcls's bottleneck, global-average-pooled (trained on this domain, "
                  "the real training pool)")
WHY_NOT_PRETRAINED = ("No pretrained extractor: MONAI's FIDMetric docs recommend MedicalNet features for 3D, "
                      "and MAISI reports 2.5D FID on RadImageNet features; neither is used, because their weights "
                      "would have to be downloaded at run time (volgan ships and downloads no weights) and both "
                      "were trained on other anatomy and grids than a 32 to 64 voxel spine crop")


@torch.no_grad()
def judge_features(network: torch.nn.Module, images: np.ndarray) -> np.ndarray:
    """(N, C) features of (N, S, S, S) z-normalised images: the global average of a
    :class:`~volgan.segcls.network.SegClsNet`'s bottleneck (C = its last width), the network in eval mode.

    Parameters
    ----------
    network : torch.nn.Module
        the judge (a :class:`~volgan.segcls.network.SegClsNet`).
    images : np.ndarray
        (N, S, S, S) z-normalised images.

    Returns
    -------
    np.ndarray
        (N, C) float64 features.
    """
    out = []
    for i in range(0, len(images), 8):
        x = torch.from_numpy(images[i: i + 8, None]).float().to(next(network.parameters()).device)
        for encoder in network.encoders:
            x = encoder(x)
        out.append(x.mean(dim=(2, 3, 4)).float().cpu().numpy())
    return np.concatenate(out).astype(np.float64)


def quality_report(real: str | os.PathLike, synthetic: str | os.PathLike, out: str | os.PathLike,
                   model: str | os.PathLike | None = None, seed: int = 0, overwrite: bool = False) -> dict:
    """Compute the synthetic-quality report and write ``quality.json``, ``quality.md`` and ``quality.png``.

    Parameters
    ----------
    real : str | os.PathLike
        the real datalist (its real training and test cases).
    synthetic : str | os.PathLike
        the synthetic datalist.
    out : str | os.PathLike
        the report folder, built in a staging folder and moved in at the end.
    model : str | os.PathLike | None
        a trained spine_segcls (bundle folder or ``model.pt``) as the judge: its own Fréchet distance and
        the label consistency of the synthetic volumes.
    seed : int
        fixes the real halves and the synthetic sample.
    overwrite : bool
        replace a report already in ``out``.

    Returns
    -------
    dict
        The report: Fréchet distances against the real-vs-real floor, MS-SSIM diversity with intervals, the
        memorization test and, with ``model``, the label consistency per label and class.
    """
    real_list, synth_list = read_datalist(real), read_datalist(synthetic)
    train = [c for c in real_list.split("training") if c.source == "real"]
    test = [c for c in real_list.split("test") if c.source == "real"]
    synth = synth_list.cases
    if len(train) < 4:
        raise VolganInputError(real_list.path, f"needs at least 4 real training cases, has {len(train)}")
    if len(synth) < 2:
        raise VolganInputError(synth_list.path, "needs at least 2 synthetic cases")
    with staged_output_dir(Path(out), QUALITY_ENTRIES, overwrite) as staging:  # refuses a taken folder first
        report = _quality(train, test, synth, real_list, synth_list, model, seed)
        arrays = report.pop("_arrays")
        write_text(staging / "quality.json", json.dumps(report, indent=2, allow_nan=False) + "\n")
        write_text(staging / "quality.md", render_markdown(report))
        _figure(*arrays, staging / "quality.png")
    return report


def summary_line(report: dict) -> str:
    """The report's headline: the Fréchet distance against the real-vs-real floor, and the MS-SSIM diversity of
    the synthetic volumes against the real ones.

    Parameters
    ----------
    report : dict
        the quality report (:func:`quality_report`).

    Returns
    -------
    str
        one line.
    """
    o = {k: v if v is None else f"{v:.3f}" for k, v in report["overall"].items() if isinstance(v, (float, type(None)))}
    return (f"Fréchet {o['frechet_synthetic_vs_real']} (real floor {o['frechet_real_vs_real']}), "
            f"MS-SSIM synthetic {o['msssim_synthetic']} vs real {o['msssim_real']}")


def _quality(train, test, synth, real_list, synth_list, model, seed: int) -> dict:
    first = read_volume(synth[0].image)
    prep = Preprocessing(tuple(first.spacing), tuple(first.shape))
    loaded_model = None
    if model is not None:
        from volgan.segcls.network import SegClsNet
        from volgan.segcls.predict import load_model

        loaded_model = load_model(model, "cpu")
        if not isinstance(loaded_model.network, SegClsNet):
            raise VolganInputError(model, "the judge's encoder is read from its checkpoint: give model.pt or the "
                                          "bundle folder, not a TorchScript export")

    real_images, real_labels = load_arrays(train, prep)
    test_images, test_labels = load_arrays(test, prep) if test else (np.zeros((0, *prep.patch), np.float32), None)
    synth_images, synth_labels = load_arrays(synth, prep)
    net = feature_network()
    f_real, f_synth = features(real_images, net), features(synth_images, net)
    j_real = j_synth = None
    if loaded_model is not None:
        j_real, j_synth = (judge_features(loaded_model.network, a) for a in (real_images, synth_images))
    rng = np.random.default_rng(seed)
    half = rng.permutation(len(train))
    part_a, part_b = half[: len(train) // 2], half[len(train) // 2:]
    pick = rng.permutation(len(synth))[: len(part_a)]

    def group_report(real_idx: np.ndarray, synth_idx: np.ndarray) -> dict:
        ra, rb = part_a[np.isin(part_a, real_idx)], part_b[np.isin(part_b, real_idx)]
        sp = pick[np.isin(pick, synth_idx)]
        report = {
            "n_real": int(len(real_idx)), "n_synthetic": int(len(synth_idx)),
            "frechet_synthetic_vs_real": frechet_distance(f_synth[sp], f_real[rb]) if len(sp) and len(rb) else None,
            "frechet_real_vs_real": frechet_distance(f_real[ra], f_real[rb]) if len(ra) and len(rb) else None,
            "frechet_judge_synthetic_vs_real": frechet_distance(j_synth[sp], j_real[rb])
            if j_real is not None and len(sp) and len(rb) else None,
            "frechet_judge_real_vs_real": frechet_distance(j_real[ra], j_real[rb])
            if j_real is not None and len(ra) and len(rb) else None,
            **diversity_figures(synth_images[synth_idx], real_images[real_idx], seed),
        }
        return report

    real_types = np.array([-1 if c.tumor_type is None else c.tumor_type for c in train])
    synth_types = np.array([-1 if c.tumor_type is None else c.tumor_type for c in synth])
    overall = group_report(np.arange(len(train)), np.arange(len(synth)))
    per_type = {TUMOR_TYPES[k]: group_report(np.nonzero(real_types == k)[0], np.nonzero(synth_types == k)[0])
                for k in TUMOR_TYPES if (real_types == k).any() or (synth_types == k).any()}

    memorization = {"distance": "RMS difference of z-normalised volumes to the nearest real training volume",
                    **memorization_figures(synth_images, test_images, real_images)}
    smooth = [smoothed(a) for a in (synth_images, test_images, real_images)]
    memorization["smoothed"] = {
        "distance": "the same after a Gaussian blur of σ = 1 voxel on every volume, which removes most of the "
                    "noise floor (synthetic images are smoother than real ones, which lowers their raw RMS "
                    "distance to anything)", **memorization_figures(*smooth)}
    consistency = {"model": None, "note": "no spine_segcls model given (--model); label consistency is missing"}
    if loaded_model is not None:
        grid = np.diag([*prep.spacing, 1.0])
        dice, calls = label_consistency(loaded_model, synth_images, synth_labels, grid)
        test_dice = label_consistency(loaded_model, test_images, test_labels, grid)[0] if test else None
        consistency = {"model": str(model), "dice": {LABELS[k]: summary_of(dice[:, k - 1]) for k in range(1, 6)},
                       "per_type": {TUMOR_TYPES[t]: {LABELS[k]: summary_of(dice[synth_types == t, k - 1])
                                                     for k in range(1, 6)} for t in TUMOR_TYPES
                                    if (synth_types == t).any()},
                       **tumor_consistency(dice, calls, synth_labels, test_dice, test_labels)}
    site = [i.get("site_verified") for i in synth_list.meta.get("volgan", {}).get("cases", {}).values()]
    report = {
        "real": str(real_list.path), "synthetic": str(synth_list.path), "grid": {"shape": list(prep.patch),
                                                                                  "spacing": list(prep.spacing)},
        "label_source": synth_list.meta.get("volgan", {}).get("label_source"),
        "feature_network": FEATURE_NETWORK,
        "feature_networks": {"frechet": FEATURE_NETWORK,
                             "frechet_judge": JUDGE_FEATURES if loaded_model is not None else None,
                             "why_not_pretrained": WHY_NOT_PRETRAINED},
        "n": {"real_train": len(train), "real_test": len(test), "synthetic": len(synth),
              "synthetic_per_type": {TUMOR_TYPES.get(int(k), "unknown"): int(v)
                                     for k, v in Counter(synth_types).items()}},
        "overall": overall, "per_type": per_type, "memorization": memorization, "label_consistency": consistency,
        "pose_spread": {"fields": list(POSE_FIELDS), "real_train": pose_spread(real_labels),
                        "synthetic": pose_spread(synth_labels)},
        "tumor_site_verified": {"n": sum(s is True for s in site), "of": sum(s is not None for s in site)},
    }
    report = strict_json(report)
    report["_arrays"] = (real_images, synth_images, real_types, synth_types)  # for the figure, not the JSON
    return report


def render_markdown(report: dict) -> str:
    """The quality report as a Markdown page: the Fréchet and MS-SSIM table per group, the memorization test, the
    judge's label consistency and the definitions.

    Parameters
    ----------
    report : dict
        the quality report (:func:`quality_report`).

    Returns
    -------
    str
        the page.
    """
    lines = ["# Synthetic-quality report", "",
             f"{report['n']['synthetic']} synthetic volumes against {report['n']['real_train']} real training and "
             f"{report['n']['real_test']} real test volumes, on a {report['grid']['shape']} grid at "
             f"{report['grid']['spacing']} mm.", "",
             "| group | n real | n synthetic | Fréchet synthetic vs real | Fréchet real vs real (floor) | "
             "MS-SSIM synthetic | MS-SSIM real | diversity gap |", "|---|---|---|---|---|---|---|---|"]
    for name, g in [("all", report["overall"]), *report["per_type"].items()]:
        lines.append(f"| {name} | {g['n_real']} | {g['n_synthetic']} | {fmt(g['frechet_synthetic_vs_real'], 1)} | "
                     f"{fmt(g['frechet_real_vs_real'], 1)} | {_with_ci(g, 'msssim_synthetic')} | "
                     f"{_with_ci(g, 'msssim_real')} | {_with_ci(g, 'diversity_gap')} |")
    judged = report["overall"].get("frechet_judge_synthetic_vs_real") is not None
    lines += ["", f"Fréchet features: {report['feature_networks']['frechet']} (the table's columns)."]
    if judged:
        lines += [f"Second extractor, {report['feature_networks']['frechet_judge']}: Fréchet synthetic vs real "
                  + ", ".join(f"{name} {fmt(g.get('frechet_judge_synthetic_vs_real'), 2)} (floor "
                              f"{fmt(g.get('frechet_judge_real_vs_real'), 2)})"
                              for name, g in [("all", report["overall"]), *report["per_type"].items()]) + "."]
    lines += [report["feature_networks"]["why_not_pretrained"] + "."]
    lines += ["", "MS-SSIM: mean over up to 512 distinct pairs, lower is more diverse; diversity gap = |synthetic − "
              "real| / real; brackets: 95% percentile-bootstrap interval over volumes "
              f"({BOOTSTRAP_RESAMPLES} seeded resamples)."]
    m = report["memorization"]
    lines += ["", "## Memorization", "", m["distance"] + ".", "",
              f"- synthetic → training: median {fmt(m['synthetic_to_train'].get('median'))}, "
              f"min {fmt(m['synthetic_to_train'].get('min'))}",
              f"- test → training: median {fmt(m['test_to_train'].get('median'))}, "
              f"min {fmt(m['test_to_train'].get('min'))}",
              f"- synthetic volumes nearer to a training volume than the nearest test volume: "
              f"{m['synthetic_nearer_than_nearest_test']} (by chance alone, were synthetic volumes as far from "
              f"the training set as test volumes are: {fmt(m['expected_by_chance'], 1)} expected, and as many or "
              f"more with probability {fmt(m['chance_of_as_many'], 2)})",
              f"- with every volume smoothed alike ({m['smoothed']['distance'].split(',')[0]}): synthetic min "
              f"{fmt(m['smoothed']['synthetic_to_train'].get('min'))}, test min "
              f"{fmt(m['smoothed']['test_to_train'].get('min'))}, synthetic nearer than the nearest test: "
              f"{m['smoothed']['synthetic_nearer_than_nearest_test']} (p = {fmt(m['smoothed'].get('p_value'), 3)}: "
              f"{m['smoothed'].get('verdict') or 'no test set'}; median nearest-training distance, synthetic / "
              f"test: {fmt(m['smoothed'].get('median_distance_ratio'), 2)})", "", "## Label consistency", ""]
    c = report["label_consistency"]
    if c["model"] is None:
        lines.append("Missing: " + c["note"] + ".")
    else:
        lines += [f"Dice between each synthetic label map and `{c['model']}`'s prediction on its image.", "",
                  "| label | mean | median | min |", "|---|---|---|---|"]
        lines += [f"| {k} | {fmt(v.get('mean'))} | {fmt(v.get('median'))} | {fmt(v.get('min'))} |"
                  for k, v in c["dice"].items()]
        if "targets" in c:
            free = c["tumor_free"]
            lines += ["", f"Tumor, judged fairly: the judge's mean tumor Dice is {fmt(c['real_test']['tumor_dice'])} "
                      f"on the {c['real_test']['n']} tumor-bearing real test volumes and "
                      f"{fmt(c['tumor_bearing']['tumor_dice'])} on the {c['tumor_bearing']['n']} tumor-bearing "
                      f"synthetic ones (a missed tumor scores 0); it calls a tumor in {free['with_tumor_found']} of "
                      f"the {free['of']} synthetic volumes whose map holds none.", "",
                      "| target | value | verdict |", "|---|---|---|"]
            lines += [f"| {t['target']} | {fmt(t['value'])} | {'met' if t['met'] else 'NOT met'} |"
                      for t in c["targets"]]
    p = report["pose_spread"]
    lines += ["", "## Pose spread", "", "Standard deviation over label maps of each pose number (`volgan.gan.pose`).",
              "",
              "| | " + " | ".join(p["fields"]) + " |", "|---" * (len(p["fields"]) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(fmt(v, 2) for v in p[key]) + " |"
              for name, key in (("real training", "real_train"), ("synthetic", "synthetic"))]
    s = report["tumor_site_verified"]
    lines += ["", f"Tumor site matching its class at synthesis: {s['n']} of {s['of']} volumes.", "",
              f"Features: {report['feature_network']}.", "", "![synthetic beside real](quality.png)", ""]
    return "\n".join(lines)


def _with_ci(group: dict, key: str) -> str:
    ci = group.get(f"{key}_ci")
    return fmt(group.get(key)) + (f" [{fmt(ci[0])}, {fmt(ci[1])}]" if ci else "")


def _figure(real: np.ndarray, synth: np.ndarray, real_types, synth_types, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 4, figsize=(10, 5.4))
    for col, (k, name) in enumerate(TUMOR_TYPES.items()):
        for row, (arrays, types, kind) in enumerate(((synth, synth_types, "synthetic"), (real, real_types, "real"))):
            ax = axes[row, col]
            idx = np.nonzero(types == k)[0]
            if len(idx):
                volume = arrays[idx[0]]
                ax.imshow(volume[volume.shape[0] // 2].T, origin="lower", cmap="gray")
            ax.set_title(f"{kind}: {name[:16]}", fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
