"""Label maps translated into volgan's labels: a label map (a preset carrying a public data set's published label
table, or a JSON file ``{their value: volgan label}``) read and checked (:func:`load_label_map`), the labels it
annotates (:func:`mapped_labels`) and an array's values mapped, with the values it does not map counted
(:func:`map_labels`).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import numpy as np

from volgan.errors import VolganInputError
from volgan.labels import CORD, CSF, DISC, LABELS, NUM_LABELS, VERTEBRA, annotated_labels


def _spread(values, label: int) -> dict[int, int]:
    return {int(v): label for v in values}


# The published label tables, each mapped onto volgan's six labels. Neither table has a tumor label.
LABEL_MAP_PRESETS: dict[str, dict[int, int]] = {
    # SPIDER: van der Graaf et al., "Lumbar spine segmentation in MR images: a dataset and a public benchmark",
    # Scientific Data 11, 264 (2024), arXiv 2306.12217. Masks: vertebrae 1-25, spinal canal 100, partially
    # visible vertebrae 101-125, intervertebral discs 201-225. The canal mask holds cord and CSF together; it is
    # mapped to csf, so a model trained on it learns no cord label.
    "spider": {0: 0, **_spread(range(1, 26), VERTEBRA), 100: CSF, **_spread(range(101, 126), VERTEBRA),
               **_spread(range(201, 226), DISC)},
    # VerSe: Sekuboyina et al., "VerSe: A Vertebrae labelling and segmentation benchmark for multi-detector CT
    # images", Medical Image Analysis 73 (2021), arXiv 2001.09193. Vertebrae C1-C7 1-7, T1-T12 8-19, L1-L6 20-25,
    # sacrum 26, coccyx 27, T13 28; no discs, cord or canal.
    "verse": {0: 0, **_spread(range(1, 29), VERTEBRA)},
    # TotalSpineSeg: Warszawer et al., "TotalSpineSeg: Robust Spine Segmentation with Landmark-Based Labeling in
    # MRI" (2025), and the "List of Classes" of github.com/neuropoly/totalspineseg: spinal cord 1, spinal canal 2
    # (the canal less the cord), vertebrae C1-C7 11-17, T1-T12 21-32, L1-L5 41-45, sacrum 50, discs C2-C3..C6-C7
    # 63-67, C7-T1..T11-T12 71-82, T12-L1..L4-L5 91-95, L5-S 100.
    "totalspineseg": {0: 0, 1: CORD, 2: CSF,
                      **_spread([*range(11, 18), *range(21, 33), *range(41, 46), 50], VERTEBRA),
                      **_spread([*range(63, 68), *range(71, 83), *range(91, 96), 100], DISC)},
}


def load_label_map(spec: str | os.PathLike | None) -> dict[int, int] | None:
    """A preset's table (``"spider"``, ``"verse"``, ``"totalspineseg"``) or a JSON file's ``{their value: volgan
    label}`` (labels as numbers 0-5 or names such as ``"disc"``); None means the values already are volgan's.

    Parameters
    ----------
    spec : str | os.PathLike | None
        a preset name, a JSON file, or None.

    Returns
    -------
    dict[int, int] | None
        {source value: volgan label 0–5}, or None for volgan's own values.

    Raises
    ------
    VolganInputError
        naming the file, when it is missing, not a JSON object, has a key that is not an integer, or maps onto something
        that is not a volgan label.
    """
    if spec is None:
        return None
    if str(spec).lower() in LABEL_MAP_PRESETS:
        return dict(LABEL_MAP_PRESETS[str(spec).lower()])
    path = Path(spec)
    if not path.is_file():
        raise VolganInputError(path, "no such label map; expected a JSON file or one of "
                                     + ", ".join(LABEL_MAP_PRESETS))
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise VolganInputError(path, f"not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or not doc:
        raise VolganInputError(path, "expected a JSON object {their value: volgan label}")
    names = {name: k for k, name in LABELS.items()}
    mapping = {0: 0}  # background is implied; the file may map 0 elsewhere
    for theirs, ours in doc.items():
        try:
            key = int(theirs)
        except ValueError:
            raise VolganInputError(path, f"key {theirs!r} is not an integer label value") from None
        value = names.get(ours, ours) if isinstance(ours, str) else ours
        if isinstance(value, bool) or not isinstance(value, int) or value not in LABELS:
            raise VolganInputError(path, f"value {ours!r} for {theirs} is not a volgan label "
                                         f"(0-{NUM_LABELS - 1} or one of {', '.join(LABELS.values())})")
        mapping[key] = value
    return mapping


def mapped_labels(mapping: dict[int, int]) -> tuple[str, ...] | None:
    """The labels a label map's translation can produce: what the imported maps annotate (None: all of them).

    Parameters
    ----------
    mapping : dict[int, int]
        {source value: volgan label}.

    Returns
    -------
    tuple[str, ...] | None
        the annotated labels' names, or None when the map reaches every foreground label.
    """
    targets = set(mapping.values()) - {0}
    return annotated_labels(targets) if targets else None


def map_labels(values: np.ndarray, mapping: dict[int, int] | None) -> tuple[np.ndarray, Counter]:
    """Translate a label array (X, Y, Z; integer values) through ``mapping`` (None: the values 0-5 are kept).

    Returns the uint8 volgan label map and a Counter {value: voxels} of the values not in the map, which become
    background (0).

    Parameters
    ----------
    values : np.ndarray
        the source label map (X, Y, Z), integer values.
    mapping : dict[int, int] | None
        {source value: volgan label}, or None.

    Returns
    -------
    tuple[np.ndarray, Counter]
        the label map (X, Y, Z, uint8, values 0–5) and {unmapped value: voxel count}.
    """
    uniques, inverse = np.unique(values, return_inverse=True)
    table = np.zeros(len(uniques), dtype=np.uint8)
    missing = Counter()
    counts = np.bincount(inverse.ravel(), minlength=len(uniques))
    for n, value in enumerate(uniques.tolist()):
        target = mapping.get(int(value)) if mapping is not None else (int(value) if 0 <= value < NUM_LABELS else None)
        if target is None:
            missing[int(value)] = int(counts[n])
        else:
            table[n] = target
    return table[inverse.reshape(values.shape)], missing
