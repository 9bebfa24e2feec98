"""The study report's opening: a few plain sentences that answer the question for this run (does adding GAN volumes
help, at which share, against classical augmentation, and does it hold on real MRI), each statement beyond noise
with its number, and a forest plot of the papers' claims (each claim's paired difference with its 95% CI).

Also the reading of result rows that the opening and the findings share: which rows, how a difference is written,
and which metrics the models did not learn.
"""

from __future__ import annotations

import math
from pathlib import Path

from volgan.evaluation.rendering import fmt
from volgan.study.real_report import healthy_calls, real_only_arm

METRICS = {"accuracy": "accuracy", "precision": "precision", "recall": "recall", "f1": "F1", "auc": "AUC",
           "type_accuracy": "tumor-type accuracy", "tumor_dice": "tumor Dice", "tumor_iou": "tumor IoU",
           "anatomy_dice": "anatomy Dice"}
KEY_METRICS = ("accuracy", "f1", "auc", "tumor_dice", "anatomy_dice")
# below these a metric was not learned in any configuration, so it cannot separate the arms
LEARNED_FLOOR = {"tumor_dice": 0.05, "anatomy_dice": 0.5, "auc": 0.6}


def number(value) -> float:
    """``value`` as a float, NaN for None.

    Parameters
    ----------
    value : float | int | None
        a figure from study.json.

    Returns
    -------
    float
        the figure.
    """
    return math.nan if value is None else float(value)


def pick(rows: list[dict], section: str, severity: str = "clean", metric: str | None = None,
         pool: int | None = None) -> list[dict]:
    """The result rows of one section (``"sweep"`` or ``"augmentation"``) at one artifact severity, optionally of
    one metric and one real-pool size.

    Parameters
    ----------
    rows : list[dict]
        study.json's ``results``.
    section : str
        ``"sweep"`` or ``"augmentation"``.
    severity : str
        ``"clean"``, ``"mild"``, ``"moderate"`` or ``"severe"``.
    metric : str | None
        a key of :data:`METRICS` (None: all).
    pool : int | None
        a real-pool size (None: all).

    Returns
    -------
    list[dict]
        the matching rows, in order.
    """
    return [r for r in rows if r["section"] == section and r["severity"] == severity
            and (metric is None or r["metric"] == metric) and (pool is None or r["real_pool"] == pool)]


def diff_cell(difference: dict | None) -> str:
    """A paired difference in words: ``+0.031 [0.004, 0.060] better``, ``within noise`` when its CI holds 0, or
    ``reference`` for the reference arm itself.

    Parameters
    ----------
    difference : dict | None
        ``{mean, ci_low, ci_high, within_noise}``, or None for the reference.

    Returns
    -------
    str
        the cell.
    """
    if not difference:
        return "reference"
    sign = "+" if (difference["mean"] or 0) >= 0 else ""
    mean = "–" if not math.isfinite(number(difference["mean"])) else f"{sign}{difference['mean']:.3f}"
    verdict = "within noise" if difference["within_noise"] else ("better" if difference["mean"] > 0 else "worse")
    return f"{mean} [{fmt(difference['ci_low'])}, {fmt(difference['ci_high'])}] {verdict}"


def unlearned(rows: list[dict]) -> list[tuple[str, float, float]]:
    """The metrics below their floor (:data:`LEARNED_FLOOR`) in every clean configuration.

    Parameters
    ----------
    rows : list[dict]
        study.json's ``results``.

    Returns
    -------
    list[tuple[str, float, float]]
        (metric, best mean, floor) for each.
    """
    out = []
    for metric, floor in LEARNED_FLOOR.items():
        best = max((number(r["mean"]) for r in pick(rows, "sweep", metric=metric)
                    + pick(rows, "augmentation", metric=metric)), default=math.nan)
        if not best >= floor:
            out.append((metric, best, floor))
    return out


def _beyond(rows: list[dict], name_arm: bool = True) -> list[str]:
    """``METRIC at ARM +0.031 [0.004, 0.060] better`` (without `` at ARM`` unless ``name_arm``) for each row whose
    difference lies beyond noise."""
    return [" ".join([METRICS[r["metric"]], *(["at", r["arm"]] if name_arm else []), diff_cell(r["difference"])])
            for r in rows if r.get("difference") and not r["difference"]["within_noise"] and r["metric"] in KEY_METRICS]


