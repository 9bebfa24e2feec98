"""The study end to end at the tiny profile: every report field, a kill and resume (on Ray: test_executors.py), a
changed setting that recomputes only what depends on it, the user's own datalist, bad input; and its
statistics."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import manifest, run

from volgan.data.datalist import read_datalist
from volgan.data.io import read_volume
from volgan.evaluation.metrics import binary_rates, roc_auc
from volgan.segcls.pipeline import tumor_probability_from_segmentation
from volgan.study.bootstrap import Replicates, weighted_metrics
from volgan.study.data import adapt_profile, pool_subset
from volgan.study.profiles import ARMS, PROFILES, SHARES
from volgan.study.report import CSV_FIELDS, METRICS
from volgan.training import bf16_autocast
from volgan.transforms import SEVERITIES


def test_report_has_every_field(study):
    doc = json.loads((study / "study.json").read_text(encoding="utf-8"))
    profile = PROFILES["tiny"]
    rows = doc["results"]
    # the sweep is evaluated on the clean test set only; the comparison's arms at every artifact severity
    assert {r["severity"] for r in rows if r["section"] == "sweep"} == {"clean"}
    assert len(rows) == (len(SHARES) + len(ARMS) * len(profile.pool_sizes) * len(SEVERITIES)) * len(METRICS)
    for row in rows:
        assert len(row["per_seed"]) == profile.seeds
        assert row["ci_low"] is None or row["ci_low"] <= row["ci_high"] + 1e-12
        reference = row["arm"] in ("100:0", "none")
        assert ("difference" in row) != reference
    shares = {r["synthetic_share"] for r in rows if r["section"] == "sweep"}
    assert shares == set(SHARES)
    sweep = [r for r in rows if r["section"] == "sweep" and r["metric"] == "accuracy" and r["severity"] == "clean"]
    assert {(r["n_real"], r["n_synthetic"]) for r in sweep} == {(profile.sweep_size - k, k)
                                                              for k in range(profile.sweep_size + 1)
                                                              if k in {round(profile.sweep_size * s) for s in SHARES}}
    aug = [r for r in rows if r["section"] == "augmentation" and r["metric"] == "f1" and r["severity"] == "severe"]
    assert {(r["real_pool"], r["arm"]) for r in aug} == {(p, a) for p in profile.pool_sizes for a in ARMS}
    gan = {r["real_pool"]: r for r in aug if r["arm"] == "gan"}
    assert all(r["n_synthetic"] == r["n_real"] == pool for pool, r in gan.items())
    assert doc["quality"]["label_consistency"]["model"]
    assert doc["findings"] and any("within noise" in f for f in doc["findings"])
    # every model's arithmetic, from its card: this CPU's default (bf16 where it computes bfloat16 natively)
    arithmetic = "bf16" if bf16_autocast("auto", "cpu") else "fp32"
    assert doc["training_arithmetic"] == {arithmetic: len({a["run"] for a in doc["arms"]})}
    csv_lines = (study / "study.csv").read_text(encoding="utf-8").splitlines()
    assert csv_lines[0].split(",") == list(CSV_FIELDS) and len(csv_lines) == len(rows) + 1
    html = (study / "report.html").read_text(encoding="utf-8")
    assert html.count("data:image/png;base64,") == 6 and "src='http" not in html
    md = (study / "report.md").read_text(encoding="utf-8")
    assert f"segmenter-classifiers trained (in {arithmetic}: " in md
    for title in ("Ratio sweep at a fixed training-set size", "paired difference against no augmentation",
                  "Robustness", "Synthetic quality", "Definitions"):
        assert title in md
    assert sorted(p.name for p in (study / "figures").iterdir()) == ["augmentation.png", "claims.png", "quality.png",
                                                                   "real_mri.png", "robustness.png", "sweep.png"]
    assert not list((study / "stages").glob(".*partial"))


def test_every_model_is_checked_on_the_shipped_real_scans(study):
    doc = json.loads((study / "study.json").read_text(encoding="utf-8"))
    real = doc["real_mri"]
    assert [s["name"] for s in real["scans"]] == ["t2", "pam50_t2"]
    assert all(s["annotated"] == ["cord"] and s["tumor_type"] == 0 for s in real["scans"])
    runs = {a["run"] for a in doc["arms"]}
    assert set(real["per_run"]) == runs
    for rows in real["per_run"].values():  # only the annotated label is scored: the cord
        assert [sorted(r["dice"]) for r in rows] == [["cord"], ["cord"]]
        assert all(0.0 <= r["tumor_probability"] <= 1.0 for r in rows)
        assert all(r["healthy_called_tumor"] == (r["tumor_probability"] >= 0.5) for r in rows)
        for r in rows:  # the probability is the mass's, lowered by the contrast (none without a tumor voxel)
            gate = 1.0 if r["tumor_contrast"] is None else min(1.0, abs(r["tumor_contrast"]))
            assert r["tumor_probability"] == pytest.approx(
                tumor_probability_from_segmentation(r["tumor_evidence_mm3"]) * gate, abs=1e-3)
    assert len(real["per_arm"]) == len(SHARES) + len(ARMS) * len(PROFILES["tiny"].pool_sizes)
    assert sum("Real MRI" in f for f in doc["findings"]) >= 2
    assert any("too few to tell" in f for f in doc["findings"])  # two shipped scans: the order is not compared
    md = (study / "report.md").read_text(encoding="utf-8")
    assert "Real MRI check" in md and "real_mri.png" in md


def test_the_papers_claims_open_the_report(study):
    doc = json.loads((study / "study.json").read_text(encoding="utf-8"))
    claims = doc["claims"]
    assert {c["source"].split(",")[-1].strip() for c in claims} >= {"arXiv 2506.17165"}
    assert any("Spinal Cord Tumor Detection" in c["source"] for c in claims)
    texts = " ".join(c["claim"] for c in claims)
    for phrase in ("peaks at a small synthetic share", "falls as the synthetic share grows",
                   "recall falls more than precision", "beats traditional training", "more robust to MRI artifacts",
                   "Grad-CAM attention"):
        assert phrase in texts, phrase
    for c in claims:
        assert set(c) >= {"claim", "source", "metric", "comparison", "difference", "verdict"}
        assert c["verdict"] in ("supported", "contradicted", "within noise")
        d = c["difference"]
        if d["ci_low"] is None or d["ci_high"] is None:
            assert c["verdict"] == "within noise" and c["note"], c
        else:
            assert d["ci_low"] <= d["ci_high"]
            assert (c["verdict"] == "within noise") == (d["ci_low"] <= 0 <= d["ci_high"]), c
    gradcam = next(c for c in claims if c["metric"] == "Grad-CAM tumor share")
    assert gradcam["difference"]["mean"] is not None  # measured on the none and GAN arms
    shares = doc["gradcam_tumor_share"]
    scarce = min(PROFILES["tiny"].pool_sizes)  # the claim's pool: Grad-CAM runs there only
    assert set(shares) == {f"pool {scarce}, {a}" for a in ("none", "gan")}
    assert all(0 <= v["mean"] <= 1 for v in shares.values())
    for page in ("report.md", "report.html"):  # the answer, its claims' plot and the sweep come first
        text = (study / page).read_text(encoding="utf-8")
        assert text.index("The answer") < text.index("each paired difference with its 95% CI")
        first_table = text.index("Claims of the two papers")
        assert text.index("The answer") < first_table < text.index("Findings") < text.index("Ratio sweep")
    html = (study / "report.html").read_text(encoding="utf-8")
    assert html.count("<details>") == html.count("<summary>") >= 5  # the tables fold
    answer = (study / "report.md").read_text(encoding="utf-8").split("## The answer")[1].split("\n\n![")[0]
    sentences = [line for line in answer.splitlines() if line.startswith("- ")]
    assert 3 <= len(sentences) <= 6, sentences
    verdicts = [c["verdict"] for c in claims]
    tally = (f"{len(claims)} claim tests: {verdicts.count('supported')} supported, "
             f"{verdicts.count('contradicted')} contradicted, {verdicts.count('within noise')} within noise")
    assert any(tally in s for s in sentences), sentences
    decided = [c for c in claims if c["verdict"] == "supported"] + [c for c in claims if c["verdict"] == "contradicted"]
    for c in decided[:3]:  # the claims beyond noise are stated with their numbers (the first three; then a count)
        assert any(f"{c['difference']['mean']:+.3f}" in s for s in sentences), c
    assert any(s.startswith("- On real MRI:") for s in sentences)


def test_every_run_trains_on_exactly_its_arms_volumes(study):
    """Each arm's stage keeps the list its bundle trained on: exactly n_real real and n_synthetic synthetic
    volumes, from the training pool and the arm's synthetic pool, never a test volume; and the evaluated model
    is the one the bundle wrote."""
    from collections import Counter

    doc = json.loads((study / "study.json").read_text(encoding="utf-8"))
    data = read_datalist(study / "stages" / "data" / "real")
    pool, test = {c.name for c in data.split("training")}, {c.name for c in data.split("test")}
    profile = PROFILES["tiny"]
    assert len(doc["arms"]) == (len(SHARES) + len(ARMS) * len(profile.pool_sizes)) * profile.seeds
    for arm in doc["arms"]:
        run_dir = study / "stages" / arm["run"]
        trained = json.loads((run_dir / "trained_on.json").read_text(encoding="utf-8"))
        counts = Counter(t["source"] for t in trained)
        assert (counts["real"], counts["synthetic"]) == (arm["n_real"], arm["n_synthetic"]), arm
        names = [t["name"] for t in trained]
        assert len(set(names)) == len(names) and not set(names) & test
        assert {t["name"] for t in trained if t["source"] == "real"} <= pool
        if arm["n_synthetic"]:
            gan_pool = (max(profile.pool_sizes) if arm["section"] == "sweep"
                                               else arm["real_pool"])
            synthetic = {c.name for c in read_datalist(study / "stages" / f"synth-{gan_pool}" / "synthetic").cases}
            assert {t["name"] for t in trained if t["source"] == "synthetic"} <= synthetic
        assert (run_dir / "models" / "model_final.pt").is_file()
        if arm["section"] == "sweep":
            assert arm["n_real"] + arm["n_synthetic"] == profile.sweep_size
            assert arm["n_synthetic"] == round(profile.sweep_size * arm["synthetic_share"])
        else:
            assert arm["n_real"] == arm["real_pool"]
            assert arm["n_synthetic"] == (arm["real_pool"] if arm["arm"] in ("gan", "both") else 0)


def test_synthetic_label_maps_come_from_each_gans_own_pool(study):
    """The default label source: every synthetic case records it and the real map it came from, a training case
    of that GAN's own pool (never a test case, never a case outside the pool); the report says which source."""
    profile = PROFILES["tiny"]
    data = read_datalist(study / "stages" / "data" / "real")
    test = {c.name for c in data.split("test")}
    for n in profile.pool_sizes:
        own_pool = {c.name for c in read_datalist(study / "stages" / f"gan-{n}" / "data").cases}
        assert len(own_pool) == n and not own_pool & test
        meta = read_datalist(study / "stages" / f"synth-{n}" / "synthetic").meta["volgan"]
        assert meta["label_source"] == "real-deformed"
        for info in meta["cases"].values():
            assert info["label_source"] == "real-deformed" and info["from"] in own_pool
    report = (study / "report.md").read_text(encoding="utf-8")
    assert "## Synthetic data used by this study" in report and "real training maps of the GAN's own pool" in report


