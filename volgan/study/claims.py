"""The two papers' claims, tested on the study's results (each a contrast of result rows with its paired
difference and 95% CI), the classifiers that called one class for every volume, the arms' order on the phantoms,
and the findings: the sentences of numbers the report lists under its opening.
"""

from __future__ import annotations

import math

import numpy as np

from volgan.evaluation.rendering import fmt
from volgan.study.answer import KEY_METRICS, METRICS, diff_cell, number, pick, unlearned
from volgan.study.bootstrap import Replicates
from volgan.study.records import CaseEvaluation, PlannedArm
from volgan.transforms import SEVERITIES

GRADCAM = "gradcam_tumor_share"

SEED_1 = ("Ainapure et al., Performance Comparison of GAN-Augmented and Traditional CNN Models for Spinal Cord "
          "Tumor Detection")
SEED_2 = ("Proportional Sensitivity in GAN-Augmented Brain Tumor Classification Using Convolutional Neural "
          "Network, arXiv 2506.17165")


def claim_specs(pools: list[int]) -> list[dict]:
    """Each claim as a contrast: ``terms`` are (coefficient, group key, severity index, metric), ``expect`` the
    sign the claim predicts. "Scarce data" is the smallest real pool of the augmentation comparison.

    Parameters
    ----------
    pools : list[int]
        the augmentation comparison's real-pool sizes.

    Returns
    -------
    list[dict]
        one dict per claim: ``claim``, ``source``, ``metric``, ``comparison``, ``terms`` and ``expect``.
    """
    clean, severe, scarce = 0, len(SEVERITIES) - 1, min(pools)

    def sweep(arm):
        return ("sweep", 0, arm)

    def aug(arm):
        return ("augmentation", scarce, arm)

    specs = []
    for metric in ("accuracy", "auc"):
        specs.append({"claim": "performance peaks at a small synthetic share: 90:10 beats 100:0", "source": SEED_2,
                      "metric": metric, "comparison": "90:10 − 100:0", "expect": 1,
                      "terms": [(1, sweep("90:10"), clean, metric), (-1, sweep("100:0"), clean, metric)]})
    for metric in ("accuracy", "auc"):
        specs.append({"claim": "performance falls as the synthetic share grows towards 100%", "source": SEED_2,
                      "metric": metric, "comparison": "0:100 − 90:10", "expect": -1,
                      "terms": [(1, sweep("0:100"), clean, metric), (-1, sweep("90:10"), clean, metric)]})
    specs.append({"claim": "at 100% synthetic, recall falls more than precision", "source": SEED_2,
                  "metric": "recall − precision", "comparison": "(recall change) − (precision change), 0:100 − 100:0",
                  "expect": -1,
                  "terms": [(1, sweep("0:100"), clean, "recall"), (-1, sweep("100:0"), clean, "recall"),
                            (-1, sweep("0:100"), clean, "precision"), (1, sweep("100:0"), clean, "precision")]})
    for metric in ("accuracy", "recall"):
        specs.append({"claim": f"GAN-augmented training beats traditional training on scarce data (real pool "
                               f"{scarce})", "source": SEED_1, "metric": metric, "comparison": "gan − none",
                      "expect": 1, "terms": [(1, aug("gan"), clean, metric), (-1, aug("none"), clean, metric)]})
    for metric in ("accuracy", "auc"):
        specs.append({"claim": f"the GAN arm is more robust to MRI artifacts (real pool {scarce})", "source": SEED_1,
                      "metric": metric, "comparison": "(gan severe − gan clean) − (none severe − none clean)",
                      "expect": 1, "terms": [(1, aug("gan"), severe, metric), (-1, aug("gan"), clean, metric),
                                             (-1, aug("none"), severe, metric), (1, aug("none"), clean, metric)]})
    specs.append({"claim": f"Grad-CAM attention is sharper on tumor regions with GAN augmentation (real pool "
                           f"{scarce})", "source": SEED_1, "metric": "Grad-CAM tumor share",
                  "comparison": "gan − none", "expect": 1,
                  "terms": [(1, aug("gan"), clean, GRADCAM), (-1, aug("none"), clean, GRADCAM)]})
    return specs


def claims(matrices: dict, replicates: Replicates, pools: list[int]) -> list[dict]:
    """The papers' claims as rows {claim, source, metric, comparison, difference {mean, ci_low, ci_high},
    verdict}: "supported" when the 95% CI of the contrast lies wholly on the side the claim predicts,
    "contradicted" when wholly on the other, "within noise" when it includes 0 (or the contrast is undefined:
    then ``note`` says why).

    Parameters
    ----------
    matrices : dict
        :func:`aggregate`'s output.
    replicates : Replicates
        the bootstrap case weights.
    pools : list[int]
        the augmentation comparison's real-pool sizes.

    Returns
    -------
    list[dict]
        the claim rows.
    """
    rows = []
    for spec in claim_specs(pools):
        missing = [f"{k[2]} {m}" for _, k, sev, m in spec["terms"] if m not in matrices.get((k, sev), {})]
        row = {k: spec[k] for k in ("claim", "source", "metric", "comparison")}
        if missing:
            row.update(difference={"mean": None, "ci_low": None, "ci_high": None}, verdict="within noise",
                       note=f"not measured: {', '.join(sorted(set(missing)))}")
            rows.append(row)
            continue
        contrast = sum(c * matrices[k, sev][m] for c, k, sev, m in spec["terms"])
        d = replicates.summarize(contrast)
        low, high, e = d["ci_low"], d["ci_high"], spec["expect"]
        if not (math.isfinite(low) and math.isfinite(high)):
            verdict, note = "within noise", "undefined on these models (a metric without a value, e.g. precision "\
                                            "when no volume is called a tumor)"
        else:
            verdict = "supported" if e * low > 0 and e * high > 0 else \
                "contradicted" if e * low < 0 and e * high < 0 else "within noise"
            note = None
        row.update(difference={"mean": d["mean"], "ci_low": low, "ci_high": high}, verdict=verdict)
        if note:
            row["note"] = note
        rows.append(row)
    return rows


