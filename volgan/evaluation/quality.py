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
import math
import os
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from volgan.data.datalist import Case, read_datalist
from volgan.data.files import staged_output_dir, strict_json, write_text
from volgan.data.io import read_volume
from volgan.data.loader import subject_for
from volgan.errors import VolganInputError
from volgan.evaluation.rendering import fmt
from volgan.gan.pose import POSE_FIELDS, pose_spread
from volgan.gan.trainer import msssim_pairs
from volgan.labels import LABELS, TUMOR_TYPES
from volgan.transforms import Preprocessing, preprocessing

QUALITY_ENTRIES = ("quality.json", "quality.md", "quality.png")
DIVERSITY_PAIRS = 512  # MS-SSIM pairs per group at most: 64 drawn pairs of 48 volumes varied by ±0.03
BOOTSTRAP_RESAMPLES = 1000
FEATURE_NETWORK = "MONAI resnet10 (3D), random weights with torch seed 0, global-average-pooled 512 features"


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


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to feature sets (N × D each), by MONAI's
    :class:`~monai.metrics.FIDMetric` in float64; NaN when a set has fewer than two samples.

    Parameters
    ----------
    a : np.ndarray
        (N, D) features of one set.
    b : np.ndarray
        (M, D) features of the other.

    Returns
    -------
    float
        the squared Fréchet distance (feature units squared).
    """
    from monai.metrics import FIDMetric
    from scipy.linalg import LinAlgWarning

    if len(a) < 2 or len(b) < 2:
        return math.nan
    with warnings.catch_warnings():
        # fewer samples than features: the covariance product is singular, and that is expected; MONAI's call of
        # scipy.linalg.sqrtm also passes an argument that SciPy 1.17 deprecates
        warnings.simplefilter("ignore", LinAlgWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        return float(FIDMetric()(torch.from_numpy(np.asarray(a, np.float64)),
                                 torch.from_numpy(np.asarray(b, np.float64))))


def nearest_distances(queries: np.ndarray, bank: np.ndarray) -> np.ndarray:
    """RMS distance of each query volume to its nearest volume in ``bank``.

    Parameters
    ----------
    queries : np.ndarray
        (N, S, S, S) volumes.
    bank : np.ndarray
        (M, S, S, S) volumes on the same grid.

    Returns
    -------
    np.ndarray
        (N,) root-mean-square voxel differences to the nearest volume of ``bank`` (intensity units).
    """
    q = queries.reshape(len(queries), -1).astype(np.float64)
    b = bank.reshape(len(bank), -1).astype(np.float64)
    d2 = (q**2).sum(1)[:, None] + (b**2).sum(1)[None] - 2 * q @ b.T
    return np.sqrt(np.maximum(d2, 0).min(axis=1) / q.shape[1])


def smoothed(images: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    """Every volume of (N, S, S, S) blurred alike with a Gaussian of ``sigma`` voxels.

    Parameters
    ----------
    images : np.ndarray
        (N, S, S, S) volumes.
    sigma : float
        the Gaussian's standard deviation in voxels.

    Returns
    -------
    np.ndarray
        (N, S, S, S) blurred volumes.
    """
    from scipy import ndimage

    return np.stack([ndimage.gaussian_filter(v, sigma) for v in images]) if len(images) else images


def chance_of_at_least(k: int, n_synthetic: int, n_test: int) -> float:
    """P(at least ``k`` of ``n_synthetic`` volumes fall below the least of ``n_test`` distances) when synthetic
    and test distances are exchangeable (synthetic volumes as far from the training set as test volumes are):
    the first ``k`` of a random order of all distances are synthetic, C(n_s, k) / C(n_s + n_t, k).

    Parameters
    ----------
    k : int
        the count observed.
    n_synthetic : int
        the number of synthetic volumes.
    n_test : int
        the number of test volumes.

    Returns
    -------
    float
        the probability, in [0, 1] (1 for ``k`` = 0).
    """
    return math.comb(n_synthetic, k) / math.comb(n_synthetic + n_test, k)


def memorization_figures(synth: np.ndarray, test: np.ndarray, train: np.ndarray) -> dict:
    """Nearest-training distances of synthetic and test volumes, how many synthetic volumes are nearer to the
    training set than the nearest test volume is, how many that would be by chance alone (were synthetic
    volumes as far from the training set as test volumes are, each would fall below the least of n test
    distances with probability 1 / (n + 1)), and the chance of a count at least as high
    (:func:`chance_of_at_least`, a one-sided exact test of "nearer than test volumes are"), kept as ``p_value``
    with its ``verdict`` ("not beyond chance" when p ≥ :data:`MEMORIZATION_ALPHA`), and the ratio of the median
    nearest-training distances, synthetic to test (below 1: synthetic volumes sit nearer the training set).

    Parameters
    ----------
    synth : np.ndarray
        (N, S, S, S) synthetic volumes.
    test : np.ndarray
        (T, S, S, S) real test volumes (may be empty: the counts are then None).
    train : np.ndarray
        (M, S, S, S) real training volumes.

    Returns
    -------
    dict
        ``synthetic_to_train`` and ``test_to_train`` (distance summaries), ``synthetic_nearer_than_nearest_test``,
        ``expected_by_chance``, ``chance_of_as_many``, ``p_value``, ``verdict`` and ``median_distance_ratio``.
    """
    synth_nn = nearest_distances(synth, train)
    test_nn = nearest_distances(test, train) if len(test) else np.array([])
    if not test_nn.size:
        return {"synthetic_to_train": _summary(synth_nn), "test_to_train": _summary(test_nn),
                "synthetic_nearer_than_nearest_test": None, "expected_by_chance": None, "chance_of_as_many": None,
                "p_value": None, "verdict": None, "median_distance_ratio": None}
    count = int((synth_nn < test_nn.min()).sum())
    p_value = chance_of_at_least(count, len(synth_nn), len(test_nn))
    return {"synthetic_to_train": _summary(synth_nn), "test_to_train": _summary(test_nn),
            "synthetic_nearer_than_nearest_test": count, "expected_by_chance": len(synth_nn) / (len(test_nn) + 1),
            "chance_of_as_many": p_value, "p_value": p_value,
            "verdict": "not beyond chance" if p_value >= MEMORIZATION_ALPHA else "beyond chance",
            "median_distance_ratio": float(np.median(synth_nn) / np.median(test_nn)) if np.median(test_nn) > 0
            else None}


MEMORIZATION_ALPHA = 0.05  # near-copies "beyond chance" when their count is this unlikely or less


def _pair_resamples(pairs: np.ndarray, values: np.ndarray, n: int, rng: np.random.Generator,
                    resamples: int) -> np.ndarray:
    """Mean pair value under each of ``resamples`` bootstrap draws of the ``n`` volumes: a pair counts as often
    as both its volumes were drawn (c_i × c_j); NaN where no measured pair was drawn."""
    counts = np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(resamples)]).astype(float)
    weights = counts[:, pairs[:, 0]] * counts[:, pairs[:, 1]]
    total = weights.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, weights @ values / total, np.nan)


def diversity_figures(synth: np.ndarray, real: np.ndarray, seed: int = 0,
                      resamples: int = BOOTSTRAP_RESAMPLES) -> dict:
    """MS-SSIM diversity of synthetic and real (N, S, S, S) volumes (up to :data:`DIVERSITY_PAIRS` pairs each)
    and the gap |synthetic − real| / real, each with a 95% percentile-bootstrap interval over volumes (the two
    sets resampled independently, ``resamples`` seeded draws). Values are None below two volumes.

    Parameters
    ----------
    synth : np.ndarray
        (N, S, S, S) synthetic volumes.
    real : np.ndarray
        (M, S, S, S) real volumes.
    seed : int
        fixes the pairs and the bootstrap draws.
    resamples : int
        the bootstrap draws.

    Returns
    -------
    dict
        ``msssim_synthetic``, ``msssim_real`` and ``diversity_gap``, each with its ``_ci`` ([low, high], None when
        undefined).
    """
    rng = np.random.default_rng(seed)
    out, draws = {}, {}
    for name, volumes in (("synthetic", synth), ("real", real)):
        pairs, values = msssim_pairs(torch.from_numpy(volumes[:, None]), DIVERSITY_PAIRS, seed)
        pairs, values = pairs.numpy(), values.double().numpy()
        out[f"msssim_{name}"] = float(values.mean()) if len(values) else None
        draws[name] = _pair_resamples(pairs, values, len(volumes), rng, resamples) if len(values) else None
        out[f"msssim_{name}_ci"] = _interval(draws[name])
    if out["msssim_synthetic"] is not None and out["msssim_real"]:
        out["diversity_gap"] = abs(out["msssim_synthetic"] - out["msssim_real"]) / out["msssim_real"]
        out["diversity_gap_ci"] = _interval(np.abs(draws["synthetic"] - draws["real"]) / draws["real"])
    return out


def _interval(draws: np.ndarray | None) -> list[float] | None:
    finite = draws[np.isfinite(draws)] if draws is not None else np.zeros(0)
    return [float(v) for v in np.percentile(finite, [2.5, 97.5])] if finite.size else None


def label_consistency(model, images: np.ndarray, labels: np.ndarray, affine: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Dice (N × 5, labels 1–5) between each label map and the model's prediction on its image, and whether
    the model calls a tumor in each (N, bool; :attr:`volgan.segcls.predict.Prediction.tumor_probability` ≥ 0.5).

    Parameters
    ----------
    model : LoadedModel
        the judge (:func:`volgan.segcls.predict.load_model`).
    images : np.ndarray
        (N, S, S, S) images.
    labels : np.ndarray
        (N, S, S, S) label maps, labels 0–5.
    affine : np.ndarray
        the grid's 4×4 voxel-to-RAS affine (mm).

    Returns
    -------
    tuple[np.ndarray, np.ndarray]
        Dice (N, 5) and tumor calls (N,) bool.
    """
    from volgan.data.io import Volume
    from volgan.evaluation.metrics import segmentation_metrics
    from volgan.segcls.predict import predict

    rows, calls = [], []
    for image, label in zip(images, labels, strict=True):
        prediction = predict(model, Volume(image, affine))
        metrics = segmentation_metrics(prediction.label.array, label, (1, 1, 1))
        rows.append([metrics[k]["Dice"] for k in range(1, 6)])
        calls.append(prediction.tumor_probability >= 0.5)
    return np.array(rows, dtype=np.float64), np.array(calls, dtype=bool)