def test_a_changed_setting_recomputes_only_what_depends_on_it(study):
    before = manifest(study)
    result = run("--out", study, "--seeds", "3")
    assert result.returncode == 0, result.stderr[-3000:]
    after = manifest(study)
    for key, entry in before.items():
        if key != "report":
            assert after[key]["hash"] == entry["hash"], key
    new = set(after) - set(before)
    labels = [after[k]["label"] for k in new]
    assert new and all(after[k]["kind"] in ("run", "eval", "real") for k in new)
    assert all("seed 2" in label for label in labels if label.startswith("spine_segcls"))
    assert after["report"]["hash"] != before["report"]["hash"]
    doc = json.loads((study / "study.json").read_text(encoding="utf-8"))
    assert all(len(r["per_seed"]) == 3 for r in doc["results"])


def test_the_users_datalist(tmp_path, phantom_dir):
    import shutil

    scans = tmp_path / "my_scans"  # the user's real scans for the real-MRI check: a pairs folder, SCT names
    scans.mkdir()
    real = Path(__file__).resolve().parents[1] / "data" / "real"
    shutil.copy(real / "t2.nii.gz", scans / "mine.nii.gz")
    shutil.copy(real / "t2_seg-manual.nii.gz", scans / "mine_seg-manual.nii.gz")
    field, spacing = (16, 16, 8), (3.0, 3.0, 6.0)  # an anisotropic field: thick slices along S
    result = run("--out", tmp_path / "mine", "--real", phantom_dir, "--seeds", "2",  # the folder form
                 "--real-check", scans, "--size", "16,16,8", "--spacing", "3,3,6")
    assert result.returncode == 0, result.stderr[-3000:]
    doc = json.loads((tmp_path / "mine" / "study.json").read_text(encoding="utf-8"))
    assert [s["name"] for s in doc["real_mri"]["scans"]] == ["t2", "pam50_t2", "mine"]
    mine = [r for rows in doc["real_mri"]["per_run"].values() for r in rows if r["scan"] == "mine"]
    assert mine and all(list(r["dice"]) == ["cord"] and r["tumor_type"] is None for r in mine)
    data = read_datalist(phantom_dir)
    assert doc["data"].endswith("dataset.json")
    assert doc["n"]["test"] == len(data.split("test"))
    assert doc["profile"]["real_pool"] == len(data.split("training"))
    assert doc["profile"]["size"] == list(field) and doc["profile"]["spacing"] == list(spacing)
    assert "16×16×8 voxels of 3×3×6 mm" in (tmp_path / "mine" / "report.md").read_text(encoding="utf-8")
    # every case resampled onto the field, centred on its labeled spine; the GAN's volumes on that field too
    for case in read_datalist(tmp_path / "mine" / "stages" / "data" / "real").cases:
        label = read_volume(case.label, label=True)
        assert label.shape == field and np.allclose(label.spacing, spacing)
        index = np.argwhere(label.array > 0)
        assert np.abs((index.min(0) + index.max(0)) / 2 - (np.array(field) - 1) / 2).max() <= 1.0
    synthetic = sorted((tmp_path / "mine" / "stages").glob("synth-*/synthetic"))
    assert synthetic and all(read_volume(c.image).shape == field and np.allclose(read_volume(c.image).spacing, spacing)
                             for folder in synthetic for c in read_datalist(folder).cases[:2])


