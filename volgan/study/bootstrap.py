"""The study's statistics engine: metrics on bootstrap-weighted test cases and the shared replicates.

Every figure is computed per training seed on the fixed real test set, then averaged over seeds (mean ± sd over
seeds). Its 95% CI is a two-level percentile bootstrap: each replicate resamples the seeds and the test cases (with
replacement) and recomputes the metric from the resampled cases, so the interval holds both training variation and
test-set sampling. Paired differences use the same replicates for both arms, seed k against seed k, and count as
within noise when their interval includes 0. Shapes: W (R, n) case weights of R replicates → (R,) values.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from volgan.evaluation.metrics import ratio, weighted_auc, weighted_rates
from volgan.labels import ANATOMY_LABELS, NUM_TUMOR_TYPES
from volgan.study.records import CaseEvaluation


def weighted_mean(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Mean of ``values`` (n, NaN = left out) under each row of ``weights`` (R × n case counts) → (R,).

    Parameters
    ----------
    values : np.ndarray
        (n,) per-case values, NaN where left out.
    weights : np.ndarray
        (R, n) case counts.

    Returns
    -------
    np.ndarray
        (R,) means (NaN where no case counts).
    """
    ok = np.isfinite(values)
    return ratio(weights[:, ok] @ values[ok], weights[:, ok].sum(1))


def weighted_metrics(probabilities: np.ndarray, truth: np.ndarray, tumor_dice: np.ndarray, tumor_iou: np.ndarray,
                     anatomy_dice: np.ndarray, weights: np.ndarray) -> dict[str, np.ndarray]:
    """Every study metric for each row of ``weights`` (R × n case counts). ``probabilities``: n × 4;
    ``truth``: n tumor types; the Dice/IoU arrays hold NaN where a case is left out.

    Parameters
    ----------
    probabilities : np.ndarray
        (n, 4) tumor_type probabilities.
    truth : np.ndarray
        (n,) tumor types 0–3.
    tumor_dice : np.ndarray
        (n,) tumor Dice, NaN where left out.
    tumor_iou : np.ndarray
        (n,) tumor IoU, NaN where left out.
    anatomy_dice : np.ndarray
        (n,) mean anatomy Dice (labels 1–4), NaN where left out.
    weights : np.ndarray
        (R, n) case counts (a row per bootstrap replicate).

    Returns
    -------
    dict[str, np.ndarray]
        {metric: (R,) values}.
    """
    score = 1.0 - probabilities[:, 0]
    y = truth != 0
    w = weights.astype(np.float64)
    rates = weighted_rates(score >= 0.5, y, w)

    def mean_of(values):
        return weighted_mean(values, w)

    return {**{name: rates[name] for name in ("accuracy", "precision", "recall", "f1")},
            "auc": weighted_auc(score, y, w),
            "type_accuracy": ratio(w @ (probabilities.argmax(1) == truth), w.sum(1)),
            "tumor_dice": mean_of(tumor_dice), "tumor_iou": mean_of(tumor_iou), "anatomy_dice": mean_of(anatomy_dice)}


def case_arrays(rows: list[CaseEvaluation], severity: int, order: list[str]) -> tuple[np.ndarray, ...]:
    """(probabilities, truth, tumor Dice, tumor IoU, anatomy Dice) of one evaluation at ``severity``, cases in
    ``order``.

    Parameters
    ----------
    rows : list[CaseEvaluation]
        an evaluation's rows (:func:`volgan.study.build.evaluate_model`).
    severity : int
        the artifact strength.
    order : list[str]
        the test cases' names.

    Returns
    -------
    tuple[np.ndarray, ...]
        probabilities (n, 4), truth (n,), tumor Dice, tumor IoU and anatomy Dice (n,) each.
    """
    by_case = {r.case: r for r in rows if r.severity == severity}
    picked = [by_case[c] for c in order]

    def value(x):
        return math.nan if x is None else float(x)

    probabilities = np.array([r.probabilities for r in picked], dtype=np.float64).reshape(-1, NUM_TUMOR_TYPES)
    truth = np.array([r.tumor_type for r in picked], dtype=np.int64)
    dice = np.array([value(r.tumor_dice) for r in picked])
    iou = np.array([value(r.tumor_iou) for r in picked])
    with warnings.catch_warnings():  # a volume whose anatomy labels are all empty-in-both gives NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        anatomy = np.array([np.nanmean([value(r.dice[k]) for k in ANATOMY_LABELS]) for r in picked])
    return probabilities, truth, dice, iou, anatomy


class Replicates:
    """Shared bootstrap replicates: case counts W (R × n) and seed counts S (R × K); row 0 of the metric
    matrices is the full sample."""

    def __init__(self, n_cases: int, n_seeds: int, resamples: int, seed: int):
        rng = np.random.default_rng([seed, 0x57D])
        self.cases = np.vstack([np.ones(n_cases), rng.multinomial(n_cases, np.full(n_cases, 1 / n_cases), resamples)])
        self.seeds = rng.multinomial(n_seeds, np.full(n_seeds, 1 / n_seeds), resamples)

    def summarize(self, values: np.ndarray, paired: np.ndarray | None = None) -> dict:
        """``values``: K seeds × (1 + R) → mean, sd, per-seed values and the 95% CI (of values − paired)."""
        if paired is not None:
            values = values - paired
        per_seed = values[:, 0]
        finite = per_seed[np.isfinite(per_seed)]
        picked = np.where(self.seeds > 0, values[:, 1:].T, 0.0)  # a seed drawn 0 times must not spread its NaN
        draws = (self.seeds * picked).sum(1) / self.seeds.sum(1)
        draws = draws[np.isfinite(draws)]
        low, high = (np.percentile(draws, [2.5, 97.5]) if draws.size >= 20 else (math.nan, math.nan))
        out = {"mean": float(finite.mean()) if finite.size else math.nan,
               "sd": float(finite.std(ddof=1)) if finite.size > 1 else math.nan,
               "ci_low": float(low), "ci_high": float(high), "per_seed": [float(v) for v in per_seed]}
        if paired is not None:
            out["within_noise"] = not (low > 0 or high < 0)
        return out
