"""Training pieces of the segmenter-classifier for MONAI engines: batch preparation, the joint loss,
validation metrics and the workflow builders that ``bundles/spine_segcls/configs/train.json`` calls."""

from __future__ import annotations

import torch
from ignite.metrics import Metric
from ignite.metrics.metric import reinit__is_reduced, sync_all_reduce
from monai.losses import DiceCELoss, DiceLoss
from monai.utils import CommonKeys as Keys
from torch import nn

from volgan.errors import VolganInputError
from volgan.labels import NUM_LABELS, PARTIAL_BASE, TUMOR_LABEL


class SegClsLoss(nn.Module):
    """Dice + cross-entropy on the six labels plus ``cls_weight`` × cross-entropy on ``tumor_type``.

    Cases whose ``tumor_type`` is unknown (-1: segmentation-only data) add nothing to the classification term;
    a batch of such cases alone trains the segmentation only. Datasets may mix both kinds.

    ``batch_dice`` pools each label's Dice over the whole batch (nnU-Net's choice for 3D): a tumor-free volume
    then does not ask for an empty tumor map on its own, which with per-volume Dice pulls every tumor
    probability down and made the quick study's models predict no tumor at all. ``tumor_weight`` scales the tumor
    label's share of both terms (MONAI's per-class ``weight``; 1 for the other labels)."""

    def __init__(self, cls_weight: float = 0.5, batch_dice: bool = False, tumor_weight: float = 1.0):
        super().__init__()
        weight = torch.ones(NUM_LABELS)
        weight[TUMOR_LABEL] = float(tumor_weight)
        self.seg_loss = DiceCELoss(to_onehot_y=True, softmax=True, include_background=True, batch=bool(batch_dice),
                                   weight=weight)
        # the same Dice on probabilities given, for the marginal loss of partially annotated cases
        self.marginal_dice = DiceLoss(to_onehot_y=True, softmax=False, include_background=True,
                                      batch=bool(batch_dice), weight=weight)
        self.register_buffer("label_weight", weight, persistent=False)
        self.cls_loss = nn.CrossEntropyLoss()
        self.cls_weight = cls_weight

    def forward(self, pred: tuple[torch.Tensor, torch.Tensor], target: tuple[torch.Tensor, torch.Tensor]):
        (seg, cls), (label, tumor_type) = pred, target
        known = tumor_type >= 0
        cls_term = self.cls_loss(cls[known], tumor_type[known]) if bool(known.any()) else cls.sum() * 0.0
        if bool((label >= PARTIAL_BASE).any()):
            return self.marginal_seg_loss(seg, label) + self.cls_weight * cls_term
        return self.seg_loss(seg, label) + self.cls_weight * cls_term

    def marginal_seg_loss(self, seg: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """Dice + cross-entropy when some cases annotate only some labels (the marginal loss of partially labeled
        data, as TotalSegmentator and TotalSpineSeg train): for such a case, background and its unannotated labels
        are merged into one class (their probabilities summed) and the merged voxels are its target, so a
        structure it leaves out is neither rewarded nor punished. A fully annotated case in the same batch is
        scored as :attr:`seg_loss` scores it.

        Parameters
        ----------
        seg : torch.Tensor
            (B, 6, X, Y, Z) logits.
        label : torch.Tensor
            (B, 1, X, Y, Z) label maps, unknown voxels marked as :func:`volgan.training.mark_unknown` does.

        Returns
        -------
        torch.Tensor
            the scalar loss.
        """
        import torch.nn.functional as F

        partial = label >= PARTIAL_BASE
        batch = label.shape[0]
        bits = torch.where(partial, label - PARTIAL_BASE, torch.zeros_like(label)).view(batch, -1).amax(dim=1)
        merged = ((bits.view(-1, 1) >> torch.arange(NUM_LABELS, device=label.device)) & 1).bool()  # (B, 6)
        merged[:, 0] |= bits == 0
        log_p = F.log_softmax(seg.float(), dim=1)
        shape = (batch, NUM_LABELS) + (1,) * (seg.dim() - 2)
        merged_bg = torch.logsumexp(log_p.masked_fill(~merged.view(shape), float("-inf")), dim=1)
        gone = merged.clone()
        gone[:, 0] = False  # channels folded into background: probability 0 now
        log_q = torch.cat([merged_bg[:, None], log_p[:, 1:]], dim=1).masked_fill(gone.view(shape), float("-inf"))
        target = torch.where(partial, torch.zeros_like(label), label)
        ce = F.nll_loss(log_q.masked_fill(torch.isinf(log_q), -1e4), target[:, 0], weight=self.label_weight)
        dice = self.marginal_dice(log_q.exp(), target)
        return self.seg_loss.lambda_dice * dice + self.seg_loss.lambda_ce * ce


def seg_cls_output(output: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Engine output → (seg_logits, cls_logits, label, tumor_type).

    Parameters
    ----------
    output : dict
        the engine's output of one iteration (``pred`` and ``label`` as :func:`volgan.training.prepare_batch` and the
        network give them).

    Returns
    -------
    tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
        segmentation logits (B, 6, X, Y, Z), classification logits (B, 4), label maps (B, 1, X, Y, Z) and tumor types
        (B,; −1 where unknown).
    """
    (seg, cls), (label, tumor_type) = output[Keys.PRED], output[Keys.LABEL]
    return seg, cls, label, tumor_type


class SegClsScore(Metric):
    """Validation metric over an epoch: ``part`` is ``"dice"`` (mean foreground Dice, pooled voxel counts
    per label), ``"accuracy"`` (tumor_type, over the cases where it is known) or ``"score"`` (their mean, the key
    metric for the best model; the Dice alone when no validation case has a known tumor_type). Reduces across
    processes under DDP."""

    def __init__(self, part: str = "score", output_transform=seg_cls_output, device="cpu"):
        if part not in ("dice", "accuracy", "score"):
            raise ValueError(f"part must be dice, accuracy or score, got {part!r}")
        self.part = part
        super().__init__(output_transform=output_transform, device=device)

    @reinit__is_reduced
    def reset(self) -> None:
        self._intersection = torch.zeros(NUM_LABELS, dtype=torch.float64, device=self._device)
        self._total = torch.zeros(NUM_LABELS, dtype=torch.float64, device=self._device)
        self._correct = torch.zeros((), dtype=torch.float64, device=self._device)
        self._count = torch.zeros((), dtype=torch.float64, device=self._device)

    @reinit__is_reduced
    def update(self, output) -> None:
        seg, cls, label, tumor_type = output
        pred = seg.argmax(dim=1)
        label = label[:, 0]
        partial = label >= PARTIAL_BASE
        for k in range(1, NUM_LABELS):
            scored = ~(partial & (((label - PARTIAL_BASE) >> k) & 1).bool())  # a voxel that may be k is not scored
            p, r = (pred == k) & scored, label == k
            self._intersection[k] += (p & r).sum().to(self._device, torch.float64)
            self._total[k] += (p.sum() + r.sum()).to(self._device, torch.float64)
        known = tumor_type >= 0
        self._correct += (cls.argmax(dim=1) == tumor_type)[known].sum().to(self._device, torch.float64)
        self._count += known.sum().to(self._device, torch.float64)

    @sync_all_reduce("_intersection", "_total", "_correct", "_count")
    def compute(self) -> float:
        present = self._total[1:] > 0
        dice = (2 * self._intersection[1:][present] / self._total[1:][present]).mean().item() if present.any() else 0.0
        if self._count.item() == 0:
            return {"dice": dice, "accuracy": float("nan"), "score": dice}[self.part]
        accuracy = (self._correct / self._count).item()
        return {"dice": dice, "accuracy": accuracy, "score": (dice + accuracy) / 2}[self.part]


class WindowedSegClsInferer:
    """The validation inferer of patch training: volumes larger than the training patch are segmented by sliding
    windows of the patch (:class:`~volgan.segcls.pipeline.ModelInferer`, as ``volgan infer`` does), one volume at a
    time, under bfloat16 autocast when ``enabled``. Returns the segmentation logits (B, 6, X, Y, Z) and the log of the
    head's tumor_type probabilities (B, 4), those of the window most sure of a tumor, both float32.

    ``overlap`` 0 tiles each 64³ volume with eight 32³ windows: the cheapest check of the fit, once per epoch."""

    def __init__(self, roi_size, enabled: bool = False, overlap: float = 0.0, sw_batch_size: int = 4):
        from volgan.segcls.pipeline import ModelInferer
        from volgan.training import AutocastInferer

        self.windows = ModelInferer(tuple(int(n) for n in roi_size), sw_batch_size, overlap)
        self.autocast = AutocastInferer(enabled)

    def __call__(self, inputs: torch.Tensor, network) -> tuple[torch.Tensor, torch.Tensor]:
        from volgan.segcls.pipeline import SegmentationWithHead

        head = SegmentationWithHead(network)
        segs, heads = [], []
        for volume in inputs:
            segs.append(torch.as_tensor(self.autocast(volume[None], lambda v: self.windows(v, head))))
            heads.append(torch.as_tensor(head.take_head_probabilities()).clamp_min(1e-12).log())
        return torch.cat(segs), torch.stack(heads).to(inputs.device)


def validation_inferer(window, field, enabled: bool = False):
    """The bundle's validation inferer: the network on the whole volume (:class:`volgan.training.AutocastInferer`)
    when it trains on whole volumes (``window`` equals ``field``), else :class:`WindowedSegClsInferer`.

    Parameters
    ----------
    window : sequence of int
        the network's training patch in voxels (3,).
    field : sequence of int
        the size every volume is cropped or padded to, in voxels (3,).
    enabled : bool
        bfloat16 autocast.

    Returns
    -------
    callable
        an inferer: images (B, 1, X, Y, Z) and the network → (segmentation logits, classification logits).
    """
    from volgan.training import AutocastInferer

    if [int(n) for n in window] == [int(n) for n in field]:
        return AutocastInferer(enabled)
    return WindowedSegClsInferer(window, enabled)


def training_window(patch, patch_samples: int, sample_patch):
    """The patch the network trains on, in voxels (3,): the whole ``patch`` (the field each volume is cropped or padded
    to) without patch sampling, else ``sample_patch``; refused (:class:`VolganInputError`) when larger than the field.

    Parameters
    ----------
    patch : sequence of int
        the field, in voxels (3,).
    patch_samples : int
        patches per volume per epoch (0: whole volumes).
    sample_patch : sequence of int
        the sampled patch in voxels (3,).

    Returns
    -------
    list[int]
        the window, (3,).
    """
    if not patch_samples:
        return [int(n) for n in patch]
    if len(sample_patch) != 3 or any(int(w) > int(f) for w, f in zip(sample_patch, patch, strict=True)):
        raise VolganInputError(None, f"--sample_patch {list(sample_patch)} must be three sizes in voxels, none "
                                     f"larger than --patch {list(patch)}")
    return [int(n) for n in sample_patch]


# The contrast-agnostic recipe: spine_segcls's defaults for phantoms of random contrast (recipe_default). Each setting
# was measured on the acceptance commands (48 phantoms, 40 epochs; BENCHMARKS.md, "Real MRI"): the contrast
# preset (a new contrast per presentation) took real T2 cord Dice from 0.000 to 0.218, and with its random field of
# view to 0.356; 8 patches of 32³ per volume per epoch (about 10,000 presentations, not 1,240) and the tumor label's
# weight at 1, not 5, to 0.842 (patches at weight 5 gave 0.191 and 0.291: the model labeled much of the real cord
# tumor).
CONTRAST_AGNOSTIC_RECIPE: dict[str, object] = {"augment": "contrast", "patch_samples": 8, "tumor_weight": 1.0}


def recipe_default(datalist, setting: str, otherwise):
    """spine_segcls's default for ``setting``: that of :data:`CONTRAST_AGNOSTIC_RECIPE` for phantoms of random
    contrast (``volgan phantom --contrast random`` records its configuration in the datalist's ``meta["volgan"]``),
    ``otherwise`` for any other data, a user's own included. A setting given on the command line overrides both.

    Parameters
    ----------
    datalist : volgan.data.datalist.Datalist
        the training data's datalist.
    setting : str
        a key of :data:`CONTRAST_AGNOSTIC_RECIPE` (``augment``, ``patch_samples``, ``tumor_weight``).
    otherwise
        the default for other data.

    Returns
    -------
    object
        the setting's default.
    """
    config = (datalist.meta.get("volgan") or {}).get("config") or {}
    return CONTRAST_AGNOSTIC_RECIPE[setting] if config.get("contrast") == "random" else otherwise


MODEL_CARD = "model.json"


def write_model_card(ckpt_dir: str, prep, channels, bf16: bool = False) -> str:
    """Write ``ckpt_dir/model.json``: the preprocessing and network width a checkpoint beside it needs, and the
    arithmetic it trained in (``training_arithmetic``, ``"bf16"`` or ``"fp32"``: a CPU with native bfloat16 trains
    in it by default, one without in float32, and the two give different models from the same seed).

    Parameters
    ----------
    ckpt_dir : str
        the checkpoint folder.
    prep : Preprocessing
        the spacing (mm) and patch (voxels) the network trained on.
    channels : tuple[int, ...]
        the network's widths per level.
    bf16 : bool
        whether training runs in bfloat16 autocast.

    Returns
    -------
    str
        the card's path.
    """
    import json
    from pathlib import Path

    from volgan.data.files import write_text

    card = {"spacing": list(prep.spacing), "patch": list(prep.patch), "channels": list(channels),
            "training_arithmetic": "bf16" if bf16 else "fp32"}
    return str(write_text(Path(ckpt_dir) / MODEL_CARD, json.dumps(card, indent=2) + "\n"))


def write_model_card_on_start(trainer, ckpt_dir: str, prep, channels, bf16: bool = False) -> None:
    """Write the model card (:func:`write_model_card`) when ``trainer`` starts, after its data loaded and every
    check passed, so that a run which fails before training leaves ``models/`` as it was.

    Parameters
    ----------
    trainer : ignite.engine.Engine
        the bundle's trainer.
    ckpt_dir : str
        the checkpoint folder.
    prep : Preprocessing
        the spacing (mm) and patch (voxels) the network trains on.
    channels : tuple[int, ...]
        the network's widths per level.
    bf16 : bool
        whether training runs in bfloat16 autocast.
    """
    from ignite.engine import Events

    trainer.add_event_handler(Events.STARTED, lambda engine: write_model_card(ckpt_dir, prep, channels, bf16))
