"""NIfTI volume inference: label maps in the input's own shape and affine, and tumor probabilities.

A volume is resampled onto the model's RAS grid (:func:`volgan.transforms.model_grid`), z-normalised,
segmented by sliding windows of the training patch size, and its softmax probabilities are resampled
back onto the input grid before the argmax.

Whether a tumor is present is read from the segmentation (:func:`volgan.segcls.pipeline.tumor_call`): the
largest predicted tumor component's probability mass in mm³, lowered when that component does not stand out from
the tissue around it in the scan. Which type it is comes from the classifier head
of the window most sure a tumor is present (for a volume that fits one window, the network's output). The
head alone ranked tumor-bearing volumes at chance where the segmentation already found the tumors (quick
profile, 1,200 presentations: AUC 0.45 from the head, 0.83 from the segmentation; BENCHMARKS.md).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from monai.data import MetaTensor

from volgan.data.files import first_line
from volgan.data.io import Volume
from volgan.errors import VolganInputError
from volgan.segcls.network import DEFAULT_CHANNELS, SegClsNet
from volgan.segcls.pipeline import (
    ModelInferer,
    SegmentationWithHead,
    combine_type_probabilities,
    model_input,
    tumor_call,
)
from volgan.transforms import Preprocessing, resample


@dataclass
class LoadedModel:
    """A network in eval mode with the preprocessing it was trained with."""

    network: SegClsNet
    prep: Preprocessing = field(default_factory=Preprocessing)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    source: str = ""  # the checkpoint file it was loaded from


def default_device() -> torch.device:
    """CUDA when this build of torch sees a GPU, otherwise the CPU.

    Returns
    -------
    torch.device
        the device.
    """
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``device`` as a torch device this build can use (None: CUDA when available, else the CPU); anything else
    raises :class:`VolganInputError` naming ``--device``.

    Parameters
    ----------
    device : str | torch.device | None
        ``"cpu"``, ``"cuda"``, ``"cuda:N"``, a torch device, or None.

    Returns
    -------
    torch.device
        the device.

    Raises
    ------
    VolganInputError
        naming ``--device``, for an unknown device, CUDA on a build or machine without it, or a GPU index beyond those
        present.
    """
    if device is None:
        return default_device()
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise VolganInputError(None, f"--device {device!r}: not a device name (cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise VolganInputError(None, f"--device {device}: this torch build has no usable CUDA device")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise VolganInputError(None, f"--device {device}: only {torch.cuda.device_count()} CUDA device(s)")
    if device.type not in ("cpu", "cuda"):
        raise VolganInputError(None, f"--device {device}: volgan runs on cpu or cuda")
    return device


class ScriptedSegCls(torch.nn.Module):
    """A TorchScript export of :class:`~volgan.segcls.network.SegClsNet` or
    :class:`~volgan.segcls.network.SegmentationNet` (``ckpt_export``'s ``model.ts``) called as a ``SegClsNet``:
    (B, 1, X, Y, Z) → (segmentation logits (B, 6, X, Y, Z), tumor_type logits (B, 4))."""

    def __init__(self, module: torch.jit.ScriptModule):
        super().__init__()
        self.module = module
        self.divisor = int(module.divisor)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.module.segment_and_classify(x)


def _load_torchscript(path: Path, device: torch.device) -> ScriptedSegCls:
    try:
        module = torch.jit.load(str(path), map_location=device)
    except Exception as exc:
        raise VolganInputError(path, f"not a TorchScript model ({type(exc).__name__})") from None
    if not hasattr(module, "segment_and_classify") or not hasattr(module, "divisor"):
        raise VolganInputError(path, "not a spine_segcls export (no segment_and_classify); export it with "
                                     "monai.bundle ckpt_export from configs/inference.json")
    return ScriptedSegCls(module)


def load_model(path: str | os.PathLike, device: str | torch.device | None = None, network: SegClsNet | None = None,
               prep: Preprocessing | None = None) -> LoadedModel:
    """Load a checkpoint file, a TorchScript export (``.ts``, from ``monai.bundle ckpt_export``), or a bundle
    folder's ``models/model.pt``.

    Parameters
    ----------
    path : str | os.PathLike
        ``model.pt`` (a state dict, or a dict with its ``model``), ``model.ts``, or a bundle folder.
    device : str | torch.device | None
        where the network runs (None: CUDA when available, else the CPU).
    network : SegClsNet | None
        the network to load the weights into (default: a :class:`SegClsNet` of the card's widths).
    prep : Preprocessing | None
        the preprocessing (default: the card's spacing in mm and patch in voxels).

    Returns
    -------
    LoadedModel
        The network in eval mode on ``device`` with its preprocessing. The widths, spacing and patch come from
        ``model.json`` beside the file (written by training); a checkpoint without one is refused unless both
        ``network`` and ``prep`` are given.

    Raises
    ------
    VolganInputError
        naming the file, when it is missing, unreadable, or does not fit the network.
    """
    path = Path(path)
    device = resolve_device(device)
    if path.is_dir():
        if not (path / "configs").is_dir() and not (path / "models").is_dir():
            raise VolganInputError(path, "not a bundle folder (no configs/ or models/)")
        path = path / "models" / "model.pt"
    if not path.is_file():
        raise VolganInputError(path, "no such checkpoint")
    if path.suffix == ".ts":
        scripted = _load_torchscript(path, device).eval()
        check_finite_weights(scripted, path)
        if prep is None:
            card = read_model_card(path.parent / "model.json")
            prep = Preprocessing(tuple(card["spacing"]), tuple(card["patch"]))
        return LoadedModel(scripted, prep, device, str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise VolganInputError(path, f"not a PyTorch checkpoint ({type(exc).__name__})") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if prep is None or network is None:
        card = read_model_card(path.parent / "model.json")
        prep = prep or Preprocessing(tuple(card["spacing"]), tuple(card["patch"]))
        network = network or SegClsNet(channels=tuple(card["channels"]))
    try:
        network.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        first = str(exc).strip().splitlines()
        detail = first[1].strip() if len(first) > 1 else (first[0] if first else type(exc).__name__)
        raise VolganInputError(path, f"checkpoint does not fit the network ({detail[:150]})") from None
    check_finite_weights(network, path)
    return LoadedModel(network.to(device).eval(), prep, device, str(path))


def check_finite_weights(module: torch.nn.Module, path: str | os.PathLike) -> None:
    """Refuse a network any of whose weights or buffers is NaN or infinite: it would give NaN probabilities and an
    all-background map without any error.

    Parameters
    ----------
    module : torch.nn.Module
        the loaded network.
    path : str | os.PathLike
        the checkpoint it came from, named in the error.

    Raises
    ------
    VolganInputError
        naming ``path`` and the first tensor that is not finite.
    """
    for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise VolganInputError(path, f"weights are not finite ({bad} NaN or Inf values in {name}); the "
                                         "checkpoint is damaged or its training diverged")

@dataclass
class Prediction:
    """Output for one volume: ``label`` on the input grid (uint8), the four tumor_type probabilities (4,: none from
    the segmentation, the types shared as the head says; :func:`combine_type_probabilities`), the model-grid
    input, the classifier head's own probabilities (4,), the segmentation's tumor evidence in mm³ and its largest
    tumor component's contrast against the tissue around it (NaN without a tumor voxel;
    :func:`~volgan.segcls.pipeline.tumor_call`)."""

    label: Volume
    type_probabilities: np.ndarray
    model_input: torch.Tensor  # (1, 1, X, Y, Z), normalised, on the model grid
    model_affine: np.ndarray
    head_probabilities: np.ndarray | None = None
    tumor_evidence_mm3: float = float("nan")
    tumor_contrast: float = float("nan")

    @property
    def tumor_probability(self) -> float:
        return float(1.0 - self.type_probabilities[0])


PRECISIONS = ("fp32", "bf16")

def read_model_card(path: str | os.PathLike) -> dict:
    """The ``model.json`` that training writes beside a checkpoint (``spacing`` in mm, ``patch`` in voxels, the
    network's ``channels``). A missing, unreadable or inconsistent card raises :class:`VolganInputError` naming it.

    Parameters
    ----------
    path : str | os.PathLike
        the ``model.json`` file.

    Returns
    -------
    dict
        ``spacing`` (mm), ``patch`` (voxels) and ``channels``; ``training_arithmetic`` (``"bf16"`` or ``"fp32"``)
        when the card names it.

    Raises
    ------
    VolganInputError
        naming the card, when it cannot be read.
    """
    path = Path(path)
    if not path.is_file():
        raise VolganInputError(path, "no model card: training writes model.json beside the checkpoint (spacing, "
                                     "patch and widths); without it the model's preprocessing is unknown")
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
        arithmetic = card.get("training_arithmetic")
        card = {"spacing": [float(x) for x in card["spacing"]], "patch": [_whole(x) for x in card["patch"]],
                "channels": [_whole(x) for x in card["channels"]]}
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as exc:
        raise VolganInputError(path, f"unreadable model card ({first_line(exc)})") from None
    divisor = 2 ** (len(card["channels"]) - 1)
    if len(card["spacing"]) != 3 or not all(math.isfinite(s) and s > 0 for s in card["spacing"]):
        raise VolganInputError(path, f"model card: spacing {card['spacing']} is not three positive finite mm")
    if len(card["patch"]) != 3 or not all(p > 0 and p % divisor == 0 for p in card["patch"]):
        raise VolganInputError(path, f"model card: patch {card['patch']} is not three positive multiples of "
                                     f"{divisor} voxels")
    if len(card["channels"]) < 2 or not all(c > 0 for c in card["channels"]):
        raise VolganInputError(path, f"model card: channels {card['channels']} are not two or more positive widths")
    if arithmetic is not None:  # cards written before spine_segcls 0.8.2 name none
        if arithmetic not in ("bf16", "fp32"):
            raise VolganInputError(path, f"model card: training_arithmetic {arithmetic!r} is not bf16 or fp32")
        card["training_arithmetic"] = arithmetic
    return card


def bundle_model_card(bundle_root: str | os.PathLike) -> dict:
    """The model card of a bundle folder's trained model (``models/model.json``, :func:`read_model_card`). A bundle
    with no checkpoint yet (``models/model.pt``) gets the network's default widths and the training defaults, so that
    MONAI's property checks and a config's structure resolve before training; a checkpoint without its card is
    refused.

    Parameters
    ----------
    bundle_root : str | os.PathLike
        the bundle folder.

    Returns
    -------
    dict
        ``spacing`` (mm), ``patch`` (voxels) and ``channels``.

    Raises
    ------
    VolganInputError
        naming the card, when the bundle has a checkpoint and its card is missing or unreadable.
    """
    models = Path(bundle_root) / "models"
    if not any((models / name).is_file() for name in ("model.pt", "model.ts", "model.json")):
        defaults = Preprocessing()
        return {"spacing": list(defaults.spacing), "patch": list(defaults.patch), "channels": list(DEFAULT_CHANNELS)}
    return read_model_card(models / "model.json")


def _whole(value) -> int:
    if isinstance(value, bool) or float(value) != int(float(value)):
        raise ValueError(f"{value!r} is not a whole number")
    return int(float(value))


def channel_argmax(values: torch.Tensor) -> torch.Tensor:
    """The index of the largest of C channels at each voxel, the first on ties: (C, X, Y, Z) → (X, Y, Z) uint8.

    Equals ``values.argmax(0)``, which reduces across the strided channel axis slowly on the CPU: 0.76 s against
    0.14 s this way for 6 × 256×256×64 values on 2 threads.

    Parameters
    ----------
    values : torch.Tensor
        (C, X, Y, Z) scores, C ≤ 255.

    Returns
    -------
    torch.Tensor
        (X, Y, Z) uint8 channel indices.
    """
    best = values[0].clone()
    index = torch.zeros(values.shape[1:], dtype=torch.uint8, device=values.device)
    for channel in range(1, values.shape[0]):
        larger = values[channel] > best
        best = torch.where(larger, values[channel], best)
        index[larger] = channel
    return index


@torch.inference_mode()
def predict(model: LoadedModel, volume: Volume, overlap: float = 0.25, sw_batch_size: int = 4,
            precision: str = "fp32") -> Prediction:
    """Segment and classify one volume.

    Parameters
    ----------
    model : LoadedModel
        the network and its preprocessing (:func:`load_model`).
    volume : Volume
        the image, any orientation and spacing.
    overlap : float
        the sliding windows' overlap, in [0, 1).
    sw_batch_size : int
        windows per forward pass (4: in bf16 a 137×137×127 grid of 32³ windows took 2.27 s at 4, 2.69 s at 2,
        median of 5 on 2 threads).
    precision : str
        ``"fp32"``, or ``"bf16"`` for bfloat16 autocast (faster on CPUs with AVX512-BF16 and on GPUs;
        labels differ from fp32 in a small share of boundary voxels). Resampling stays in float32.

    Returns
    -------
    Prediction
        The label map in the input's shape and affine, the four tumor_type probabilities, the model-grid input
        (1, 1, X, Y, Z) and its affine, the head's probabilities, the tumor evidence in mm³ and its contrast.
    """
    if precision not in PRECISIONS:
        raise VolganInputError(None, f"precision must be one of {PRECISIONS}, got {precision!r}")
    if float(np.ptp(volume.array)) == 0.0:
        raise VolganInputError(None, "the image has one intensity everywhere; there is nothing to segment")
    image = MetaTensor(torch.from_numpy(np.ascontiguousarray(volume.array))[None],
                       affine=torch.as_tensor(volume.affine))
    x = model_input(model.prep.spacing)({"image": image})["image"]  # the bundle's own inference transforms
    affine = np.asarray(x.affine, dtype=np.float64)
    x = x.unsqueeze(0).to(model.device)
    network = SegmentationWithHead(model.network)
    inferer = ModelInferer(model.prep.patch, sw_batch_size, overlap)
    with torch.autocast(model.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        seg = torch.as_tensor(inferer(x, network))
    x = x.as_tensor().float()
    probs = torch.softmax(seg[0].float(), dim=0)
    back = resample(probs, affine, volume.affine, volume.shape, "bilinear")
    label = channel_argmax(back).cpu().numpy()
    head = network.take_head_probabilities()
    model_probs = probs.cpu().numpy()
    call = tumor_call(model_probs, x[0, 0].cpu().numpy(), float(np.prod(model.prep.spacing)))
    return Prediction(Volume(label, volume.affine), combine_type_probabilities(call.probability, head), x, affine,
                      head, call.evidence_mm3, call.contrast)