def result_cell(row: dict) -> str:
    """A result row as a table cell: mean ± SD over seeds [95% CI].

    Parameters
    ----------
    row : dict
        a result row with ``mean``, ``sd``, ``ci_low`` and ``ci_high``.

    Returns
    -------
    str
        the cell's text.
    """
    return f"{fmt(row['mean'])} ± {fmt(row['sd'])} [{fmt(row['ci_low'])}, {fmt(row['ci_high'])}]"


def degenerate_classifiers(arms: list[PlannedArm], evals: dict[str, list[CaseEvaluation]]) -> dict:
    """Trained models whose tumor call is the same for every clean test volume (all tumor or none).

    Parameters
    ----------
    arms : list[PlannedArm]
        the study's arms.
    evals : dict[str, list[CaseEvaluation]]
        {evaluation key: rows}.

    Returns
    -------
    dict
        ``n``: the evaluated models whose tumor call is the same for every clean test volume, ``of``: the models
        evaluated.
    """
    keys = sorted({a.eval for a in arms})
    same = [k for k in keys if len({r.calls_tumor for r in evals[k] if r.severity == 0}) == 1]
    return {"n": len(same), "of": len(keys)}


def phantom_order(rows: list[dict]) -> list[str]:
    """The arms' labels (as the real-MRI section names them), best first, by anatomy Dice on the clean phantom test set.

    Parameters
    ----------
    rows : list[dict]
        the result rows (:func:`build_results`).

    Returns
    -------
    list[str]
        the arms' labels.
    """
    scored = []
    for row in rows:
        if row["metric"] != "anatomy_dice" or row["severity"] != "clean":
            continue
        if row["section"] == "sweep":
            share = round(100 * row["synthetic_share"])
            label = f"sweep {100 - share}:{share}"
        else:
            label = f"{row['arm']} (pool {row['real_pool']})"
        scored.append((-np.nan_to_num(number(row["mean"]), nan=-1.0), label))
    return [label for _, label in sorted(scored)]


def findings(rows: list[dict], pools: list[int], degenerate: dict) -> list[str]:
    """Plain sentences: what differs beyond noise, what does not, and what the models failed to learn.

    Parameters
    ----------
    rows : list[dict]
        the result rows (:func:`build_results`).
    pools : list[int]
        the augmentation comparison's real-pool sizes.
    degenerate : dict
        :func:`degenerate_classifiers`'s output.

    Returns
    -------
    list[str]
        the sentences.
    """
    lines = []
    if degenerate["n"]:
        lines.append(f"{degenerate['n']} of {degenerate['of']} trained models give every clean test volume the same "
                     f"tumor call: their accuracy, precision, recall and F1 reflect the test set's class balance, "
                     f"not detection; AUC (from the probabilities) still ranks.")
    for metric, best, floor in unlearned(rows):
        lines.append(f"{METRICS[metric]} stays below {floor} in every configuration (best {fmt(best)}): at this "
                     f"training budget the models did not learn it, so it cannot separate the arms.")
    for metric in KEY_METRICS:
        sweep = [r for r in pick(rows, "sweep", metric=metric) if "difference" in r]
        beyond = [f"{r['arm']} ({diff_cell(r['difference'])})" for r in sweep if not r["difference"]["within_noise"]]
        best = max(pick(rows, "sweep", metric=metric), key=lambda r: np.nan_to_num(number(r["mean"]), nan=-1.0))
        lines.append(f"Sweep, {METRICS[metric]}: highest mean at {best['arm']} ({fmt(best['mean'])}); against 100:0, "
                     + (f"beyond noise: {'; '.join(beyond)}." if beyond else
                        "every mix is within noise (each 95% CI of the paired difference includes 0)."))
    for pool in pools:
        for arm in ("classical", "gan", "both"):
            parts = []
            for metric in KEY_METRICS:
                row = next(r for r in pick(rows, "augmentation", metric=metric, pool=pool) if r["arm"] == arm)
                parts.append(f"{METRICS[metric]} {diff_cell(row.get('difference'))}")
            lines.append(f"Real pool {pool}, {arm} vs no augmentation: " + "; ".join(parts) + ".")
    spans = []
    for metric in ("auc", "anatomy_dice"):
        widths = [number(r["difference"]["ci_high"]) - number(r["difference"]["ci_low"]) for r in rows
                  if "difference" in r and r["severity"] == "clean" and r["metric"] == metric]
        widths = [w for w in widths if math.isfinite(w)]
        if widths:
            spans.append(f"{np.median(widths):.3f} in {METRICS[metric]}")
    if spans:
        lines.append(f"Resolution: the median 95% CI of a paired difference spans {' and '.join(spans)}; smaller "
                     f"differences cannot be told from noise with these seeds and this test set.")
    return lines