def answer(document: dict, pools: list[int]) -> list[str]:
    """Three to five plain sentences answering the study's question for this run.

    Parameters
    ----------
    document : dict
        study.json's content (``results``, ``claims``, ``n``, ``real_mri``).
    pools : list[int]
        the augmentation comparison's real-pool sizes.

    Returns
    -------
    list[str]
        the sentences: what the models did not learn (if anything, first, as it qualifies the rest), the sweep,
        the augmentation comparison at the scarcest pool, the papers' claims, and the real-MRI check (if run).
    """
    rows, sentences = document["results"], []
    sweep = _beyond(pick(document["results"], "sweep"))
    sentences.append("Adding GAN volumes in place of real ones (the ratio sweep): against real only (100:0), "
                     + (f"beyond noise: {'; '.join(sweep[:4])}"
                        + (f" and {len(sweep) - 4} more" if len(sweep) > 4 else "")
                        + "; every other mix and metric is within noise." if sweep else
                        "no mix differs beyond noise in accuracy, F1, AUC, tumor Dice or anatomy Dice."))
    if pools:
        pool, parts = min(pools), []
        for arm, name in (("gan", "GAN volumes"), ("classical", "classical augmentation"), ("both", "both")):
            found = _beyond([r for r in pick(rows, "augmentation", pool=pool) if r["arm"] == arm], name_arm=False)
            parts.append(f"{name} {'; '.join(found) if found else 'nothing beyond noise'}")
        sentences.append(f"With {pool} real training volumes, against no augmentation: " + ", ".join(parts) + ".")
    claims = document["claims"]
    verdicts = {v: [c for c in claims if c["verdict"] == v] for v in ("supported", "contradicted", "within noise")}
    decided = [f"{c['claim']} ({c['metric']} {c['comparison']}: {number(c['difference']['mean']):+.3f} "
               f"[{fmt(c['difference']['ci_low'])}, {fmt(c['difference']['ci_high'])}], {c['verdict']})"
               for c in verdicts["supported"] + verdicts["contradicted"]]
    sentences.append(f"The papers' {len(claims)} claim tests: {len(verdicts['supported'])} supported, "
                     f"{len(verdicts['contradicted'])} contradicted, {len(verdicts['within noise'])} within noise"
                     + (f": {'; '.join(decided[:3])}" + (f"; {len(decided) - 3} more" if len(decided) > 3 else "")
                        if decided else "") + ".")
    failed = unlearned(rows)
    if failed:  # first: it qualifies every sentence after it
        sentences.insert(0, "Caution: " + ", ".join(f"{METRICS[m]} (best {fmt(best)}, below {floor})"
                                                 for m, best, floor in failed)
                         + " were not learned at this training budget, so they cannot separate the arms.")
    real = document.get("real_mri")
    if real and real.get("per_arm"):
        called, of = healthy_calls(real)
        reference = real_only_arm(real)
        cord = []
        if reference is not None:
            for scan, result in reference["scans"].items():
                dice = (result.get("dice") or {}).get("cord")
                if dice is not None:
                    cord.append(f"{scan} {fmt(dice)}")
        sentences.append("On real MRI: " + (f"the real-only models find the cord at Dice {', '.join(cord)}; "
                                            if cord else "")
                         + (f"{called} of {of} checks of a healthy real scan called a tumor"
                            + (", so their tumor call does not carry over from the phantoms." if called else ".")
                            if of else "no healthy real scan was checked."))
    return sentences


def forest_plot(claims: list[dict], path: Path) -> Path:
    """Each claim test's paired difference with its 95% CI, one row each, coloured by verdict, into ``path`` (PNG).

    Parameters
    ----------
    claims : list[dict]
        study.json's ``claims``.
    path : Path
        the PNG to write.

    Returns
    -------
    Path
        ``path``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"supported": "tab:green", "contradicted": "tab:red", "within noise": "0.45"}
    fig, ax = plt.subplots(figsize=(10, 0.42 * len(claims) + 1.2))
    for i, claim in enumerate(claims):
        d = claim["difference"]
        mean, low, high = number(d["mean"]), number(d["ci_low"]), number(d["ci_high"])
        y = len(claims) - 1 - i
        if math.isfinite(low) and math.isfinite(high):
            ax.plot([low, high], [y, y], color=colours[claim["verdict"]], lw=2)
        if math.isfinite(mean):
            ax.plot(mean, y, "o", color=colours[claim["verdict"]])
    labels = [f"{c['claim'][:60]}{'…' if len(c['claim']) > 60 else ''} ({c['metric']})" for c in claims]
    ax.set_yticks(range(len(claims)), labels[::-1], fontsize=8)
    ax.axvline(0.0, color="k", lw=0.8)
    ax.set_xlabel("paired difference (the claim's comparison), 95% CI", fontsize=9)
    fig.suptitle("The papers' claims on this study: green supported, red contradicted, grey within noise",
                 fontsize=10)
    finite = [number(c["difference"][k]) for c in claims for k in ("ci_low", "ci_high")]
    finite = [v for v in finite if math.isfinite(v)]
    if finite:
        span = max(abs(min(finite)), abs(max(finite)), 1e-3) * 1.1
        ax.set_xlim(-span, span)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path