@pytest.mark.parametrize("args, needle", [
    (["--real", "missing/dataset.json"], "missing"),
    (["--seeds", "1"], "--seeds must be at least 2"),
    (["--size", "24"], "--size must be a power of two"),
    (["--size", "16,16,12"], "the smallest side must be a power of two"),
    (["--size", "16,20,16"], "every side must be a multiple of 8"),
    (["--spacing", "1,1"], "--spacing must be a number or three numbers"),
    (["--spacing", "0"], "--spacing must be a positive number"),
])
def test_bad_input(cli, tmp_path, args, needle):
    result = cli("study", "--profile", "tiny", "--out", tmp_path / "s", *args)
    assert result.code == 2 and needle in result.err
    assert len(result.err.strip().splitlines()) == 1
    assert not (tmp_path / "s").exists()


def test_a_folder_that_holds_something_else_is_left_alone(tmp_path):
    (tmp_path / "notes.txt").write_text("mine", encoding="utf-8")
    result = run("--out", tmp_path)
    assert result.returncode == 2 and "no manifest.json" in result.stderr
    assert os.listdir(tmp_path) == ["notes.txt"]


# --------------------------------------------------------------------------------------------------------
# Statistics


def _cases(n=40, seed=0):
    rng = np.random.default_rng(seed)
    truth = np.repeat(np.arange(4), n // 4)
    probabilities = rng.dirichlet(np.ones(4), n)
    probabilities[truth != 0, 0] *= rng.uniform(0.2, 1.0, (truth != 0).sum())
    probabilities /= probabilities.sum(1, keepdims=True)
    dice = np.where(truth != 0, rng.uniform(0, 1, n), np.nan)
    return probabilities, truth, dice, dice / (2 - np.nan_to_num(dice)), rng.uniform(0.5, 1, n)


def test_weighted_metrics_agree_with_independent_definitions():
    """Every case counted once: the rates by hand and the AUC by MONAI's compute_roc_auc (ties included)."""
    from monai.metrics import compute_roc_auc

    probabilities, truth, dice, iou, anatomy = _cases()
    probabilities[:6] = probabilities[6:12]  # tied scores across the classes
    weights = np.ones((1, len(truth)))
    got = {k: v[0] for k, v in weighted_metrics(probabilities, truth, dice, iou, anatomy, weights).items()}
    score, positive = 1 - probabilities[:, 0], truth != 0
    called = score >= 0.5
    tp, fp, fn = (called & positive).sum(), (called & ~positive).sum(), (~called & positive).sum()
    assert got["accuracy"] == pytest.approx((called == positive).mean(), abs=1e-12)
    assert got["precision"] == pytest.approx(tp / (tp + fp), abs=1e-12)
    assert got["recall"] == pytest.approx(tp / (tp + fn), abs=1e-12)
    assert got["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn), abs=1e-12)
    monai_auc = float(compute_roc_auc(torch.as_tensor(score), torch.as_tensor(positive.astype(int))))
    assert got["auc"] == pytest.approx(monai_auc, abs=1e-12)
    assert roc_auc(score, positive.astype(int)) == pytest.approx(monai_auc, abs=1e-12)
    rates = binary_rates(called.astype(int), positive.astype(int))
    assert rates["specificity"] == pytest.approx((~called & ~positive).sum() / (~positive).sum(), abs=1e-12)
    assert got["type_accuracy"] == pytest.approx((probabilities.argmax(1) == truth).mean())
    assert got["tumor_dice"] == pytest.approx(np.nanmean(dice))
    # a weight of 2 is the case counted twice
    counts = np.ones(len(truth), int)
    counts[[1, 5, 17]] = 2
    repeated = np.repeat(np.arange(len(truth)), counts)
    twice = weighted_metrics(probabilities, truth, dice, iou, anatomy, counts[None])
    copy = weighted_metrics(probabilities[repeated], truth[repeated], dice[repeated], iou[repeated],
                            anatomy[repeated], np.ones((1, len(repeated))))
    for name in METRICS:
        assert twice[name][0] == pytest.approx(copy[name][0], abs=1e-12), name


def test_paired_differences():
    replicates = Replicates(40, 3, 500, seed=1)
    probabilities, truth, dice, iou, anatomy = _cases()
    base = np.stack([weighted_metrics(probabilities, truth, dice, iou, anatomy, replicates.cases)["tumor_dice"]
                     for _ in range(3)])
    same = replicates.summarize(base, base)
    assert same["mean"] == 0 and same["ci_low"] == 0 and same["ci_high"] == 0 and same["within_noise"]
    better = replicates.summarize(base + 0.1, base)
    assert better["ci_low"] == pytest.approx(0.1) and not better["within_noise"]
    noisy = np.stack([weighted_metrics(*_cases(seed=s), replicates.cases)["tumor_dice"] for s in (1, 2, 3)])
    summary = replicates.summarize(noisy)
    assert summary["ci_low"] < summary["mean"] < summary["ci_high"]
    assert summary["sd"] == pytest.approx(np.std(noisy[:, 0], ddof=1))


def test_pool_subsets_are_nested_and_stratified(phantom_dir):
    pool = read_datalist(phantom_dir).cases
    small, large = pool_subset(pool, 4, 0), pool_subset(pool, 8, 0)
    assert {c.name for c in small} <= {c.name for c in large}
    assert len({c.tumor_type for c in small}) == 4
    assert adapt_profile(PROFILES["quick"], 10).pool_sizes == (5, 10)
    assert adapt_profile(PROFILES["quick"], 20).pool_sizes == (12, 20)


def test_records_cross_modules_typed_and_round_trip():
    """Arms and evaluation rows reach the report as dataclasses made from their JSON, and write back the same JSON."""
    import math

    from volgan.study.records import CaseEvaluation, PlannedArm

    arm = PlannedArm("sweep", "80:20", 1, ("r1", "r2"), ("s1",), "none", gan_pool=2, share=0.2, run="run-x",
                     eval="eval-x", real_check="real-x")
    assert PlannedArm.from_dict(json.loads(json.dumps(arm.to_dict()))) == arm and arm.n_train == 3
    row = {"case": "c1", "tumor_type": 2, "severity": 0, "probabilities": [0.1, 0.2, 0.6, 0.1],
           "tumor_evidence_mm3": 41.5, "dice": {str(k): 0.5 for k in range(1, 6)} | {"5": None},
           "iou": {str(k): 0.25 for k in range(1, 6)}, "gradcam_tumor_share": None}
    record = CaseEvaluation.from_dict(row)
    assert record.tumor_dice is None and record.dice[1] == 0.5 and record.calls_tumor
    assert math.isnan(record.gradcam_tumor_share)  # measured, undefined (no tumor voxel): NaN, not "not measured"
    assert record.to_dict() == row
    unmeasured = {k: v for k, v in row.items() if k != "gradcam_tumor_share"}
    assert CaseEvaluation.from_dict(unmeasured).gradcam_tumor_share is None
    assert CaseEvaluation.from_dict(unmeasured).to_dict() == unmeasured


def _same(a, b, path="") -> list[str]:
    """Where two JSON documents differ: numbers beyond 1e-9 relative (BLAS may order sums differently per CPU)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in a.keys() | b.keys() for d in _same(a.get(k), b.get(k), f"{path}/{k}")]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} items against {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in _same(x, y, f"{path}[{i}]")]
    if isinstance(a, float | int) and isinstance(b, float | int) and not isinstance(a, bool):
        return [] if abs(a - b) <= 1e-9 * max(abs(a), abs(b), 1e-3) else [f"{path}: {a!r} against {b!r}"]
    return [] if a == b else [f"{path}: {a!r} against {b!r}"]


def test_study_json_figures_are_those_of_the_stored_evaluations(tmp_path):
    """study.json before and after a change: the evaluations, real-MRI checks and quality report of a tiny study
    (tests/data, made by the commit its ``made_by`` names) must give the stored study.json figures: results,
    claims, findings, the real-MRI section, the degenerate classifiers and the Grad-CAM shares."""
    import gzip

    from volgan.study.profiles import PROFILES
    from volgan.study.records import PlannedArm
    from volgan.study.results import study_document

    stored = json.loads(gzip.decompress((Path(__file__).parent / "data" / "tiny_study_evaluations.json.gz")
                                        .read_bytes()))
    for name, content in stored["files"].items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(json.dumps(content), encoding="utf-8")
    document = study_document(tmp_path, PROFILES["tiny"], [PlannedArm.from_dict(a) for a in stored["arms"]], None)
    assert set(stored["expected"]) <= set(document)
    differences = _same(stored["expected"], {k: document[k] for k in stored["expected"]})
    assert not differences, differences[:10]
