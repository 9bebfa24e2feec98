"""Report pages and figures: number formatting, Markdown and self-contained HTML pages, the evaluation
report's figures (confusion matrix, ROC curves, best and worst cases) and :func:`save_figure`, which every
figure of volgan goes through (PNG written atomically).
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path

import numpy as np

from volgan.data.io import (
    read_volume,
)
from volgan.evaluation.metrics import (
    FOREGROUND,
    nan_mean,
)
from volgan.labels import TUMOR_LABEL, TUMOR_TYPES


def fmt(x, digits: int = 3) -> str:
    """A number with ``digits`` decimals; ``–`` for None, NaN and infinities.

    Parameters
    ----------
    x : float | None
        the number.
    digits : int
        decimals shown.

    Returns
    -------
    str
        the text.
    """
    return "–" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{digits}f}"


def markdown_page(title: str, header: list[str], tables, figures: dict[str, str], definitions: list[str],
                  opening: list[str] = (), lead_figures: dict[str, str] | None = None) -> str:
    """A Markdown report: header lines, the opening (its answer in sentences, then its lead figures), (title,
    header, rows) tables, the other figures under ``figures/``, definitions.

    Parameters
    ----------
    title : str
        the page's title.
    header : list[str]
        lines under the title.
    tables : list[tuple[str, list[str], list[list[str]]]]
        (title, column names, rows of cells).
    figures : dict[str, str]
        {file name under ``figures/``: title}.
    definitions : list[str]
        the metric definitions, one per line.
    opening : list[str]
        sentences that answer the report's question, shown first as a list ("The answer").
    lead_figures : dict[str, str] | None
        {file name under ``figures/``: title} shown right after the opening.

    Returns
    -------
    str
        the page.
    """
    lines = [f"# {title}", "", *header, ""]
    if opening:
        lines += ["## The answer", ""] + [f"- {s}" for s in opening] + [""]
    for n, t in (lead_figures or {}).items():
        lines += [f"![{t}](figures/{n})", ""]
    for name, head, rows in tables:
        lines += [f"## {name}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        lines.append("")
    if figures:
        lines += ["## Figures", ""] + [f"![{t}](figures/{n})" for n, t in figures.items()] + [""]
    lines += ["## Definitions", ""] + [f"- {d}" for d in definitions] + [""]
    return "\n".join(lines)


def html_page(title: str, header: list[str], tables, figures: dict[str, str], figure_dir: Path,
              definitions: list[str], opening: list[str] = (), lead_figures: dict[str, str] | None = None) -> str:
    """The same report as one self-contained HTML file (figures embedded as base64 PNG). With an ``opening``, the
    answer and its lead figures come first and each table folds (``<details>``, open on a click).

    Parameters
    ----------
    title : str
        the page's title.
    header : list[str]
        lines under the title.
    tables : list[tuple[str, list[str], list[list[str]]]]
        (title, column names, rows of cells).
    figures : dict[str, str]
        {file name: title}.
    figure_dir : Path
        the folder holding the figures' PNG files.
    definitions : list[str]
        the metric definitions, one per line.
    opening : list[str]
        sentences that answer the report's question, shown first.
    lead_figures : dict[str, str] | None
        {file name: title} shown right after the opening.

    Returns
    -------
    str
        the page.
    """

    def image(name: str, caption: str) -> str:
        data = base64.b64encode((figure_dir / name).read_bytes()).decode()
        return f"<img alt='{html.escape(caption)}' src='data:image/png;base64,{data}'>"

    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse;"
             "margin:1em 0}td,th{border:1px solid #bbb;padding:4px 8px;text-align:right}th{background:#eee}"
             "td:first-child{text-align:left}img{max-width:100%}.answer li{margin:0.4em 0;font-size:1.05em}"
             "summary{font-size:1.2em;font-weight:bold;margin:0.8em 0;cursor:pointer}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>"]
    parts += [f"<p>{html.escape(line)}</p>" for line in header]
    if opening:
        parts.append("<h2>The answer</h2><ul class='answer'>"
                     + "".join(f"<li>{html.escape(s)}</li>" for s in opening) + "</ul>")
    parts += [image(name, caption) for name, caption in (lead_figures or {}).items()]
    for name, head, rows in tables:
        table = ("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"
                 + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
                 + "</table>")
        parts.append(f"<details><summary>{html.escape(name)}</summary>{table}</details>" if opening else
                     f"<h2>{html.escape(name)}</h2>{table}")
    for name, caption in figures.items():
        parts.append(f"<h2>{html.escape(caption)}</h2>{image(name, caption)}")
    parts.append("<h2>Definitions</h2><ul>" + "".join(f"<li>{html.escape(d)}</li>" for d in definitions) + "</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)


def make_figures(per_case: list[dict], summary: dict, folder: Path) -> dict[str, str]:
    """Write PNG figures into ``folder``; returns {file name: title}.

    Parameters
    ----------
    per_case : list[dict]
        the report's per-case rows.
    summary : dict
        the report's summary (:func:`volgan.evaluation.report.summarize`, with the classification).
    folder : Path
        where the PNG files go.

    Returns
    -------
    dict[str, str]
        {file name: title} of the figures written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = {}
    cls = summary.get("classification")
    if cls:
        roc = cls["_roc"]
        fig, ax = plt.subplots(figsize=(5, 5))
        _roc_curve(ax, np.array(roc["scores"]), np.array(roc["truth"]),
                   f"tumor (AUC {fmt(cls['metrics']['auc_tumor']['value'])})")
        if cls["tumor_type_known"]:
            probs, types = np.array(roc["probabilities"]), np.array(roc["types"])
            for k, name in TUMOR_TYPES.items():
                if k and 0 < (types == k).sum() < len(types):
                    _roc_curve(ax, probs[:, k], (types == k).astype(int), f"{name} vs rest", dashed=True)
        ax.plot([0, 1], [0, 1], color="grey", lw=0.5)
        ax.set(xlabel="1 − specificity", ylabel="sensitivity", title="ROC")
        ax.legend(fontsize=7, loc="lower right")
        save_figure(fig, folder / "roc.png")
        figures["roc.png"] = "ROC curves"
        if cls["confusion_matrix"]:
            matrix = np.array(cls["confusion_matrix"])
            fig, ax = plt.subplots(figsize=(5, 4.5))
            ax.imshow(matrix, cmap="Blues")
            names = [n[:14] for n in TUMOR_TYPES.values()]
            ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
            ax.set_yticks(range(len(names)), names, fontsize=8)
            for (i, j), count in np.ndenumerate(matrix):
                ax.text(j, i, str(count), ha="center", va="center", color="black")
            ax.set(xlabel="predicted", ylabel="reference", title="tumor_type confusion matrix")
            save_figure(fig, folder / "confusion_matrix.png")
            figures["confusion_matrix.png"] = "Confusion matrix"
    scores = [nan_mean(np.array([row["metrics"][k]["Dice"] for k in FOREGROUND])) for row in per_case]
    order = np.argsort(np.nan_to_num(scores, nan=-1.0))
    picks = {"best": order[-1], "worst": order[0]}
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.5))
    for ax, (title, idx) in zip(axes, picks.items(), strict=True):
        _overlay(ax, per_case[idx], f"{title}: {per_case[idx]['pair'].name} (Dice {fmt(scores[idx])})")
    save_figure(fig, folder / "overlays.png")
    figures["overlays.png"] = "Best and worst cases (mid-slice; fill: reference, contour: prediction)"
    return figures


