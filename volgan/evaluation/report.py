"""Evaluation reports: ``summary.json`` (nnU-Net's keys and volgan's own), ``per_case.csv``, ``report.md``
and a self-contained ``report.html`` with figures (confusion matrix, ROC curves, best and worst cases).

References come from a datalist (its test split: label maps, ``tumor_type`` and images) or a folder of
label maps; predictions are ``NAME_seg.nii.gz`` (as ``volgan infer`` writes) or ``NAME.nii.gz``;
classification probabilities come from the ``predictions.csv``/``.json`` table of ``volgan infer``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from volgan.data.datalist import DATASET_FILE, read_datalist
from volgan.data.files import staged_output_dir, strict_json, write_text
from volgan.data.io import check_same_grid, read_volume, volume_files, volume_stem
from volgan.errors import VolganInputError
from volgan.evaluation.metrics import (
    COUNT_KEYS,
    FOREGROUND,
    bootstrap,
    classification_metrics,
    confusion_matrix,
    nan_mean,
    segmentation_metrics,
)
from volgan.evaluation.rendering import fmt, html_page, make_figures, markdown_page
from volgan.labels import LABELS, TUMOR_LABEL, TUMOR_TYPES
from volgan.segcls.table import read_class_table, stem_of_output
from volgan.training import progress_of

SEG_METRICS = ("Dice", "IoU", "HD95", "NSD")

REPORT_ENTRIES = ("summary.json", "per_case.csv", "report.md", "report.html", "figures")

TITLE = "volgan evaluation report"

DEFINITIONS = [
    "Dice = 2TP/(2TP+FP+FN) and IoU = TP/(TP+FP+FN) from voxel counts; a label empty in both reference and "
    "prediction gives NaN (null), flagged empty_ref_and_pred, and is left out of means (as nnU-Net does).",
    "HD95 = max of the two directed 95th-percentile surface distances in mm (MONAI's and MetricsReloaded's "
    "definition; surface = mask minus its 6-connected erosion; spacing from the header). One side empty gives "
    "the image diagonal in mm, flagged empty_pred or empty_ref.",
    "NSD = share of both surfaces within the stated tolerance (mm) of the other; one side empty gives 0.",
    "Classification: tumor = tumor_type != 0 with probability 1 - p(none); accuracy, precision, recall "
    "(sensitivity), specificity and F1 at threshold 0.5; ROC AUC for tumor; one-vs-rest macro AUC for "
    "tumor_type; tumor_type accuracy from the argmax.",
    "Confidence intervals: 95% percentile bootstrap over cases, seeded, with the stated number of resamples.",
]

@dataclass
class Pair:
    name: str
    pred: Path
    ref: Path
    image: Path | None
    tumor_type: int | None
    annotated: tuple[str, ...] | None = None  # the labels the reference annotates (None: all)


def find_pairs(pred_dir: str | os.PathLike, ref: str | os.PathLike,
               images: str | os.PathLike | None = None) -> list[Pair]:
    """Match predictions to references by case name; a reference without a prediction is an error.

    Parameters
    ----------
    pred_dir : str | os.PathLike
        the folder of predictions (``NAME_seg.ext`` or ``NAME.ext``).
    ref : str | os.PathLike
        the references: a datalist (the labeled cases of its test split) or a folder of label maps.
    images : str | os.PathLike | None
        a folder of the images, for the overlay figures (None: the datalist's, or none).

    Returns
    -------
    list[Pair]
        the matched cases (name, prediction, reference, image, tumor_type).

    Raises
    ------
    VolganInputError
        naming the folder or file, when it is missing, a datalist has no test split, there is no reference, or a
        reference has no prediction.
    """
    pred_dir, ref = Path(pred_dir), Path(ref)
    if not pred_dir.is_dir():
        raise VolganInputError(pred_dir, "prediction folder does not exist")
    preds = {}
    for path in volume_files(pred_dir):
        if not volume_stem(path.name).endswith("_gradcam"):
            preds[stem_of_output(path)] = path
    if ref.suffix == ".json" or (ref / DATASET_FILE).is_file():
        datalist = read_datalist(ref)
        test = datalist.split("test")
        if not test:
            raise VolganInputError(datalist.path, "has no test split; evaluate scores only the cases listed under "
                                                  "\"test\" (put the cases to score there, or pass a folder of "
                                                  "label maps as --ref)")
        cases = [c for c in test if c.label is not None]
        refs = [(c.name, c.label, c.image, c.tumor_type, c.annotated) for c in cases]
    elif ref.is_dir():
        refs = [(volume_stem(p.name), p, None, None, None) for p in volume_files(ref)]
    else:
        raise VolganInputError(ref, "reference must be a datalist or a folder of label maps")
    if not refs:
        raise VolganInputError(ref, "no reference label maps found")
    pairs = []
    for name, label, image, tumor_type, annotated in refs:
        if name not in preds:
            raise VolganInputError(pred_dir / f"{name}_seg.nii.gz", f"no prediction for reference case {name!r} (nor "
                                                                    f"{name}_seg or {name} in another volume format)")
        if image is None and images is not None:
            candidates = [p for p in volume_files(images) if volume_stem(p.name) in (name, f"{name}_0000")]
            image = candidates[0] if candidates else None
        pairs.append(Pair(name, preds[name], Path(label), image, tumor_type, annotated))
    return pairs


def summary_line(summary: dict) -> str:
    """The report's headline: the number of cases, the foreground Dice and HD95 (mm) averaged over labels.

    Parameters
    ----------
    summary : dict
        the report's summary (:func:`summarize`).

    Returns
    -------
    str
        one line.
    """
    fm = summary["foreground_mean"]

    def shown(value, digits: int) -> str:
        return "undefined (a label is empty in every case)" if value is None or not math.isfinite(value) \
            else f"{value:.{digits}f}"

    return (f"{summary['volgan']['n_cases']} cases, foreground Dice {shown(fm['Dice'], 3)}, "
            f"HD95 {shown(fm['HD95'], 2)} mm")


def evaluate(pred_dir, ref, out, classes: str | os.PathLike | None = None, images=None, tolerance_mm: float = 2.0,
             resamples: int = 1000, seed: int = 0, overwrite: bool = False, progress: bool = False) -> dict:
    """Compute every metric and write the report into ``out``.

    Parameters
    ----------
    pred_dir
        the predicted label maps, matched to the references by case name.
    ref
        the reference datalist (its test split) or a folder of label maps.
    out
        the report folder (``report.html``, ``report.md``, ``summary.json``, ``per_case.csv``,
        ``figures/``), built in a staging folder and moved in at the end.
    classes : str | os.PathLike | None
        ``predictions.csv`` of :func:`volgan.segcls.inference.run_inference`, for the classification
        figures.
    images
        the images, for the figures' backgrounds.
    tolerance_mm : float
        the NSD's tolerance, mm.
    resamples : int
        bootstrap resamples of each CI.
    seed : int
        fixes the resamples.
    overwrite : bool
        replace a report already in ``out``.
    progress : bool
        a bar on a terminal, log lines elsewhere.

    Returns
    -------
    dict
        The summary (``summary.json``'s content): per-label and foreground means with their CIs, and the
        classification figures when ``classes`` is given.
    """
    pairs = find_pairs(pred_dir, ref, images)
    with staged_output_dir(Path(out), REPORT_ENTRIES, overwrite) as staging:  # refuses a taken folder first
        per_case = []
        for pair in progress_of(pairs, "evaluate", "case", progress):
            pred, ref_volume = read_volume(pair.pred, label=True), read_volume(pair.ref, label=True)
            check_same_grid(ref_volume, pred)
            metrics = segmentation_metrics(pred.array, ref_volume.array, ref_volume.spacing, tolerance_mm,
                                           annotated=pair.annotated)
            has_tumor = bool(metrics[TUMOR_LABEL]["n_ref"])
            per_case.append({"pair": pair, "metrics": metrics, "ref_tumor": has_tumor, "spacing": ref_volume.spacing})
        summary = summarize(per_case, tolerance_mm, resamples, seed)
        summary["volgan"]["classification_note"] = classification_note(per_case, classes)
        if summary["volgan"]["classification_note"] is None:
            summary["classification"] = classify(per_case, read_class_table(classes), resamples, seed, classes)
        (staging / "figures").mkdir()
        figures = make_figures(per_case, summary, staging / "figures")
        write_text(staging / "summary.json", json.dumps(strict_json(summary), indent=2, allow_nan=False) + "\n")
        write_text(staging / "per_case.csv", per_case_csv(per_case))
        tables = report_tables(summary)
        header = _header(summary)
        write_text(staging / "report.md", markdown_page(TITLE, header, tables, figures, DEFINITIONS))
        write_text(staging / "report.html", html_page(TITLE, header, tables, figures, staging / "figures", DEFINITIONS))
    return summary


def summarize(per_case: list[dict], tolerance_mm: float, resamples: int, seed: int) -> dict:
    """nnU-Net's ``metric_per_case``/``mean``/``foreground_mean`` plus volgan's CIs, flags and definitions.

    Parameters
    ----------
    per_case : list[dict]
        the per-case rows (the case pair and its per-label metrics).
    tolerance_mm : float
        the NSD tolerance in mm.
    resamples : int
        the bootstrap draws of the confidence intervals.
    seed : int
        fixes the draws.

    Returns
    -------
    dict
        ``metric_per_case``, ``mean`` and ``foreground_mean`` (as nnU-Net writes them), with 95% intervals, flags and
        the definitions.
    """
    metric_per_case = []
    for row in per_case:
        metric_per_case.append({
            "reference_file": str(row["pair"].ref), "prediction_file": str(row["pair"].pred),
            "metrics": {str(k): {key: v[key] for key in (*SEG_METRICS, *COUNT_KEYS, "flags")}
                        for k, v in row["metrics"].items()},
        })
    mean, intervals, spread = {}, {}, {}
    for k in FOREGROUND:
        mean[str(k)] = {}
        intervals[str(k)] = {}
        spread[str(k)] = {}
        for key in (*SEG_METRICS, *COUNT_KEYS):
            values = np.array([row["metrics"][k][key] for row in per_case], dtype=np.float64)
            mean[str(k)][key] = nan_mean(values)
            if key in SEG_METRICS:
                finite = values[np.isfinite(values)]
                spread[str(k)][key] = float(finite.std(ddof=1)) if finite.size > 1 else math.nan
                intervals[str(k)][key] = bootstrap(lambda idx, v=values: nan_mean(v[idx]), len(values), resamples,
                                                   seed).as_dict()
    # nnU-Net's plain mean over labels: NaN (written null) when a label's mean is NaN, i.e. it is empty in every case;
    # a label no reference annotates is left out (partially annotated references score their annotated labels only)
    scored = {k: sum("not_annotated" not in row["metrics"][k]["flags"] for row in per_case) for k in FOREGROUND}
    in_mean = [k for k in FOREGROUND if scored[k]] or list(FOREGROUND)
    foreground_mean = {key: float(np.mean([mean[str(k)][key] for k in in_mean])) for key in mean["1"]}
    flags = [{"case": row["pair"].name, "label": k, "flags": row["metrics"][k]["flags"]}
             for row in per_case for k in FOREGROUND if row["metrics"][k]["flags"]]
    undefined = [k for k in in_mean if not math.isfinite(mean[str(k)]["Dice"])]
    if undefined:
        flags.append({"case": None, "label": undefined, "flags": ["foreground_mean_undefined: label(s) "
                      + ", ".join(LABELS[k] for k in undefined) + " empty in every case (nnU-Net gives NaN)"]})
    return {
        "metric_per_case": metric_per_case,
        "mean": mean,
        "foreground_mean": foreground_mean,
        "volgan": {
            "n_cases": len(per_case),
            "labels": {str(k): LABELS[k] for k in FOREGROUND},
            "scored_cases": {str(k): n for k, n in scored.items()},
            "sd": spread,
            "confidence_intervals": intervals,
            "flags": flags,
            "settings": {"nsd_tolerance_mm": tolerance_mm, "bootstrap_resamples": resamples, "bootstrap_seed": seed,
                         "confidence_level": 0.95},
            "definitions": DEFINITIONS,
        },
    }


def classification_note(per_case: list[dict], classes) -> str | None:
    """Why the report holds segmentation alone, or None when classification figures are computed: they need
    ``classes`` (``volgan infer``'s table) and a reference with tumor_type for every case or, without it, cases
    both with and without tumor label 5 (segmentation-only data sets have neither).

    Parameters
    ----------
    per_case : list[dict]
        the per-case rows.
    classes : dict | None
        the tumor-probability table (:func:`read_class_table`), or None.

    Returns
    -------
    str | None
        the reason, or None.
    """
    if classes is None:
        return "segmentation only: no --classes table of tumor probabilities was given"
    if all(row["pair"].tumor_type is not None for row in per_case):
        return None
    if len({row["ref_tumor"] for row in per_case}) == 2:
        return None
    kind = "with" if per_case[0]["ref_tumor"] else "without"
    return (f"segmentation only: the reference has no tumor_type and every case is {kind} tumor label 5, so no "
            "tumor classification is defined")


def classify(per_case: list[dict], table: dict[str, np.ndarray], resamples: int, seed: int, source) -> dict:
    """The classification figures of ``volgan infer``'s probabilities against the references' tumor types (or, without
    them, against whether the reference holds tumor label 5).

    Parameters
    ----------
    per_case : list[dict]
        the per-case rows.
    table : dict[str, np.ndarray]
        {case name: probabilities (4,)} (:func:`read_class_table`).
    resamples : int
        the bootstrap draws of the confidence intervals.
    seed : int
        fixes the draws.
    source : str | os.PathLike
        the table's file, named in errors.

    Returns
    -------
    dict
        ``n_cases``, ``tumor_type_known``, ``metrics`` (value and 95% interval each), ``confusion_matrix`` (4 × 4, None
        without tumor types) and ``per_case`` probabilities.

    Raises
    ------
    VolganInputError
        naming ``source``, when a case has no probabilities.
    """
    names = [row["pair"].name for row in per_case]
    missing = [n for n in names if n not in table]
    if missing:
        raise VolganInputError(source, f"no probabilities for case {missing[0]!r} ({len(missing)} missing)")
    probabilities = np.stack([table[n] for n in names])
    types = [row["pair"].tumor_type for row in per_case]
    known_types = all(t is not None for t in types)
    truth = np.array(types if known_types else [int(row["ref_tumor"]) for row in per_case], dtype=np.int64)
    if not known_types:  # without tumor_type in the reference, only the binary tumor figures are defined
        probabilities = np.stack([probabilities[:, 0], 1 - probabilities[:, 0], 0 * probabilities[:, 0],
                                  0 * probabilities[:, 0]], axis=1)
    figures = classification_metrics(probabilities, truth, resamples, seed)
    result = {name: interval.as_dict() for name, interval in figures.items()}
    if not known_types:
        for name in ("type_accuracy", "macro_auc_tumor_type"):
            result[name] = {"value": None, "ci_low": None, "ci_high": None}
    return {
        "n_cases": len(names),
        "tumor_type_known": known_types,
        "metrics": result,
        "confusion_matrix": confusion_matrix(truth, probabilities.argmax(axis=1)).tolist() if known_types else None,
        "per_case": [{"case": n, "tumor_type": int(t), "probabilities": [round(float(p), 6) for p in probs]}
                     for n, t, probs in zip(names, truth, probabilities, strict=True)],
        "_roc": {"scores": (1 - probabilities[:, 0]).tolist(), "truth": (truth != 0).astype(int).tolist(),
                 "probabilities": probabilities.tolist(), "types": truth.tolist()},
    }


def per_case_csv(per_case: list[dict]) -> str:
    """The per-case table as CSV: one row per case and label, every segmentation metric, the voxel counts and the flags.

    Parameters
    ----------
    per_case : list[dict]
        the per-case rows.

    Returns
    -------
    str
        the CSV text; undefined values are empty cells.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["case", "label", "label_name", *SEG_METRICS, *COUNT_KEYS, "flags"])
    for row in per_case:
        for k, m in row["metrics"].items():
            writer.writerow([row["pair"].name, k, LABELS[k], *["" if not math.isfinite(m[key]) else f"{m[key]:.6g}"
                                                               for key in SEG_METRICS],
                             *[m[key] for key in COUNT_KEYS], ";".join(m["flags"])])
    return buffer.getvalue()


def report_tables(summary: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) tables shared by the Markdown and HTML reports.

    Parameters
    ----------
    summary : dict
        the report's summary.

    Returns
    -------
    list[tuple[str, list[str], list[list[str]]]]
        (title, column names, rows of cells) per table.
    """
    v = summary["volgan"]
    rows = []
    for k in FOREGROUND:
        key = str(k)
        cells = [f"{k} {LABELS[k]}"]
        for metric in SEG_METRICS:
            ci = v["confidence_intervals"][key][metric]
            digits = 2 if metric == "HD95" else 3
            cells.append(f"{fmt(summary['mean'][key][metric], digits)} ± {fmt(v['sd'][key][metric], digits)} "
                         f"[{fmt(ci['ci_low'], digits)}, {fmt(ci['ci_high'], digits)}]")
        cells.append(str(sum(1 for f in v["flags"] if f["label"] == k)))
        rows.append(cells)
    tables = [("Segmentation (mean ± sd [95% CI] over cases)", ["label", *SEG_METRICS[:2], "HD95 (mm)",
               f"NSD @ {v['settings']['nsd_tolerance_mm']} mm", "flagged cases"], rows)]
    cls = summary.get("classification")
    if cls:
        tables.append(("Classification (value [95% CI])", ["metric", "value", "95% CI"], [
            [name, fmt(m["value"]), f"[{fmt(m['ci_low'])}, {fmt(m['ci_high'])}]"]
            for name, m in cls["metrics"].items()]))
        if cls["confusion_matrix"]:
            names = list(TUMOR_TYPES.values())
            tables.append(("Confusion matrix of tumor_type (rows: reference, columns: prediction)",
                           ["reference \\ predicted", *names],
                           [[names[i], *map(str, r)] for i, r in enumerate(cls["confusion_matrix"])]))
    return tables


def _header(summary: dict) -> list[str]:
    v = summary["volgan"]
    s = v["settings"]
    fm = summary["foreground_mean"]
    return [f"{v['n_cases']} cases; foreground mean Dice {fmt(fm['Dice'])}, IoU {fmt(fm['IoU'])}, "
            f"HD95 {fmt(fm['HD95'], 2)} mm, NSD {fmt(fm['NSD'])}.",
            f"Bootstrap: {s['bootstrap_resamples']} resamples, seed {s['bootstrap_seed']}, 95% percentile intervals. "
            f"{len(v['flags'])} (case, label) pairs are flagged (see summary.json).",
            *([partial_note(v["scored_cases"], v["n_cases"])] if any(
                n < v["n_cases"] for n in v.get("scored_cases", {}).values()) else []),
            *([f"Classification: {v['classification_note']}."] if v.get("classification_note") else [])]


def partial_note(scored_cases: dict[str, int], n_cases: int) -> str:
    """The report's sentence on partially annotated references: which labels were scored in how many cases.

    Parameters
    ----------
    scored_cases : dict[str, int]
        {label number: cases whose reference annotates it}.
    n_cases : int
        the cases evaluated.

    Returns
    -------
    str
        one sentence.
    """
    shown = ", ".join(f"{LABELS[int(k)]} {n}" for k, n in scored_cases.items())
    return (f"Partially annotated references: each label is scored only in the cases whose reference annotates it "
            f"(of {n_cases}: {shown}); a label a reference leaves out is neither a hit nor a false positive, and "
            "the foreground mean covers the labels scored at least once.")

