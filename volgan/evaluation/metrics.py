"""Segmentation and classification metrics, with the definitions of docs/design.md.

Segmentation, per case and label (1–5), from integer label maps and the header's spacing (mm):

- Dice = 2TP/(2TP+FP+FN), IoU = TP/(TP+FP+FN) from voxel counts; both masks empty gives NaN, flagged
  ``empty_ref_and_pred`` and left out of means (as nnU-Net does).
- HD95 = max of the two directed 95th-percentile surface distances (MONAI's and MetricsReloaded's
  definition: surface = mask XOR its 6-connected erosion, distances between surface voxel centres in mm,
  percentile by linear interpolation). One side empty gives the image diagonal in mm, flagged
  ``empty_ref`` or ``empty_pred``.
- NSD at ``tolerance`` mm = share of both surfaces within ``tolerance`` of the other (MONAI's
  ``compute_surface_dice`` without subvoxels). One side empty gives 0.

One confusion matrix gives every label's counts; each label's two surfaces and both distance sets are
computed once and give HD95 and NSD together. Distance queries use a KD-tree on all cores.

Classification: accuracy, precision, recall (sensitivity), specificity and F1 of ``tumor`` at 0.5,
ROC AUC of ``tumor`` and one-vs-rest macro AUC of ``tumor_type`` (the Mann-Whitney statistic, as MONAI's
``compute_roc_auc``), each with a seeded percentile-bootstrap 95% confidence interval over cases. The rates and the
AUC are written once, for cases counted by weights (:func:`weighted_rates`, :func:`weighted_auc`), which the
study's bootstrap uses with a row of weights per replicate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.spatial import cKDTree

from volgan.labels import NUM_LABELS, NUM_TUMOR_TYPES

FOREGROUND = tuple(range(1, NUM_LABELS))
COUNT_KEYS = ("TP", "FP", "FN", "TN", "n_pred", "n_ref")


def confusion_counts(pred: np.ndarray, ref: np.ndarray, labels=FOREGROUND) -> dict[int, dict[str, int]]:
    """Voxel counts per label from one pass over the maps.

    Parameters
    ----------
    pred : np.ndarray
        Predicted label map (X, Y, Z), integers.
    ref : np.ndarray
        Reference label map on the same grid.
    labels
        The labels to count.

    Returns
    -------
    dict[int, dict[str, int]]
        ``{label: {TP, FP, FN, TN, n_pred, n_ref}}``, voxels.
    """
    n = NUM_LABELS
    matrix = np.bincount(pred.astype(np.int64).ravel() * n + ref.astype(np.int64).ravel(),
                         minlength=n * n).reshape(n, n)  # [pred, ref]
    total = int(matrix.sum())
    out = {}
    for k in labels:
        tp = int(matrix[k, k])
        n_pred, n_ref = int(matrix[k].sum()), int(matrix[:, k].sum())
        out[k] = {"TP": tp, "FP": n_pred - tp, "FN": n_ref - tp, "TN": total - n_pred - n_ref + tp,
                  "n_pred": n_pred, "n_ref": n_ref}
    return out


def dice_iou(counts: dict[str, int]) -> tuple[float, float]:
    """Dice and IoU of one label from its voxel counts.

    Parameters
    ----------
    counts : dict[str, int]
        ``TP``, ``FP`` and ``FN`` (:func:`confusion_counts`).

    Returns
    -------
    tuple[float, float]
        (Dice, IoU), each in [0, 1]; NaN when the label is empty in both maps.
    """
    tp, fp, fn = counts["TP"], counts["FP"], counts["FN"]
    if tp + fp + fn == 0:
        return math.nan, math.nan
    return 2 * tp / (2 * tp + fp + fn), tp / (tp + fp + fn)


def surface(mask: np.ndarray) -> np.ndarray:
    """Surface voxels: the mask minus its erosion by the 6-connected cross (outside counts as background).

    Parameters
    ----------
    mask : np.ndarray
        (X, Y, Z) bool mask.

    Returns
    -------
    np.ndarray
        (X, Y, Z) bool mask of its surface voxels.
    """
    inner = mask.copy()
    inner[0], inner[-1] = False, False
    inner[:, 0], inner[:, -1] = False, False
    inner[:, :, 0], inner[:, :, -1] = False, False
    core = inner[1:-1, 1:-1, 1:-1]
    core &= mask[:-2, 1:-1, 1:-1] & mask[2:, 1:-1, 1:-1]
    core &= mask[1:-1, :-2, 1:-1] & mask[1:-1, 2:, 1:-1]
    core &= mask[1:-1, 1:-1, :-2] & mask[1:-1, 1:-1, 2:]
    return mask & ~inner


KDTREE_WORKERS = -1  # threads of the surface-distance queries (scipy's ``workers``; -1: every core)


def surface_distances(pred: np.ndarray, ref: np.ndarray, spacing) -> tuple[np.ndarray, np.ndarray]:
    """Distances from each surface voxel of ``pred`` to the surface of ``ref``, and back.

    Both masks must be non-empty. The work is cropped to their joint bounding box with a 1-voxel margin.

    Parameters
    ----------
    pred : np.ndarray
        (X, Y, Z) bool mask.
    ref : np.ndarray
        (X, Y, Z) bool mask on the same grid.
    spacing
        Voxel size in mm, (3,).

    Returns
    -------
    tuple[np.ndarray, np.ndarray]
        The distances (mm, float32) of ``pred``'s surface voxels to ``ref``'s surface, and of ``ref``'s to
        ``pred``'s.
    """
    both = pred | ref
    box = tuple(slice(max(int(idx.min()) - 1, 0), int(idx.max()) + 2) for idx in np.nonzero(both))
    scale = np.asarray(spacing, dtype=np.float64)
    pred_pts = np.argwhere(surface(pred[box])) * scale
    ref_pts = np.argwhere(surface(ref[box])) * scale
    to_ref = cKDTree(ref_pts, leafsize=32).query(pred_pts, k=1, workers=KDTREE_WORKERS)[0]
    to_pred = cKDTree(pred_pts, leafsize=32).query(ref_pts, k=1, workers=KDTREE_WORKERS)[0]
    return to_ref.astype(np.float32), to_pred.astype(np.float32)


def percentile(distances: np.ndarray, q: float) -> float:
    """The q-th percentile with linear interpolation, in float32 as MONAI computes it.

    Parameters
    ----------
    distances : np.ndarray
        (N,) float32 distances in mm.
    q : float
        the percentile, in [0, 100].

    Returns
    -------
    float
        the percentile, in mm.
    """
    return float(torch.quantile(torch.from_numpy(distances), q / 100.0))


def diagonal_mm(shape, spacing) -> float:
    """The length in mm of a grid's diagonal: the distance given when a mask is empty on one side only.

    Parameters
    ----------
    shape : tuple[int, int, int]
        the grid's shape (X, Y, Z).
    spacing : tuple[float, float, float]
        its voxel size in mm.

    Returns
    -------
    float
        the diagonal in mm.
    """
    return float(np.linalg.norm(np.asarray(shape, dtype=np.float64) * np.asarray(spacing, dtype=np.float64)))


def segmentation_metrics(pred: np.ndarray, ref: np.ndarray, spacing, tolerance_mm: float = 2.0,
                         labels=FOREGROUND, annotated=None) -> dict[int, dict]:
    """Every segmentation figure of one case, per label.

    Parameters
    ----------
    pred : np.ndarray
        the predicted label map (X, Y, Z), integers.
    ref : np.ndarray
        the reference label map on the same grid.
    spacing
        voxel size in mm, (3,).
    tolerance_mm : float
        the NSD's tolerance, mm.
    labels
        the labels to score.
    annotated
        the labels the reference annotates (numbers or names; None: all). A label it leaves unannotated is not
        scored: its figures are NaN, flagged ``not_annotated``, and left out of every mean.

    Returns
    -------
    dict[int, dict]
        Per label: ``Dice``, ``IoU``, ``HD95`` (mm), ``NSD``, the voxel counts and ``flags`` (list of strings);
        a figure that is undefined for the case (an empty label) is NaN and flagged.
    """
    from volgan.labels import label_number

    scored = set(labels) if annotated is None else {label_number(a) for a in annotated}
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}")
    counts = confusion_counts(pred, ref, labels)
    worst = diagonal_mm(ref.shape, spacing)
    out = {}
    for k in labels:
        row: dict = dict(counts[k])
        row["Dice"], row["IoU"] = dice_iou(counts[k])
        flags = []
        if k not in scored:
            flags.append("not_annotated")
            row["Dice"] = row["IoU"] = row["HD95"] = row["NSD"] = math.nan
        elif row["n_pred"] == 0 and row["n_ref"] == 0:
            flags.append("empty_ref_and_pred")
            row["HD95"], row["NSD"] = math.nan, math.nan
        elif row["n_pred"] == 0 or row["n_ref"] == 0:
            flags.append("empty_pred" if row["n_pred"] == 0 else "empty_ref")
            row["HD95"], row["NSD"] = worst, 0.0
        else:
            to_ref, to_pred = surface_distances(pred == k, ref == k, spacing)
            row["HD95"] = max(percentile(to_ref, 95), percentile(to_pred, 95))
            row["NSD"] = float(((to_ref <= tolerance_mm).sum() + (to_pred <= tolerance_mm).sum())
                               / (to_ref.size + to_pred.size))
        row["flags"] = flags
        out[k] = row
    return out


@dataclass
class Interval:
    value: float
    low: float
    high: float

    def as_dict(self) -> dict:
        return {"value": _clean(self.value), "ci_low": _clean(self.low), "ci_high": _clean(self.high)}


def _clean(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else round(float(x), 6)


def bootstrap(values_fn, n: int, resamples: int = 1000, seed: int = 0, level: float = 0.95) -> Interval:
    """Percentile bootstrap of a statistic over cases.

    Parameters
    ----------
    values_fn
        the statistic of the cases at the given indices, ``values_fn(indices) -> float``.
    n : int
        the number of cases.
    resamples : int
        seeded resamples (those giving NaN are skipped).
    seed : int
        fixes the resamples.
    level : float
        the interval's coverage.

    Returns
    -------
    Interval
        The full-sample value and its ``level`` interval.
    """
    value = values_fn(np.arange(n))
    rng = np.random.default_rng(seed)
    draws = np.array([values_fn(rng.integers(0, n, n)) for _ in range(resamples)], dtype=np.float64)
    draws = draws[np.isfinite(draws)]
    if draws.size == 0:
        return Interval(value, math.nan, math.nan)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(draws, [tail, 100 - tail])
    return Interval(value, float(low), float(high))


def nan_mean(values: np.ndarray) -> float:
    """The mean of the finite values, NaN when there is none.

    Parameters
    ----------
    values : np.ndarray
        the values (any shape).

    Returns
    -------
    float
        the mean.
    """
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else math.nan


def ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """``numerator / denominator`` element by element, NaN where the denominator is 0.

    Parameters
    ----------
    numerator : np.ndarray
        any shape.
    denominator : np.ndarray
        the same shape.

    Returns
    -------
    np.ndarray
        the ratios.
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1), np.nan)


