"""Dataset summaries: per-case statistics and the table ``volgan phantom`` and ``volgan check`` print."""

from __future__ import annotations

from collections import Counter

import numpy as np

from volgan.labels import LABELS, TUMOR_LABEL, TUMOR_TYPES


def ras_spacing(affine: np.ndarray) -> tuple[float, float, float]:
    """The voxel size in mm along the RAS axes (R, A, S) of a grid whose voxel axes lie closest to them.

    Parameters
    ----------
    affine : np.ndarray
        4×4 voxel-to-RAS affine (mm).

    Returns
    -------
    tuple[float, float, float]
        mm along R, A and S.
    """
    import nibabel as nib

    voxel = np.linalg.norm(affine[:3, :3], axis=0)
    out = [0.0, 0.0, 0.0]
    for axis, (world, _) in enumerate(nib.orientations.io_orientation(affine)):
        out[int(world)] = float(voxel[axis])
    return tuple(out)  # type: ignore[return-value]


def case_stats(image: np.ndarray, label: np.ndarray, spacing: tuple[float, float, float]) -> dict:
    """Shape, spacing (mm), voxels per label, tumor volume (mm³) and the image's 1st/99th percentiles.

    Parameters
    ----------
    image : np.ndarray
        the image (X, Y, Z).
    label : np.ndarray
        its label map (X, Y, Z), labels 0–5.
    spacing : tuple[float, float, float]
        the voxel size in mm.

    Returns
    -------
    dict
        ``shape``, ``spacing`` (mm), ``label_voxels`` (per label name), ``tumor_mm3``, ``intensity_p1`` and
        ``intensity_p99``.
    """
    counts = np.bincount(label.ravel(), minlength=len(LABELS))
    voxel_mm3 = float(np.prod(spacing))
    p1, p99 = np.percentile(image, [1, 99])
    return {
        "shape": list(image.shape),
        "spacing": [round(float(s), 4) for s in spacing],
        "label_voxels": {LABELS[k]: int(counts[k]) for k in LABELS},
        "tumor_mm3": round(float(counts[TUMOR_LABEL]) * voxel_mm3, 2),
        "intensity_p1": round(float(p1), 3),
        "intensity_p99": round(float(p99), 3),
    }


def format_summary(cases: list, stats: list[dict], header: str) -> str:
    """A plain-text table: cases per split and class, geometry, tumor sizes, intensity range.

    Parameters
    ----------
    cases : list
        the cases (:class:`~volgan.data.datalist.Case`).
    stats : list[dict]
        their :func:`case_stats`, in the same order.
    header : str
        the first line (the data set's name and path).

    Returns
    -------
    str
        the table, lines joined by newlines.
    """
    lines = [header]
    names = [TUMOR_TYPES[k] for k in TUMOR_TYPES] + ["unknown"]
    counts = Counter((c.split, TUMOR_TYPES.get(c.tumor_type, "unknown")) for c in cases)
    shown = [n for n in names if any(counts[(s, n)] for s in ("training", "test"))]
    widths = [len(n) + 2 for n in shown]
    lines.append("  " + "split".ljust(10) + "".join(n.rjust(w) for n, w in zip(shown, widths, strict=True))
                 + "total".rjust(8))
    for split in ("training", "test"):
        row = [counts[(split, n)] for n in shown]
        lines.append("  " + split.ljust(10) + "".join(str(v).rjust(w) for v, w in zip(row, widths, strict=True))
                     + str(sum(row)).rjust(8))
    shapes = Counter("×".join(map(str, s["shape"])) for s in stats)
    spacings = Counter("×".join(f"{v:g}" for v in s["spacing"]) for s in stats)
    lines.append(f"  shape      {_common(shapes)}   spacing (mm) {_common(spacings)}")
    orientations = Counter(s.get("orientation", "?") for s in stats)
    lines.append(f"  orientation {_common(orientations)}")
    along_ras = [s["ras_spacing_mm"] for s in stats if "ras_spacing_mm" in s]
    if along_ras:
        median = np.median(along_ras, axis=0)
        lines.append(f"  voxel (mm) along R, A, S: median {'×'.join(f'{v:.3g}' for v in median)} (volgan study's "
                     f"--size and --spacing go in this order)")
    tumors = np.array([s["tumor_mm3"] for s in stats if s["tumor_mm3"] > 0])
    if tumors.size:
        lines.append(f"  tumor volume (mm³) median {np.median(tumors):.0f}, range {tumors.min():.0f}–{tumors.max():.0f}"
                     f" in {tumors.size} cases")
    low = min(s["intensity_p1"] for s in stats)
    high = max(s["intensity_p99"] for s in stats)
    lines.append(f"  intensity  1st–99th percentile within {low:g}–{high:g}")
    return "\n".join(lines)


def _common(counter: Counter) -> str:
    items = counter.most_common()
    text = ", ".join(f"{k} ({v})" for k, v in items[:4]) if len(items) > 1 else items[0][0]
    return text + (f", … {len(items) - 4} more" if len(items) > 4 else "")


def readiness(cases: list) -> list[str]:
    """What the cases hold and what they are enough for: lines for ``volgan check``.

    Segmentation training needs training cases with a label map; tumor classification needs a tumor_type on
    them, of two or more classes (cases without one train the segmentation only); ``volgan evaluate`` scores a
    test split with label maps.

    Parameters
    ----------
    cases : list
        the cases (:class:`~volgan.data.datalist.Case`).

    Returns
    -------
    list[str]
        one sentence per task: ready, or what is missing.
    """
    training = [c for c in cases if c.split == "training"]
    labeled = [c for c in training if c.label is not None]
    typed = [c for c in labeled if c.tumor_type is not None]
    test = [c for c in cases if c.split == "test" and c.label is not None]
    kinds = Counter("image, label map and tumor_type" if c.label is not None and c.tumor_type is not None
                    else "image and label map (no tumor_type)" if c.label is not None
                    else "image only" for c in cases)
    lines = ["  cases hold: " + "; ".join(f"{n} {k}" for k, n in kinds.most_common())]
    annotation = Counter("every label" if c.annotated is None else ", ".join(c.annotated) + " only"
                         for c in cases if c.label is not None)
    if any(c.annotated is not None for c in cases if c.label is not None):
        lines.append("  labels annotated: " + "; ".join(f"{k} ({n} cases)" for k, n in annotation.most_common())
                     + "; the rest of a partial map is unknown, not background: training and evaluation skip it")
    yes = "yes" if labeled else "no: no training case has a label map"
    lines.append(f"  segmentation training: {yes}" + (f" ({len(labeled)} cases)" if labeled else ""))
    classes = {c.tumor_type for c in typed}
    if len(classes) >= 2:
        part = f" ({len(typed)} of {len(labeled)} cases; the others train the segmentation only)" \
            if len(typed) < len(labeled) else ""
        lines.append(f"  tumor classification training: yes{part}")
    else:
        lines.append("  tumor classification training: no: " + ("no training case has a tumor_type" if not typed
                     else "every training case has the same tumor_type") + "; the classification head is not trained")
    lines.append(f"  volgan evaluate on the test split: {'yes' if test else 'no: no test case has a label map'}"
                 + (f" ({len(test)} cases)" if test else ""))
    return lines
