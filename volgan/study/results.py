"""The study's figures from its evaluations: per arm and seed the metrics on the shared bootstrap replicates
(:func:`aggregate`), the result rows with their paired differences (:func:`build_results`) and the whole document,
``study.json`` (:func:`study_document`): results, claims, findings, the real-MRI section, the quality report and the
arithmetic the models trained in.
:mod:`volgan.study.report` renders it.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from volgan.data.files import strict_json
from volgan.evaluation.quality import QualityReport
from volgan.study import real_report
from volgan.study.answer import METRICS
from volgan.study.bootstrap import Replicates, case_arrays, weighted_mean, weighted_metrics
from volgan.study.claims import GRADCAM, claims, degenerate_classifiers, findings, phantom_order
from volgan.study.records import CaseEvaluation, PlannedArm
from volgan.transforms import SEVERITIES

DEFINITIONS = [
    "Classification (the task of arXiv 2506.17165): tumor = tumor_type != 0. Its probability comes from the "
    "segmentation: the largest predicted tumor component's summed probability m in mm3 gives "
    "p(tumor) = (1 - 2^(-m / 30 mm3)) x min(1, |c|), c the component's contrast against the tissue around it "
    "(its median minus that of the commonest other label in a 2-voxel shell, over that label's interquartile range "
    "in the scan; volgan.segcls.pipeline.tumor_call; the classifier head ranked tumors at chance where the "
    "segmentation found them); accuracy, precision, recall and F1 at threshold 0.5; AUC = ROC AUC of tumor (ties "
    "count one half). Tumor-type accuracy: argmax of the four tumor_type probabilities (p(tumor) shared over the "
    "types as the classifier head says).",
    "Segmentation: tumor Dice = 2TP/(2TP+FP+FN) and IoU = TP/(TP+FP+FN) of label 5 per test volume, from voxel "
    "counts on the input grid; a volume with no tumor in reference and prediction is left out of the mean (NaN). "
    "Anatomy Dice: the mean of the Dice of labels 1-4 per volume.",
    "Mean ± sd over training seeds; 95% CI: two-level percentile bootstrap over seeds and test cases. Paired "
    "difference: arm minus reference with the same seed, on the same bootstrap replicates; 'within noise' when "
    "its 95% CI includes 0.",
    "Every segmenter-classifier gets the same number of training-volume presentations, so arms with more "
    "volumes (GAN data added) do not get more optimisation steps. Each trains on exactly its arm's real and "
    "synthetic volumes (trained_on.json in its stage folder; nothing is held out, unlike the 20% validation split "
    "of arXiv 2506.17165, because the model evaluated is the one after the last epoch, models/model_final.pt as the "
    "bundle writes it), and every batch keeps the arm's real:synthetic ratio to within one volume.",
    "Claims: arXiv 2506.17165 is 'Proportional Sensitivity in GAN-Augmented Brain Tumor Classification Using "
    "Convolutional Neural Network'; Ainapure et al. is 'Performance Comparison of GAN-Augmented and Traditional CNN "
    "Models for Spinal Cord Tumor Detection'. Each claim is a contrast of arms on the same bootstrap replicates; "
    "'supported' when its 95% CI lies wholly on the side the claim predicts, 'contradicted' when wholly on the "
    "other, 'within noise' otherwise. Grad-CAM tumor share: the share of the Grad-CAM map's mass (tumor class, "
    "volgan.segcls.gradcam) inside the reference tumor dilated by 2 voxels, per clean tumor-bearing test volume.",
    "Evaluation runs the network in bfloat16 autocast where spine_segcls trains in it by default (a CPU with native "
    "bfloat16), for every arm alike; the sweep's arms are evaluated on the clean test set, the augmentation "
    "comparison's also at three artifact severities.",
    "Artifacts (robustness): bias field, rigid motion, ghosting, blur and Gaussian noise at fixed strengths "
    "for severity 1-3 (volgan.transforms.artifacts), applied to the test image before inference.",
]


def _group_key(arm: PlannedArm) -> tuple:
    return (arm.section, arm.real_pool, arm.arm)


def aggregate(arms: list[PlannedArm], evals: dict[str, list[CaseEvaluation]], replicates: Replicates,
              test_order: list[str]) -> dict:
    """Per group of arms (same configuration, all seeds) and severity: {metric: K × (1 + R) values}.

    Parameters
    ----------
    arms : list[PlannedArm]
        the study's arms (with their evaluation keys).
    evals : dict[str, list[CaseEvaluation]]
        {evaluation key: rows}.
    replicates : Replicates
        the bootstrap case weights (shared by every arm, so differences are paired).
    test_order : list[str]
        the test cases' names.

    Returns
    -------
    dict
        {(group key, severity): {metric: (K seeds, 1 + R) values}}.
    """
    groups: dict[tuple, dict[int, str]] = {}
    for arm in arms:
        groups.setdefault(_group_key(arm), {})[arm.seed] = arm.eval
    matrices = {}
    for key, by_seed in groups.items():
        seeds = sorted(by_seed)
        for severity in range(len(SEVERITIES)):
            if not all(any(r.severity == severity for r in evals[by_seed[s]]) for s in seeds):
                continue  # the sweep's arms are evaluated on the clean test set only
            per_seed = [weighted_metrics(*case_arrays(evals[by_seed[s]], severity, test_order), replicates.cases)
                        for s in seeds]
            matrices[key, severity] = {m: np.stack([p[m] for p in per_seed]) for m in METRICS}
            shares = [gradcam_shares(evals[by_seed[s]], severity, test_order) for s in seeds]
            if all(v is not None for v in shares):
                matrices[key, severity][GRADCAM] = np.stack([weighted_mean(v, replicates.cases) for v in shares])
    return matrices


def gradcam_shares(rows: list[CaseEvaluation], severity: int, order: list[str]) -> np.ndarray | None:
    """Each case's Grad-CAM tumor share at ``severity`` in ``order`` (NaN where it has no tumor), or None when the
    evaluation did not measure it.

    Parameters
    ----------
    rows : list[CaseEvaluation]
        an evaluation's rows.
    severity : int
        the artifact strength.
    order : list[str]
        the test cases' names.

    Returns
    -------
    np.ndarray | None
        (n,) shares, or None.
    """
    by_case = {r.case: r for r in rows if r.severity == severity}
    if any(by_case[c].gradcam_tumor_share is None for c in order):
        return None
    return np.array([by_case[c].gradcam_tumor_share for c in order], dtype=np.float64)


def _reference(key: tuple) -> tuple:
    section, pool, _ = key
    return ("sweep", 0, "100:0") if section == "sweep" else ("augmentation", pool, "none")


def build_results(arms: list[PlannedArm], matrices: dict, replicates: Replicates) -> list[dict]:
    """One row per (group, severity, metric) with the summary and, when it has one, the paired difference.

    Parameters
    ----------
    arms : list[PlannedArm]
        the study's arms.
    matrices : dict
        :func:`aggregate`'s output.
    replicates : Replicates
        the bootstrap case weights.

    Returns
    -------
    list[dict]
        the result rows (section, arm, severity, metric, mean, sd, CI, difference).
    """
    info = {_group_key(a): a for a in arms}
    rows = []
    for (key, severity), values in matrices.items():
        a, ref = info[key], _reference(key)
        for metric in METRICS:
            row = {"section": key[0], "arm": key[2], "real_pool": key[1] or None,
                   "synthetic_share": a.share if key[0] == "sweep" else None,
                   "n_real": len(a.real), "n_synthetic": len(a.synthetic), "augment": a.augment,
                   "severity": SEVERITIES[severity], "metric": metric, **replicates.summarize(values[metric])}
            if key != ref and (ref, severity) in matrices:
                diff = replicates.summarize(values[metric], matrices[ref, severity][metric])
                row["difference"] = {"vs": ref[2], **{k: diff[k] for k in ("mean", "ci_low", "ci_high",
                                                                                 "within_noise")}}
            rows.append(row)
    return rows


def training_arithmetic(arms: list[PlannedArm], stages: Path) -> dict[str, int]:
    """How many of the study's models trained in each arithmetic, from their model cards
    (``training_arithmetic``; ``"unknown"`` for a card that names none, or a run without its card). A CPU with
    native bfloat16 trains in bf16 by default and one without in fp32, and the same seed gives different models in
    each, so two machines' studies compare only where these agree.

    Parameters
    ----------
    arms : list[PlannedArm]
        the study's arms with their run stage keys.
    stages : Path
        the study's ``stages`` folder.

    Returns
    -------
    dict[str, int]
        {``"bf16"`` | ``"fp32"`` | ``"unknown"``: number of models}.
    """
    from volgan.segcls.predict import read_model_card

    counts: dict[str, int] = {}
    for run in sorted({a.run for a in arms}):
        card = stages / run / "models" / "model.json"
        arithmetic = read_model_card(card).get("training_arithmetic", "unknown") if card.is_file() else "unknown"
        counts[arithmetic] = counts.get(arithmetic, 0) + 1
    return dict(sorted(counts.items()))


def study_document(out: Path, profile, arms: list[PlannedArm], real: Path | None) -> dict:
    """The study document (``study.json``) from every evaluation, check on real scans and the quality report under
    ``out/stages``: the results with their CIs, the claims, the findings, the real-MRI section.

    Parameters
    ----------
    out : Path
        the study's output folder.
    profile : StudyProfile
        the study profile.
    arms : list[PlannedArm]
        the study's arms with their stage keys.
    real : Path | None
        the user's datalist, or None for phantoms.

    Returns
    -------
    dict
        the document, JSON-ready (non-finite numbers as None).
    """
    stages = out / "stages"
    evals = {a.eval: [CaseEvaluation.from_dict(row) for row in
                      json.loads((stages / a.eval / "eval.json").read_text(encoding="utf-8"))] for a in arms}
    test_order = sorted({r.case for rows in evals.values() for r in rows})
    replicates = Replicates(len(test_order), profile.seeds, profile.bootstrap, profile.seed)
    matrices = aggregate(arms, evals, replicates, test_order)
    rows = build_results(arms, matrices, replicates)
    pools = sorted({a.real_pool for a in arms if a.section == "augmentation"})
    degenerate = degenerate_classifiers(arms, evals)
    quality_file = stages / "quality" / "quality" / "quality.json"
    quality = QualityReport.from_dict(json.loads(quality_file.read_text(encoding="utf-8"))) \
        if quality_file.is_file() else None
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))["stages"]
    real_mri = real_report.gather(arms, stages)
    study_findings = findings(rows, pools, degenerate)
    if real_mri is not None:
        study_findings += real_report.finding(real_mri, phantom_order(rows))
    document = {
        "profile": asdict(profile), "data": str(real) if real else "phantom",
        "n": {"test": len(test_order), "seeds": profile.seeds, "trained_models": len({a.eval for a in arms})},
        "training_arithmetic": training_arithmetic(arms, stages),
        "claims": claims(matrices, replicates, pools),
        "gradcam_tumor_share": {f"pool {k[1]}, {k[2]}": replicates.summarize(v[GRADCAM])
                                for (k, sev), v in matrices.items() if sev == 0 and GRADCAM in v},
        "degenerate_classifiers": degenerate,
        "arms": [{"section": a.section, "arm": a.arm, "seed": a.seed, "real_pool": a.real_pool,
                  "synthetic_share": a.share, "n_real": len(a.real), "n_synthetic": len(a.synthetic),
                  "run": a.run} for a in arms],
        "findings": study_findings, "results": rows,
        "quality": quality.to_dict() if quality is not None else None, "real_mri": real_mri,
        "stage_seconds": {k: v["seconds"] for k, v in manifest.items()}, "definitions": DEFINITIONS,
    }
    return strict_json(document)