def _roc_curve(ax, scores: np.ndarray, truth: np.ndarray, name: str, dashed: bool = False) -> None:
    if truth.min() == truth.max():
        return
    order = np.argsort(-scores, kind="stable")
    tps = np.concatenate([[0], np.cumsum(truth[order])])
    fps = np.concatenate([[0], np.cumsum(1 - truth[order])])
    ax.plot(fps / fps[-1], tps / tps[-1], ls="--" if dashed else "-", label=name)


def _overlay(ax, row: dict, title: str) -> None:
    pair = row["pair"]
    ref = read_volume(pair.ref, label=True).array
    pred = read_volume(pair.pred, label=True).array
    tumor = np.argwhere(ref == TUMOR_LABEL)
    axis = 0  # the first stored axis: sagittal for RAS and LPS volumes
    index = int(np.median(tumor[:, axis])) if len(tumor) else ref.shape[axis] // 2
    background = read_volume(pair.image).array if pair.image is not None else ref.astype(np.float32)
    take = [slice(None)] * 3
    take[axis] = index
    take = tuple(take)
    ax.imshow(background[take].T, origin="lower", cmap="gray")
    ax.imshow(np.ma.masked_equal(ref[take].T, 0), origin="lower", cmap="tab10", vmin=0, vmax=9, alpha=0.35)
    ax.contour(pred[take].T, levels=np.arange(0.5, 6), cmap="tab10", vmin=0, vmax=9, linewidths=0.8)
    ax.set_title(title, fontsize=9)
    ax.axis("off")


def save_figure(fig, path: Path) -> None:
    """Save a matplotlib figure as a PNG (90 dpi, tight layout) and close it.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
        the figure.
    path : Path
        the PNG file.
    """
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    import matplotlib.pyplot as plt

    plt.close(fig)
