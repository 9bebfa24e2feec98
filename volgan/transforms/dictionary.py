"""MONAI dictionary twins of the preprocessing, for the bundles' inference configs and ``volgan infer``: the
volume onto the model grid (:class:`ToModelGridd`, invertible, so ``Invertd`` maps a prediction back onto the
input's own grid) and z-normalised (:class:`ZNormalized`). Each calls the very functions the torchio training
pipeline calls (:func:`~volgan.transforms.grid.model_grid`, :func:`~volgan.transforms.grid.resample`,
:func:`~volgan.transforms.pipeline.normalize_intensity`), so training and inference cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
import torch
import torchio as tio
from monai.data import MetaTensor
from monai.transforms import InvertibleTransform, MapTransform
from monai.utils import TraceKeys

from volgan.transforms.grid import model_grid, resample
from volgan.transforms.pipeline import normalize_intensity

ZERO_VALUE = "zero_value"  # meta key: the normalised value of the input's zero intensity (the padding value)


def _meta_of(image) -> dict:
    """The image's meta without its affine (the new MetaTensor gets its own)."""
    meta = dict(image.meta) if isinstance(image, MetaTensor) else {}
    meta.pop("affine", None)
    return meta


def _affine_of(image) -> np.ndarray:
    affine = getattr(image, "affine", None)
    if affine is None:
        raise ValueError("ToModelGridd needs a MetaTensor with an affine (load with LoadImaged)")
    return np.asarray(torch.as_tensor(affine).cpu(), dtype=np.float64)


class ToModelGridd(MapTransform, InvertibleTransform):
    """Each image under ``keys`` ((C, X, Y, Z) MetaTensor with its voxel-to-world affine, RAS mm) onto the RAS grid
    of ``spacing`` mm that covers its voxel centres, trilinearly (``label_keys``: by nearest neighbour).

    The MONAI twin of :class:`~volgan.transforms.grid.ToModelGrid`; :meth:`inverse` resamples back onto the input's
    own grid (trilinearly, or by nearest neighbour where ``Invertd`` asks for it).
    """

    def __init__(self, keys, spacing=(1.5, 1.5, 1.5), label_keys=(), allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.spacing = tuple(float(s) for s in spacing)
        self.label_keys = {label_keys} if isinstance(label_keys, str) else set(label_keys)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            image = d[key]
            affine = _affine_of(image)
            shape = tuple(int(n) for n in image.shape[1:])
            target, target_shape = model_grid(affine, shape, self.spacing)
            mode = "nearest" if key in self.label_keys else "bilinear"
            values = resample(torch.as_tensor(image), affine, target, target_shape, mode)
            out = MetaTensor(values, affine=torch.as_tensor(target), meta=_meta_of(image),
                             applied_operations=list(getattr(image, "applied_operations", [])))
            out.meta["spatial_shape"] = np.asarray(target_shape)
            d[key] = out
            self.push_transform(d, key, orig_size=shape,
                                extra_info={"affine": affine.tolist(), "mode": mode})
        return d

    def inverse(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            record = self.get_most_recent_transform(d, key)
            affine = np.asarray(record[TraceKeys.EXTRA_INFO]["affine"], dtype=np.float64)
            shape = tuple(int(n) for n in record[TraceKeys.ORIG_SIZE])
            mode = "nearest" if record[TraceKeys.EXTRA_INFO]["mode"] == "nearest" else "bilinear"
            image = d[key]
            values = resample(torch.as_tensor(image), _affine_of(image), affine, shape, mode)
            out = MetaTensor(values, affine=torch.as_tensor(affine), meta=_meta_of(image),
                             applied_operations=list(getattr(image, "applied_operations", [])))
            out.meta["spatial_shape"] = np.asarray(shape)
            d[key] = out
            self.pop_transform(d, key)
        return d


class ZNormalized(MapTransform):
    """Each image under ``keys`` z-normalised over all its voxels (mean 0, standard deviation 1) by
    :func:`~volgan.transforms.pipeline.normalize_intensity`, the training pipeline's own transform.

    The normalised value of intensity 0 is kept in the image's meta under ``"zero_value"``: inference pads its
    windows with it, as training pads the raw volume with zeros (:class:`volgan.segcls.predict.ModelInferer`).
    """

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            image = d[key]
            raw = torch.as_tensor(image).float()
            normalized = normalize_intensity()(tio.ScalarImage(tensor=raw, affine=np.eye(4))).data.float()
            std = float(raw.std()) or 1.0
            if isinstance(image, MetaTensor):
                out = image.clone()
                out.set_array(normalized)
            else:
                out = MetaTensor(normalized)
            out.meta[ZERO_VALUE] = float(-raw.mean()) / std
            d[key] = out
        return d