def weighted_rates(predicted: np.ndarray, truth: np.ndarray, weights: np.ndarray) -> dict[str, np.ndarray]:
    """Accuracy, precision, recall (sensitivity), specificity and F1 of binary predictions, with the cases counted
    by each row of ``weights``: the one definition behind :func:`binary_rates` (one row of ones) and the study's
    bootstrap (a row per replicate, :func:`volgan.study.bootstrap.weighted_metrics`).

    Parameters
    ----------
    predicted : np.ndarray
        (n,) bool predictions.
    truth : np.ndarray
        (n,) bool truth.
    weights : np.ndarray
        (R, n) case counts.

    Returns
    -------
    dict[str, np.ndarray]
        each rate, (R,), NaN where its denominator is 0.
    """
    w = weights.astype(np.float64)
    tp, fp = w @ (predicted & truth), w @ (predicted & ~truth)
    fn, tn = w @ (~predicted & truth), w @ (~predicted & ~truth)
    return {"accuracy": ratio(tp + tn, w.sum(1)), "precision": ratio(tp, tp + fp), "recall": ratio(tp, tp + fn),
            "specificity": ratio(tn, tn + fp), "f1": ratio(2 * tp, 2 * tp + fp + fn)}


def weighted_auc(scores: np.ndarray, truth: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC AUC (the Mann-Whitney statistic: the share of positive-negative pairs the score orders right, ties
    counting half) with the cases counted by each row of ``weights``; :func:`roc_auc` is its one-row case.

    Parameters
    ----------
    scores : np.ndarray
        (n,) scores, higher meaning positive.
    truth : np.ndarray
        (n,) bool truth.
    weights : np.ndarray
        (R, n) case counts.

    Returns
    -------
    np.ndarray
        (R,) AUCs, NaN for a row without both classes.
    """
    w = weights.astype(np.float64)
    pos, neg = np.flatnonzero(truth), np.flatnonzero(~truth)
    beats = (scores[pos, None] > scores[None, neg]) + 0.5 * (scores[pos, None] == scores[None, neg])
    return ratio(np.einsum("rp,pq,rq->r", w[:, pos], beats, w[:, neg]), w[:, pos].sum(1) * w[:, neg].sum(1))


def roc_auc(scores: np.ndarray, truth: np.ndarray) -> float:
    """ROC AUC of binary ``truth`` from ``scores`` (:func:`weighted_auc` with every case counted once).

    Parameters
    ----------
    scores : np.ndarray
        (N,) scores, higher meaning class 1.
    truth : np.ndarray
        (N,) classes, 0 or 1.

    Returns
    -------
    float
        The AUC in [0, 1] (ties count half); NaN when only one class is present.
    """
    return float(weighted_auc(np.asarray(scores, dtype=np.float64), np.asarray(truth) == 1,
                              np.ones((1, len(truth))))[0])


def macro_auc(probabilities: np.ndarray, truth: np.ndarray) -> float:
    """One-vs-rest macro ROC AUC over the classes present in ``truth``.

    Parameters
    ----------
    probabilities : np.ndarray
        N × 4 probabilities over ``tumor_type``.
    truth : np.ndarray
        (N,) true tumor types.

    Returns
    -------
    float
        The mean of the per-class AUCs that are defined; NaN when none is.
    """
    aucs = [roc_auc(probabilities[:, k], (truth == k).astype(np.int64)) for k in range(NUM_TUMOR_TYPES)]
    return nan_mean(np.array(aucs))


def binary_rates(predicted: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Accuracy, precision, recall (sensitivity), specificity and F1 of 0/1 predictions (:func:`weighted_rates`
    with every case counted once).

    Parameters
    ----------
    predicted : np.ndarray
        (N,) predicted classes, 0 or 1.
    truth : np.ndarray
        (N,) true classes, 0 or 1.

    Returns
    -------
    dict[str, float]
        Each rate in [0, 1] by name; NaN where its denominator is 0.
    """
    rates = weighted_rates(np.asarray(predicted) == 1, np.asarray(truth) == 1, np.ones((1, len(truth))))
    return {name: float(values[0]) for name, values in rates.items()}


CLASSIFICATION_METRICS = ("accuracy", "precision", "recall", "specificity", "f1", "auc_tumor",
                          "type_accuracy", "macro_auc_tumor_type")


def classification_metrics(probabilities: np.ndarray, truth: np.ndarray, resamples: int = 1000,
                           seed: int = 0) -> dict[str, Interval]:
    """Every classification figure with its bootstrap CI.

    Parameters
    ----------
    probabilities : np.ndarray
        N × 4 probabilities over ``tumor_type``.
    truth : np.ndarray
        the N true tumor types.
    resamples : int
        bootstrap resamples.
    seed : int
        fixes the resamples.

    Returns
    -------
    dict[str, Interval]
        Each figure's :class:`Interval` by name: the tumor-vs-none ones (``tumor`` is ``tumor_type != 0``, its
        probability ``1 - p(none)``) and the four-class ones.
    """
    tumor_score = 1.0 - probabilities[:, 0]
    tumor_truth = (truth != 0).astype(np.int64)
    tumor_pred = (tumor_score >= 0.5).astype(np.int64)
    type_pred = probabilities.argmax(axis=1)

    def one(name):
        def fn(idx):
            if name in ("accuracy", "precision", "recall", "specificity", "f1"):
                return binary_rates(tumor_pred[idx], tumor_truth[idx])[name]
            if name == "auc_tumor":
                return roc_auc(tumor_score[idx], tumor_truth[idx])
            if name == "type_accuracy":
                return float((type_pred[idx] == truth[idx]).mean())
            return macro_auc(probabilities[idx], truth[idx])
        return fn

    return {name: bootstrap(one(name), len(truth), resamples, seed) for name in CLASSIFICATION_METRICS}


def confusion_matrix(truth: np.ndarray, predicted: np.ndarray, classes: int = NUM_TUMOR_TYPES) -> np.ndarray:
    """Counts of predicted against true classes.

    Parameters
    ----------
    truth : np.ndarray
        (N,) true classes in ``0 .. classes - 1``.
    predicted : np.ndarray
        (N,) predicted classes.
    classes : int
        The number of classes.

    Returns
    -------
    np.ndarray
        classes × classes counts, rows = truth, columns = prediction.
    """
    return np.bincount(truth * classes + predicted, minlength=classes * classes).reshape(classes, classes)