CONSISTENCY_TARGETS = {"tumor_dice_ratio": 0.8, "tumor_free_found": 0.10, "anatomy_dice": 0.85}


def tumor_consistency(synth_dice: np.ndarray, synth_calls: np.ndarray, synth_labels: np.ndarray,
                      test_dice: np.ndarray | None, test_labels: np.ndarray | None) -> dict:
    """The judge's tumor figures: ``real_test.tumor_dice`` (mean tumor Dice on the tumor-bearing real test
    volumes, its yardstick), ``tumor_bearing.tumor_dice`` (the same on the tumor-bearing synthetic volumes),
    ``tumor_free`` (synthetic volumes whose map holds no tumor, and how many of them the judge calls a tumor in),
    and each target of :data:`CONSISTENCY_TARGETS` with its verdict. Dice arrays: N × 5 (labels 1–5).

    Parameters
    ----------
    synth_dice : np.ndarray
        (N, 5) judge Dice on the synthetic volumes (:func:`label_consistency`).
    synth_calls : np.ndarray
        (N,) the judge's tumor calls on them.
    synth_labels : np.ndarray
        (N, S, S, S) their label maps.
    test_dice : np.ndarray | None
        (T, 5) judge Dice on the real test volumes, or None.
    test_labels : np.ndarray | None
        (T, S, S, S) their label maps, or None.

    Returns
    -------
    dict
        ``real_test`` and ``tumor_bearing`` (mean tumor Dice and n), ``tumor_free`` (tumors found, of how many) and
        ``targets`` (each target's value, bar and whether it is met, anatomy Dice included).
    """
    from volgan.labels import TUMOR_LABEL

    def mean_tumor_dice(dice, labels):
        bearing = (labels == TUMOR_LABEL).reshape(len(labels), -1).any(1)
        values = np.nan_to_num(dice[bearing, TUMOR_LABEL - 1], nan=0.0)  # a missed tumor scores 0
        return {"tumor_dice": float(values.mean()) if values.size else None, "n": int(bearing.sum())}

    synth_bearing = (synth_labels == TUMOR_LABEL).reshape(len(synth_labels), -1).any(1)
    real = mean_tumor_dice(test_dice, test_labels) if test_dice is not None and len(test_dice) else \
        {"tumor_dice": None, "n": 0}
    bearing = mean_tumor_dice(synth_dice, synth_labels)
    free = {"with_tumor_found": int(synth_calls[~synth_bearing].sum()), "of": int((~synth_bearing).sum())}
    anatomy = {LABELS[k]: float(np.nanmean(synth_dice[:, k - 1])) if np.isfinite(synth_dice[:, k - 1]).any()
               else None for k in range(1, 5)}
    targets = []
    if real["tumor_dice"] is not None and bearing["tumor_dice"] is not None:
        bar = CONSISTENCY_TARGETS["tumor_dice_ratio"] * real["tumor_dice"]
        targets.append({"target": f"tumor_bearing.tumor_dice >= {CONSISTENCY_TARGETS['tumor_dice_ratio']} x "
                                  "real_test.tumor_dice", "value": bearing["tumor_dice"], "bar": bar,
                        "met": bearing["tumor_dice"] >= bar})
    if free["of"]:
        share = free["with_tumor_found"] / free["of"]
        targets.append({"target": f"tumor-free volumes with a tumor found <= "
                                  f"{CONSISTENCY_TARGETS['tumor_free_found']:.0%}", "value": share,
                        "bar": CONSISTENCY_TARGETS["tumor_free_found"],
                        "met": share <= CONSISTENCY_TARGETS["tumor_free_found"]})
    for name, value in anatomy.items():
        if value is not None:
            targets.append({"target": f"{name} Dice >= {CONSISTENCY_TARGETS['anatomy_dice']}", "value": value,
                            "bar": CONSISTENCY_TARGETS["anatomy_dice"],
                            "met": value >= CONSISTENCY_TARGETS["anatomy_dice"]})
    return {"real_test": real, "tumor_bearing": bearing, "tumor_free": free, "targets": targets}


def _summary(values: np.ndarray) -> dict:
    finite = values[np.isfinite(values)]
    if not finite.size:
        return {"n": 0, "mean": None}
    return {"n": int(finite.size), "mean": float(finite.mean()), "min": float(finite.min()),
            "median": float(np.median(finite)), "max": float(finite.max())}


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
        consistency = {"model": str(model), "dice": {LABELS[k]: _summary(dice[:, k - 1]) for k in range(1, 6)},
                       "per_type": {TUMOR_TYPES[t]: {LABELS[k]: _summary(dice[synth_types == t, k - 1])
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
