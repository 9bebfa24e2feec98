"""The synthetic-quality figures, one function each: the Fréchet distance between feature sets, nearest-neighbour
distances and the memorization count with its chance, MS-SSIM diversity with bootstrap intervals, and label
consistency (does a judge segment the synthetic tumors as well as the real ones). :mod:`volgan.evaluation.quality`
assembles them into the report.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from volgan.gan.trainer import msssim_pairs
from volgan.labels import LABELS

DIVERSITY_PAIRS = 512  # MS-SSIM pairs per group at most: 64 drawn pairs of 48 volumes varied by ±0.03
BOOTSTRAP_RESAMPLES = 1000


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
        return {"synthetic_to_train": summary_of(synth_nn), "test_to_train": summary_of(test_nn),
                "synthetic_nearer_than_nearest_test": None, "expected_by_chance": None, "chance_of_as_many": None,
                "p_value": None, "verdict": None, "median_distance_ratio": None}
    count = int((synth_nn < test_nn.min()).sum())
    p_value = chance_of_at_least(count, len(synth_nn), len(test_nn))
    return {"synthetic_to_train": summary_of(synth_nn), "test_to_train": summary_of(test_nn),
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


def summary_of(values: np.ndarray) -> dict:
    """The finite values' count, mean, least, median and largest.

    Parameters
    ----------
    values : np.ndarray
        (N,) values, NaN for none.

    Returns
    -------
    dict
        ``n`` and ``mean`` (None when no value is finite), ``min``, ``median`` and ``max``.
    """
    finite = values[np.isfinite(values)]
    if not finite.size:
        return {"n": 0, "mean": None}
    return {"n": int(finite.size), "mean": float(finite.mean()), "min": float(finite.min()),
            "median": float(np.median(finite)), "max": float(finite.max())}
