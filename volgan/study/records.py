"""The records that cross the study's modules, typed: an arm (:class:`Arm`), an arm as planned with the keys of its
stages (:class:`PlannedArm`, what the report stage receives), and one test case's evaluation
(:class:`CaseEvaluation`, a row of a run's ``eval.json``). Stage arguments and files stay plain JSON; these
records are made from them where they are read (``from_dict``) and written back with ``to_dict``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

from volgan.labels import TUMOR_LABEL


@dataclass(frozen=True)
class Arm:
    """One training configuration of the study: a training set, an augmentation preset, a seed."""

    section: str                        # "sweep" or "augmentation"
    arm: str                            # sweep: "100:0" …; augmentation: none|classical|gan|both
    seed: int
    real: tuple[str, ...]               # real case names
    synthetic: tuple[str, ...]          # synthetic case names (from gan_pool's synthetic pool)
    augment: str
    gan_pool: int = 0                   # which GAN's synthetic pool (0: none)
    share: float = 0.0                  # sweep: synthetic share
    real_pool: int = 0                  # augmentation: real-pool size

    @property
    def n_train(self) -> int:
        return len(self.real) + len(self.synthetic)


@dataclass(frozen=True)
class PlannedArm(Arm):
    """An :class:`Arm` with the keys of its stages: the training ``run``, its evaluation (``eval``) and its check on
    real scans (``real_check``)."""

    run: str = ""
    eval: str = ""
    real_check: str = ""

    def to_dict(self) -> dict:
        """The arm as plain JSON data (a stage's arguments).

        Returns
        -------
        dict
            every field, case names as lists.
        """
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> PlannedArm:
        """The arm from :meth:`to_dict`'s data.

        Parameters
        ----------
        data : dict
            the fields by name.

        Returns
        -------
        PlannedArm
            the record.
        """
        names = {f.name for f in fields(cls)}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class CaseEvaluation:
    """One test case's evaluation by one trained model at one artifact ``severity``: the four tumor_type
    ``probabilities`` (none first), the segmentation's tumor evidence in mm³, Dice and IoU per label 1–5 (None
    where the label is empty in both maps) and, where computed, the Grad-CAM tumor share (NaN where it is
    undefined, None where it was not computed)."""

    case: str
    tumor_type: int
    severity: int
    probabilities: tuple[float, ...]
    tumor_evidence_mm3: float
    dice: dict[int, float | None]
    iou: dict[int, float | None]
    gradcam_tumor_share: float | None = None

    @property
    def tumor_dice(self) -> float | None:
        return self.dice.get(TUMOR_LABEL)

    @property
    def tumor_iou(self) -> float | None:
        return self.iou.get(TUMOR_LABEL)

    @property
    def calls_tumor(self) -> bool:
        """Whether the model calls a tumor (P(tumor) ≥ 0.5)."""
        return (1.0 - self.probabilities[0]) >= 0.5

    def to_dict(self) -> dict:
        """The row as ``eval.json`` holds it.

        Returns
        -------
        dict
            labels as string keys; ``gradcam_tumor_share`` only where computed.
        """
        row = {"case": self.case, "tumor_type": self.tumor_type, "severity": self.severity,
               "probabilities": list(self.probabilities), "tumor_evidence_mm3": self.tumor_evidence_mm3,
               "dice": {str(k): v for k, v in self.dice.items()}, "iou": {str(k): v for k, v in self.iou.items()}}
        if self.gradcam_tumor_share is not None:
            share = self.gradcam_tumor_share
            row["gradcam_tumor_share"] = None if math.isnan(share) else share
        return row

    @classmethod
    def from_dict(cls, row: dict) -> CaseEvaluation:
        """The record from a row of ``eval.json``.

        Parameters
        ----------
        row : dict
            the row (:meth:`to_dict`).

        Returns
        -------
        CaseEvaluation
            the record.
        """
        return cls(case=row["case"], tumor_type=int(row["tumor_type"]), severity=int(row["severity"]),
                   probabilities=tuple(float(p) for p in row["probabilities"]),
                   tumor_evidence_mm3=float(row["tumor_evidence_mm3"]),
                   dice={int(k): v for k, v in row["dice"].items()}, iou={int(k): v for k, v in row["iou"].items()},
                   gradcam_tumor_share=None if "gradcam_tumor_share" not in row else
                   math.nan if row["gradcam_tumor_share"] is None else float(row["gradcam_tumor_share"]))
