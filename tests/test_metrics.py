"""Metric agreement with MONAI and nnU-Net's counting, docs/design.md's empty-case rules, classification figures."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.metrics import DiceMetric, HausdorffDistanceMetric, MeanIoU, SurfaceDiceMetric, compute_roc_auc
from monai.networks.utils import one_hot
from scipy import ndimage

from volgan.data.phantom import PhantomConfig, generate_case
from volgan.evaluation.metrics import binary_rates, bootstrap, classification_metrics, segmentation_metrics

SPACING = (1.2, 0.9, 2.0)


def perturbed_pairs():
    """(prediction, reference) label maps that differ by shifts, erosions and spurious blobs."""
    config = PhantomConfig(size=(40, 44, 36), spacing=SPACING)
    rng = np.random.default_rng(0)
    for index in range(4):
        ref = generate_case(9, index, config).label.array
        pred = np.roll(ref, int(rng.integers(-2, 3)), axis=int(rng.integers(3)))
        k = int(rng.integers(1, 6))
        pred[ndimage.binary_erosion(pred == k, iterations=1) ^ (pred == k)] = 0
        centre = rng.integers(5, 30, 3)
        pred[tuple(slice(c, c + 3) for c in centre)] = 5
        yield pred.astype(np.uint8), ref


def monai_reference(pred, ref, tolerance):
    p = one_hot(torch.from_numpy(pred[None, None].astype(np.int64)), 6)
    r = one_hot(torch.from_numpy(ref[None, None].astype(np.int64)), 6)
    return {
        "Dice": DiceMetric(include_background=False, reduction="none")(p, r)[0],
        "IoU": MeanIoU(include_background=False, reduction="none")(p, r)[0],
        "HD95": HausdorffDistanceMetric(include_background=False, percentile=95, reduction="none")(
            p, r, spacing=SPACING)[0],
        "NSD": SurfaceDiceMetric([tolerance] * 5, include_background=False, reduction="none")(p, r, spacing=SPACING)[0],
    }


@pytest.mark.parametrize("pair", list(perturbed_pairs()), ids=lambda _: "case")
def test_agreement_with_monai_and_nnunet_counting(pair):
    pred, ref = pair
    ours = segmentation_metrics(pred, ref, SPACING, tolerance_mm=1.5)
    monai = monai_reference(pred, ref, 1.5)
    compared = 0
    for k in range(1, 6):
        if ours[k]["n_ref"] and ours[k]["n_pred"]:  # empty sides follow docs/design.md, not MONAI (tested below)
            compared += 1
            for key in ("Dice", "IoU", "HD95", "NSD"):
                assert ours[k][key] == pytest.approx(float(monai[key][k - 1]), abs=1e-6), (k, key)
        # nnU-Net's counting: boolean masks per label
        p, r = pred == k, ref == k
        assert ours[k]["TP"] == int((p & r).sum()) and ours[k]["FP"] == int((p & ~r).sum())
        assert ours[k]["FN"] == int((~p & r).sum()) and ours[k]["TN"] == int((~p & ~r).sum())
        assert ours[k]["n_pred"] == int(p.sum()) and ours[k]["n_ref"] == int(r.sum())
    assert compared >= 4


def test_empty_cases_follow_the_design():
    ref = np.zeros((10, 12, 14), np.uint8)
    ref[2:5, 2:5, 2:5] = 1
    pred = np.zeros_like(ref)
    pred[2:5, 2:6, 2:5] = 1
    pred[7, 7, 7] = 3  # label 3 only in the prediction
    out = segmentation_metrics(pred, ref, (1.0, 2.0, 3.0))
    assert math.isnan(out[2]["Dice"]) and math.isnan(out[2]["IoU"]) and out[2]["flags"] == ["empty_ref_and_pred"]
    diagonal = math.sqrt(10**2 + 24**2 + 42**2)
    assert out[3]["HD95"] == pytest.approx(diagonal) and out[3]["flags"] == ["empty_ref"] and out[3]["Dice"] == 0
    assert out[3]["NSD"] == 0
    assert out[1]["Dice"] == pytest.approx(2 * 27 / (27 + 36)) and out[1]["flags"] == []


def test_binary_rates_on_a_hand_count():
    predicted = np.array([1, 1, 1, 0, 0, 0, 1, 0])
    truth = np.array([1, 1, 0, 0, 0, 1, 1, 1])
    rates = binary_rates(predicted, truth)  # TP 3, FP 1, TN 2, FN 2
    assert rates == pytest.approx({"accuracy": 5 / 8, "precision": 3 / 4, "recall": 3 / 5, "specificity": 2 / 3,
                                   "f1": 6 / 9})


def test_classification_auc_matches_monai_and_bootstrap_is_seeded():
    rng = np.random.default_rng(1)
    truth = np.repeat(np.arange(4), 10)
    logits = rng.normal(size=(40, 4)) + 1.5 * np.eye(4)[truth]
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    figures = classification_metrics(probabilities, truth, resamples=200, seed=3)
    tumor = (truth != 0).astype(int)
    expected = float(compute_roc_auc(torch.tensor(1 - probabilities[:, 0]), torch.tensor(tumor)))
    assert figures["auc_tumor"].value == pytest.approx(expected)
    macro = float(compute_roc_auc(torch.tensor(probabilities), torch.tensor(np.eye(4)[truth]), average="macro"))
    assert figures["macro_auc_tumor_type"].value == pytest.approx(macro)
    again = classification_metrics(probabilities, truth, resamples=200, seed=3)
    assert figures["f1"] == again["f1"]
    assert figures["f1"].low <= figures["f1"].value <= figures["f1"].high


def test_bootstrap_interval_covers_a_known_mean():
    values = np.random.default_rng(5).normal(10.0, 1.0, 400)
    interval = bootstrap(lambda idx: values[idx].mean(), len(values), resamples=500, seed=0)
    assert interval.low < 10.0 < interval.high and interval.high - interval.low < 0.3
