"""3D Grad-CAM of the classification head (seed 1's explainability point), through MONAI's GradCAM.

The map explains the most probable tumor class (1–3) on the network's deepest encoder level before the
bottleneck, is computed on the whole model-grid volume (padded to the network's divisor) and resampled
onto the input grid: a float32 heat map in [0, 1] aligned voxel for voxel with the input.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from monai.visualize import GradCAM

from volgan.inference import LoadedModel, Prediction
from volgan.io import Volume
from volgan.network import ClassifierOnly
from volgan.transforms import resample


def gradcam_volume(model: LoadedModel, prediction: Prediction, volume: Volume, class_index: int | None = None,
                   layer: str | None = None) -> Volume:
    """Grad-CAM heat map of ``class_index`` (default: the most probable tumor class) on ``volume``'s grid."""
    network = model.network
    if class_index is None:
        class_index = 1 + int(np.argmax(prediction.type_probabilities[1:]))
    layer = layer or f"network.encoders.{len(network.encoders) - 2}"
    x = prediction.model_input
    shape = x.shape[2:]
    divisor = network.divisor
    pads = [(-n) % divisor for n in shape]
    padded = F.pad(x, [p for n in reversed(pads) for p in (0, n)], value=float(x.min()))
    cam = GradCAM(nn_module=ClassifierOnly(network), target_layers=layer)
    with torch.enable_grad():
        heat = cam(padded.clone().requires_grad_(True), class_idx=class_index)
    heat = heat[0, :, : shape[0], : shape[1], : shape[2]].detach().float()
    back = resample(heat, prediction.model_affine, volume.affine, volume.shape, "bilinear")[0]
    return Volume(back.clamp(0, 1).cpu().numpy().astype(np.float32), volume.affine)
