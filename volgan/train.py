"""Training pieces of the segmenter-classifier for MONAI engines: batch preparation, the joint loss,
validation metrics and the workflow builders that ``bundles/spine_segcls/configs/train.json`` calls."""

from __future__ import annotations

import torch
import torchio as tio
from ignite.handlers import DiskSaver
from ignite.handlers.checkpoint import BaseSaveHandler
from ignite.metrics import Metric
from ignite.metrics.metric import reinit__is_reduced, sync_all_reduce
from monai.handlers import CheckpointSaver as MonaiCheckpointSaver
from monai.losses import DiceCELoss
from monai.utils import CommonKeys as Keys
from torch import nn

from volgan.labels import NUM_LABELS


def prepare_batch(batch: dict, device=None, non_blocking: bool = False, **kwargs):
    """torchio batch → ``(image, (label, tumor_type))`` on ``device``: (B,1,X,Y,Z) float, (B,1,X,Y,Z) long, (B,)."""
    image = batch["image"][tio.DATA].to(device=device, non_blocking=non_blocking)
    label = batch["label"][tio.DATA].to(device=device, dtype=torch.long, non_blocking=non_blocking)
    tumor_type = torch.as_tensor(batch["tumor_type"]).to(device=device, dtype=torch.long)
    return image, (label, tumor_type)


class SegClsLoss(nn.Module):
    """Dice + cross-entropy on the six labels plus ``cls_weight`` × cross-entropy on ``tumor_type``."""

    def __init__(self, cls_weight: float = 0.5):
        super().__init__()
        self.seg_loss = DiceCELoss(to_onehot_y=True, softmax=True, include_background=True)
        self.cls_loss = nn.CrossEntropyLoss()
        self.cls_weight = cls_weight

    def forward(self, pred: tuple[torch.Tensor, torch.Tensor], target: tuple[torch.Tensor, torch.Tensor]):
        (seg, cls), (label, tumor_type) = pred, target
        return self.seg_loss(seg, label) + self.cls_weight * self.cls_loss(cls, tumor_type)


def seg_cls_output(output: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Engine output → (seg_logits, cls_logits, label, tumor_type)."""
    (seg, cls), (label, tumor_type) = output[Keys.PRED], output[Keys.LABEL]
    return seg, cls, label, tumor_type


class SegClsScore(Metric):
    """Validation metric over an epoch: ``part`` is ``"dice"`` (mean foreground Dice, pooled voxel counts
    per label), ``"accuracy"`` (tumor_type) or ``"score"`` (their mean, the key metric for the best model).
    Reduces across processes under DDP."""

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
        for k in range(1, NUM_LABELS):
            p, r = pred == k, label == k
            self._intersection[k] += (p & r).sum().to(self._device, torch.float64)
            self._total[k] += (p.sum() + r.sum()).to(self._device, torch.float64)
        self._correct += (cls.argmax(dim=1) == tumor_type).sum().to(self._device, torch.float64)
        self._count += tumor_type.numel()

    @sync_all_reduce("_intersection", "_total", "_correct", "_count")
    def compute(self) -> float:
        present = self._total[1:] > 0
        dice = (2 * self._intersection[1:][present] / self._total[1:][present]).mean().item() if present.any() else 0.0
        accuracy = (self._correct / self._count.clamp(min=1)).item()
        return {"dice": dice, "accuracy": accuracy, "score": (dice + accuracy) / 2}[self.part]


def loss_value(output: dict | list[dict]) -> float:
    """Engine output (a batch dict, or the per-sample dicts of a decollating engine) → the batch loss."""
    first = output[0] if isinstance(output, list) else output
    return float(first[Keys.LOSS])


def flag(value: bool | int | str) -> bool:
    """A bundle switch as a bool: the command line gives ``--amp true`` as the string ``"true"``, which plain
    ``bool`` would take as True whatever it says. Accepts true/false, yes/no, on/off, 1/0 in any case."""
    if not isinstance(value, str):
        return bool(value)
    word = value.strip().lower()
    if word in ("true", "yes", "on", "1"):
        return True
    if word in ("false", "no", "off", "0"):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def bf16_autocast(value: bool | str, device: torch.device | str) -> bool:
    """Whether to train in bfloat16 autocast: ``"auto"`` where ``device`` computes in bfloat16 natively (a CUDA
    device that supports it; a CPU with AVX512-BF16 or AMX, as oneDNN reports), else :func:`flag` of ``value``."""
    if not (isinstance(value, str) and value.strip().lower() == "auto"):
        return flag(value)
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        return device.type == "cpu" and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


class ProgressBar:
    """A tqdm progress bar over each epoch's iterations showing the loss; a MONAI-style handler (``attach``).
    With ``enabled=False`` it attaches nothing (the study draws its own bar per stage)."""

    def __init__(self, persist: bool = False, enabled: bool | str = True):
        self.persist, self.enabled = persist, flag(enabled)

    def attach(self, engine) -> None:
        from ignite.handlers import ProgressBar as IgniteProgressBar

        if not self.enabled:
            return

        IgniteProgressBar(persist=self.persist).attach(engine, output_transform=lambda out: {"loss": loss_value(out)})


MODEL_CARD = "model.json"


def write_model_card(ckpt_dir: str, prep, channels) -> str:
    """Write ``ckpt_dir/model.json``: the preprocessing and network width a checkpoint beside it needs."""
    import json
    from pathlib import Path

    from volgan.io import write_text

    card = {"spacing": list(prep.spacing), "patch": list(prep.patch), "channels": list(channels)}
    return str(write_text(Path(ckpt_dir) / MODEL_CARD, json.dumps(card, indent=2) + "\n"))


class ReplaceAfterSave(BaseSaveHandler):
    """Wrap an ignite :class:`~ignite.handlers.DiskSaver` so that each file is written atomically (a temporary
    file beside it, renamed onto its name) and a file ignite asks to remove goes only once the next save is in
    place; a saver with a fixed ``filename`` (MONAI's) has its file replaced, never removed."""

    def __init__(self, saver: DiskSaver):
        saver._atomic = True  # ignite's own temporary-file-and-rename path, which also keeps group/others read
        self.saver, self.pending = saver, []

    def __call__(self, checkpoint, filename: str, metadata=None) -> None:
        self.saver(checkpoint, filename, metadata)
        for old in self.pending:
            if old != filename:
                self.saver.remove(old)
        self.pending = []

    def remove(self, filename: str) -> None:
        if getattr(self.saver, "filename", None) is None:
            self.pending.append(filename)


class CheckpointSaver(MonaiCheckpointSaver):
    """MONAI's :class:`~monai.handlers.CheckpointSaver` with its files saved through :class:`ReplaceAfterSave`:
    MONAI writes in place, and ignite removes the old file before writing the new one, so a run killed during a
    save lost its checkpoint (a corrupt file, or none); here the previous one stays whole until the new one is
    complete. Same arguments."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for checkpoint in (self._final_checkpoint, self._key_metric_checkpoint, self._interval_checkpoint):
            if checkpoint is not None:
                checkpoint.save_handler = ReplaceAfterSave(checkpoint.save_handler)
