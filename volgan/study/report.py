"""The study report: arXiv 2506.17165's table for the ratio sweep, the augmentation comparison with paired differences,
robustness curves and the synthetic-quality section (``study.json``, ``study.csv``, ``report.md``,
``report.html``, ``figures/``).

Statistics (:mod:`volgan.study.bootstrap`): per training seed on the fixed real test set, averaged over seeds, with
two-level bootstrap CIs over seeds and test cases; paired differences on shared replicates. The opening sentences
and the claims' forest plot come from :mod:`volgan.study.answer`.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np

from volgan.data.files import write_text
from volgan.evaluation.quality import QualityReport
from volgan.evaluation.rendering import fmt, html_page, markdown_page
from volgan.study import real_report
from volgan.study.answer import KEY_METRICS, METRICS, answer, diff_cell, forest_plot, number, pick
from volgan.study.claims import result_cell
from volgan.study.profiles import ARMS
from volgan.study.records import PlannedArm
from volgan.study.results import DEFINITIONS, study_document
from volgan.transforms import SEVERITIES

ROBUSTNESS_METRICS = ("accuracy", "auc", "tumor_dice", "anatomy_dice")
TITLE = "volgan study: real/synthetic ratio sweep and augmentation comparison"
LABEL_SOURCE_TEXT = {
    "gan": "drawn by the GAN's label generator (volgan synth --label-source gan)",
    "real-deformed": "real training maps of the GAN's own pool, each of the asked class (tumor-free maps for "
                     "tumor-free volumes), elastically deformed and posed, the tumor removed and a new one of the "
                     "asked class grown in its host tissue at the removed one's site (volgan synth --label-source "
                     "real-deformed); each synthetic case names its source map in the synthetic datalist"}
LABEL_SOURCE_WHY = {
    "real-deformed": "the default: on the quick profile's GAN, judged by its real-only model, real-deformed maps "
                     "scored anatomy Dice 0.82-0.86 per label and tumor Dice 0.27 against the label generator's "
                     "0.61-0.77 and 0.01 (BENCHMARKS.md); a label generator trained on 12 to 24 maps is data-starved. "
                     "Maps come from the asked class and keep the tumor's site because the image generator paints "
                     "a tumor where its training map had one: from any map, 3 of 6 tumor-free volumes showed the "
                     "judge a tumor at the standard profile, and tumor Dice was 0.23 against 0.38 (BENCHMARKS.md)",
    "gan": "asked for with --label-source gan (the label generator is the weaker source at small pools; "
           "BENCHMARKS.md)"}


# --------------------------------------------------------------------------------------------------------
# Tables, figures, files


def _by_arm(rows: list[dict]) -> dict[str, dict[str, dict]]:
    """{arm: {metric: row}}, arms in the order of ``rows``."""
    out: dict[str, dict[str, dict]] = {}
    for r in rows:
        out.setdefault(r["arm"], {})[r["metric"]] = r
    return out


def _summary_rows(groups: dict[str, dict[str, dict]]) -> list[list[str]]:
    return [[arm, str(cells["accuracy"]["n_real"]), str(cells["accuracy"]["n_synthetic"]),
             *[result_cell(cells[m]) for m in METRICS]] for arm, cells in groups.items()]


def _difference_rows(groups: dict[str, dict[str, dict]]) -> list[list[str]]:
    return [[arm, *[diff_cell(cells[m].get("difference")) for m in KEY_METRICS]] for arm, cells in groups.items()]


def claims_table(rows: list[dict], gradcam: dict) -> tuple[str, list[str], list[list[str]]]:
    """The claims as the report's opening table (and the Grad-CAM tumor share per arm under it).

    Parameters
    ----------
    rows : list[dict]
        the claim rows (:func:`claims`).
    gradcam : dict
        {arm: the Grad-CAM tumor share's mean and 95% CI}, empty when none was measured.

    Returns
    -------
    tuple[str, list[str], list[list[str]]]
        (title, column names, rows of cells).
    """
    body = []
    for r in rows:
        d = r["difference"]
        cell = "–" if d["mean"] is None else f"{d['mean']:+.3f} [{fmt(d['ci_low'])}, {fmt(d['ci_high'])}]"
        body.append([r["claim"], "arXiv 2506.17165" if "arXiv" in r["source"] else "Ainapure et al.",
                     r["metric"], r["comparison"], cell, r["verdict"] + (f" ({r['note']})" if r.get("note") else "")])
    for arm, v in gradcam.items():
        body.append([f"Grad-CAM tumor share, {arm}", "measured", "Grad-CAM tumor share", "mean [95% CI]",
                     f"{fmt(v['mean'])} [{fmt(v['ci_low'])}, {fmt(v['ci_high'])}]", ""])
    return ("Claims of the two papers, tested on this study (clean real test set unless stated)",
            ["claim", "source", "metric", "comparison", "difference [95% CI]", "verdict"], body)


def tables(rows: list[dict], pools: list[int],
           quality: QualityReport | None) -> list[tuple[str, list[str], list[list[str]]]]:
    """The report's tables after the claims: the ratio sweep and its paired differences, the augmentation comparison per
    pool size, clean and under artifacts, and the synthetic-quality figures.

    Parameters
    ----------
    rows : list[dict]
        the result rows.
    pools : list[int]
        the augmentation comparison's real-pool sizes.
    quality : QualityReport | None
        the synthetic-quality report, or None.

    Returns
    -------
    list[tuple[str, list[str], list[list[str]]]]
        (title, column names, rows of cells) per table.
    """
    out = []
    sweep = _by_arm(sorted(pick(rows, "sweep"), key=lambda r: r["synthetic_share"]))
    out.append(("Ratio sweep at a fixed training-set size, clean real test set (mean ± sd over seeds [95% CI])",
                ["real:synthetic", "n real", "n synthetic", *METRICS.values()], _summary_rows(sweep)))
    out.append(("Ratio sweep: paired difference against 100:0 [95% CI]",
                ["real:synthetic", *[METRICS[m] for m in KEY_METRICS]], _difference_rows(sweep)))
    for pool in pools:
        aug = _by_arm(sorted(pick(rows, "augmentation", pool=pool), key=lambda r: ARMS.index(r["arm"])))
        out.append((f"Augmentation comparison, real pool {pool} (mean ± sd over seeds [95% CI])",
                    ["arm", "n real", "n synthetic", *METRICS.values()], _summary_rows(aug)))
        out.append((f"Augmentation comparison, real pool {pool}: paired difference against no augmentation",
                    ["arm", *[METRICS[m] for m in KEY_METRICS]],
                    [r for r in _difference_rows(aug) if r[0] != "none"]))
    robust = []
    for pool in pools:
        for arm in ARMS:
            for metric in ROBUSTNESS_METRICS:
                cells = [next((r for r in pick(rows, "augmentation", sev, metric, pool) if r["arm"] == arm), None)
                         for sev in SEVERITIES]
                if all(cells):
                    robust.append([f"pool {pool}, {arm}", METRICS[metric],
                                   *[f"{fmt(c['mean'])} [{fmt(c['ci_low'])}, {fmt(c['ci_high'])}]" for c in cells]])
    out.append(("Robustness: the real test set with MRI artifacts (mean [95% CI])", ["arm", "metric", *SEVERITIES],
                robust))
    if quality:
        groups = [("all", quality.overall), *quality.per_type.items()]
        source = quality.label_source or "gan"
        out.append(("Synthetic data used by this study", ["what", "value"], [
            ["label maps", LABEL_SOURCE_TEXT.get(source, source)],
            ["images", "painted by the conditional image GAN of bundles/spine_cgan, trained on the real pool only"],
            ["why this label source", LABEL_SOURCE_WHY.get(source, "chosen with --label-source")]]))
        out.append(("Synthetic quality (volgan quality, the GAN of the full real pool)",
                    ["group", "n synthetic", "Fréchet synthetic vs real", "Fréchet real vs real (floor)",
                     "MS-SSIM synthetic", "MS-SSIM real", "diversity gap"],
                    [[name, str(g["n_synthetic"]), fmt(g["frechet_synthetic_vs_real"], 2),
                      fmt(g["frechet_real_vs_real"], 2), fmt(g["msssim_synthetic"]), fmt(g["msssim_real"]),
                      fmt(g.get("diversity_gap"))] for name, g in groups]))
        memo, cons = quality.memorization, quality.label_consistency
        smooth = memo["smoothed"]
        rows_q = [["synthetic volumes nearer to a training volume than the nearest test volume (raw / smoothed)",
                   f"{memo['synthetic_nearer_than_nearest_test']} / "
                   f"{smooth['synthetic_nearer_than_nearest_test']} of {quality.n['synthetic']}"],
                  ["memorization (smoothed): chance of as many or more, verdict",
                   f"p = {fmt(smooth.get('p_value'), 3)}, {smooth.get('verdict') or 'no test set'}"],
                  ["median nearest-training distance, synthetic / test (smoothed)",
                   fmt(smooth.get("median_distance_ratio"), 2)]]
        judge = quality.overall.get("frechet_judge_synthetic_vs_real")
        if judge is not None:
            rows_q.append(["Fréchet distance on the judge's own encoder, synthetic vs real (real vs real floor)",
                           f"{fmt(judge, 3)} ({fmt(quality.overall.get('frechet_judge_real_vs_real'), 3)})"])
        if cons.get("model"):
            rows_q += [[f"label consistency Dice, {k}", fmt(v.get("mean"))] for k, v in cons["dice"].items()]
            if "targets" in cons:
                free = cons["tumor_free"]
                rows_q += [["judge's tumor Dice: real test (tumor-bearing) / synthetic (tumor-bearing)",
                            f"{fmt(cons['real_test']['tumor_dice'])} / {fmt(cons['tumor_bearing']['tumor_dice'])}"],
                           ["tumor-free synthetic volumes the judge calls a tumor in",
                            f"{free['with_tumor_found']} of {free['of']}"]]
                rows_q += [[f"target: {t['target']}", f"{fmt(t['value'])}: {'met' if t['met'] else 'NOT met'}"]
                           for t in cons["targets"]]
        else:
            rows_q.append(["label consistency", "missing: " + cons.get("note", "")])
        out.append(("Synthetic quality: memorization and label consistency", ["figure", "value"], rows_q))
    return out


def _figures(rows: list[dict], pools: list[int], folder: Path, quality_png: Path | None) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from volgan.evaluation.rendering import save_figure

    folder.mkdir(parents=True, exist_ok=True)
    figures = {}
    fig, axes = plt.subplots(3, 3, figsize=(12, 10))
    for ax, metric in zip(axes.ravel(), METRICS, strict=True):
        sweep = sorted(pick(rows, "sweep", metric=metric), key=lambda r: r["synthetic_share"])
        x = np.array([100 * r["synthetic_share"] for r in sweep])
        mean = np.array([r["mean"] for r in sweep], dtype=float)
        low = np.array([r["ci_low"] for r in sweep], dtype=float)
        high = np.array([r["ci_high"] for r in sweep], dtype=float)
        ax.errorbar(x, mean, yerr=[np.nan_to_num(mean - low), np.nan_to_num(high - mean)], marker="o", capsize=3)
        for r in sweep:
            ax.scatter([100 * r["synthetic_share"]] * len(r["per_seed"]), r["per_seed"], s=8, color="grey", alpha=.6)
        ax.set_title(METRICS[metric])
        ax.set_xlabel("synthetic share (%)")
    fig.suptitle("Ratio sweep: mean and 95% CI over seeds and test cases (grey: single seeds)")
    save_figure(fig, folder / "sweep.png")
    figures["sweep.png"] = "Each metric against the synthetic share"

    fig, axes = plt.subplots(1, len(KEY_METRICS), figsize=(17, 4))
    for ax, metric in zip(axes, KEY_METRICS, strict=True):
        labels, means, errs = [], [], [[], []]
        for pool in pools:
            for r in pick(rows, "augmentation", metric=metric, pool=pool):
                if "difference" in r:
                    d = r["difference"]
                    labels.append(f"{r['arm']}\n{pool}")
                    mean, low, high = number(d["mean"]), number(d["ci_low"]), number(d["ci_high"])
                    means.append(mean)
                    errs[0].append(np.nan_to_num(max(mean - low, 0)))
                    errs[1].append(np.nan_to_num(max(high - mean, 0)))
        ax.bar(range(len(means)), np.nan_to_num(means), yerr=errs, capsize=3, color="tab:blue")
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xticks(range(len(labels)), labels, fontsize=7)
        ax.set_title(f"{METRICS[metric]}: arm − none")
    fig.suptitle("Augmentation comparison: paired differences against no augmentation (95% CI), per real pool")
    save_figure(fig, folder / "augmentation.png")
    figures["augmentation.png"] = "Paired differences against no augmentation"

    fig, axes = plt.subplots(1, len(ROBUSTNESS_METRICS), figsize=(17, 4))
    styles = ["-", "--", ":", "-."]
    for ax, metric in zip(axes, ROBUSTNESS_METRICS, strict=True):
        for p, pool in enumerate(pools):
            for c, arm in enumerate(ARMS):
                curve = [next((r for r in pick(rows, "augmentation", sev, metric, pool) if r["arm"] == arm), None)
                         for sev in SEVERITIES]
                if all(curve):
                    ax.plot(range(len(SEVERITIES)), [number(r["mean"]) for r in curve], styles[p % 4], marker="o",
                            color=f"C{c}", label=f"{arm}, pool {pool}")
        ax.set_xticks(range(len(SEVERITIES)), SEVERITIES)
        ax.set_title(METRICS[metric])
    axes[0].legend(fontsize=7)
    fig.suptitle("Robustness: metric against artifact severity")
    save_figure(fig, folder / "robustness.png")
    figures["robustness.png"] = "Robustness curves"
    if quality_png is not None and quality_png.is_file():
        shutil.copyfile(quality_png, folder / "quality.png")
        figures["quality.png"] = "Synthetic mid-slices beside real ones"
    return figures


CSV_FIELDS = ("section", "arm", "real_pool", "synthetic_share", "n_real", "n_synthetic", "augment", "severity",
              "metric", "mean", "sd", "ci_low", "ci_high", "difference_vs", "difference", "difference_ci_low",
              "difference_ci_high", "within_noise", "per_seed")


def to_csv(rows: list[dict]) -> str:
    """The result rows as CSV (``results.csv``): one line per arm, severity and metric, with the paired difference where
    there is one.

    Parameters
    ----------
    rows : list[dict]
        the result rows.

    Returns
    -------
    str
        the CSV text.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for r in rows:
        d = r.get("difference") or {}
        writer.writerow([r["section"], r["arm"], r["real_pool"] or "", "" if r["synthetic_share"] is None else
                         r["synthetic_share"], r["n_real"], r["n_synthetic"], r["augment"], r["severity"], r["metric"],
                         *[fmt(r[k], 6) for k in ("mean", "sd", "ci_low", "ci_high")], d.get("vs", ""),
                         fmt(d.get("mean"), 6) if d else "", fmt(d.get("ci_low"), 6) if d else "",
                         fmt(d.get("ci_high"), 6) if d else "", d.get("within_noise", ""),
                         " ".join(fmt(v, 6) for v in r["per_seed"])])
    return buffer.getvalue()


def arithmetic_text(counts: dict[str, int]) -> str:
    """The models' training arithmetic in words, e.g. ``"in fp32: a GPU or a CPU without native
    bfloat16; ..."``.

    Parameters
    ----------
    counts : dict[str, int]
        study.json's ``training_arithmetic``.

    Returns
    -------
    str
        one clause.
    """
    if len(counts) != 1:
        mixed = ", ".join(f"{n} {name}" for name, n in counts.items())
        return f"in {mixed}: mixed, so the arms differ in more than their data"
    (name,) = counts
    return {"bf16": "in bf16: a CPU with native bfloat16; a GPU or a CPU without it trains fp32 models that differ "
                    "from these",
            "fp32": "in fp32: a GPU or a CPU without native bfloat16; a CPU with it trains bf16 models that differ "
                    "from these"}.get(name, "in an arithmetic their model cards do not name")


def write_study_report(folder: Path, out: Path, profile, arms: list[PlannedArm], real: Path | None) -> dict:
    """Read every evaluation and the quality report under ``out/stages`` and write the study report into
    ``folder``; returns the study document.

    Parameters
    ----------
    folder : Path
        the report's folder.
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
        the study document (``study.json``).
    """
    stages = out / "stages"
    document = study_document(out, profile, arms, real)
    pools = sorted({a.real_pool for a in arms if a.section == "augmentation"})
    quality = QualityReport.from_dict(document["quality"]) if document["quality"] is not None else None
    real_mri = document["real_mri"]
    quality_dir = stages / "quality" / "quality"
    figures = _figures(document["results"], pools, folder / "figures", quality_dir / "quality.png")
    if real_mri is not None:
        figures = {**real_report.figure(real_mri, arms, stages, folder / "figures"), **figures}
    header = [f"Data: {document['data']}; profile {profile.name} ({profile.field_text}); "
              f"{document['n']['test']} real test volumes, equal per tumor_type; "
              f"{profile.seeds} seeds per configuration; "
              f"{document['n']['trained_models']} segmenter-classifiers trained "
              f"({arithmetic_text(document['training_arithmetic'])})."]
    table_list = [claims_table(document["claims"], document["gradcam_tumor_share"]),
                  ("Findings", ["finding"], [[line] for line in document["findings"]]),
                  *([real_report.table(document["real_mri"])] if real_mri is not None else []),
                  *tables(document["results"], pools, quality)]
    write_text(folder / "study.json", json.dumps(document, indent=1) + "\n")
    write_text(folder / "study.csv", to_csv(document["results"]))
    opening = answer(document, pools)
    forest_plot(document["claims"], folder / "figures" / "claims.png")
    lead = {"claims.png": "The papers' claims: each paired difference with its 95% CI"}
    if "sweep.png" in figures:
        lead["sweep.png"] = figures.pop("sweep.png")
    write_text(folder / "report.md", markdown_page(TITLE, header, table_list, figures, DEFINITIONS, opening, lead))
    write_text(folder / "report.html", html_page(TITLE, header, table_list, figures, folder / "figures",
                                                 DEFINITIONS, opening, lead))
    return document
