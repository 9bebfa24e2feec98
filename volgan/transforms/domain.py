"""Domain randomisation at training time: a random intensity curve (a new contrast for every presentation of a
training volume) and a random field of view (the tight crop that cord MRI is acquired in).

Domain randomisation (SynthSeg, arXiv 2107.09559) draws every tissue's intensity anew for each training example.
volgan's random-contrast phantoms draw one contrast per case, so a data set of 48 phantoms holds 48 contrasts, and a
segmenter trained on it learns those (measured: the quick recipe on 24 random-contrast phantoms reached a cord Dice
of 0.55 on unseen ones after 7,200 presentations, no better than after 1,920). The phantoms' tissues are nearly
piecewise constant, so a random, non-monotonic map of the intensities re-draws each tissue's brightness, ordering
included, while the blur, texture, bias and noise stay where they were: every presentation shows a contrast of its
own. torchio's and MONAI's intensity transforms keep the order of brightness (gamma, histogram shift), so they
cannot turn a T2 into a T1.
"""

from __future__ import annotations

import torch
import torchio as tio
from torchio.transforms.augmentation import RandomTransform


class RandomIntensityCurve(RandomTransform, tio.IntensityTransform):
    """Map each intensity image through a random piecewise-linear curve.

    The image is scaled so that its 0.5th and 99.5th percentiles map to 0 and 1 (clipped); the curve passes
    through ``knots`` points at evenly spaced inputs in [0, 1], the first fixed at 0 (air and padding stay the
    darkest), the others uniform in [0, 1] (torch's generator, as torchio draws). The result lies in [0, 1];
    normalise after it.

    Parameters
    ----------
    knots : int
        the curve's points, at least 2 (5: room for the cord, CSF, fat, bone and muscle to take any order).
    **kwargs
        torchio's transform arguments (``p``, ``include``, ``exclude``).
    """

    def __init__(self, knots: int = 5, **kwargs):
        super().__init__(**kwargs)
        if int(knots) < 2:
            raise ValueError(f"knots must be at least 2, got {knots}")
        self.knots = int(knots)
        self.args_names = ["knots"]

    def apply_transform(self, subject: tio.Subject) -> tio.Subject:
        for image in self.get_images_dict(subject).values():
            values = torch.cat([torch.zeros(1), torch.rand(self.knots - 1)])
            image.set_data(intensity_curve(image.data, values))
        return subject


def intensity_curve(data: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``data`` scaled to [0, 1] by its 0.5th and 99.5th percentiles and mapped through the piecewise-linear curve
    through ``(k / (K − 1), values[k])``, k = 0 … K − 1.

    Parameters
    ----------
    data : torch.Tensor
        (C, X, Y, Z) intensities, any unit.
    values : torch.Tensor
        (K,) the curve's values, K ≥ 2.

    Returns
    -------
    torch.Tensor
        (C, X, Y, Z) float32 in [min(values), max(values)].
    """
    flat = data.float().flatten()
    sample = flat[:: max(1, flat.numel() // 200_000)]  # the percentiles of a regular subsample: fast and seed-free
    low, high = torch.quantile(sample, torch.tensor([0.005, 0.995]))
    scaled = ((data.float() - low) / torch.clamp(high - low, min=1e-6)).clamp(0.0, 1.0)
    position = scaled * (len(values) - 1)
    left = position.floor().clamp(max=len(values) - 2).long()
    weight = position - left
    values = values.float()
    return values[left] * (1.0 - weight) + values[left + 1] * weight


class RandomFieldOfView(RandomTransform):
    """Keep a random box of the volume and blank the rest, as a scan cropped about the cord would show it.

    Cord MRI is acquired in a tight field (the shipped real T2 covers 60 × 55 × 52 mm); a phantom shows the whole
    neck. Padded onto a 64³ window of 1.5 mm, a real crop is a small island in a flat field, which a network trained
    on whole phantoms reads as a whole, small neck (measured, with the intensity curve: the acceptance recipe's 64³
    model, 48 phantoms of 96 mm, found the real T2's cord at Dice 0.22; a 32³ model of 24 phantoms cropped to 48 mm
    reached 0.72). Per axis the box keeps a share of the grid uniform in ``extent`` and always holds the grid's
    centre ± ``margin`` of it (the canal, in the cervical framing); outside it the intensity images take their
    minimum (the padding's value) and the label maps background (0). Apply it after the intensity transforms and
    before the final normalisation.

    Parameters
    ----------
    extent : tuple[float, float]
        the share of each axis kept, a range within (0, 1].
    margin : float
        the share of each axis about the centre that the box always holds, in [0, 0.5).
    **kwargs
        torchio's transform arguments (``p``, ``include``, ``exclude``).
    """

    def __init__(self, extent: tuple[float, float] = (0.5, 1.0), margin: float = 0.12, **kwargs):
        super().__init__(**kwargs)
        low, high = (float(v) for v in extent)
        if not 0.0 < low <= high <= 1.0:
            raise ValueError(f"extent must be a range within (0, 1], got {extent}")
        if not 0.0 <= margin < 0.5 or 2.0 * margin > low:
            raise ValueError(f"margin must lie in [0, 0.5) and 2 × margin within extent's low end, got {margin}")
        self.extent, self.margin = (low, high), float(margin)
        self.args_names = ["extent", "margin"]

    def apply_transform(self, subject: tio.Subject) -> tio.Subject:
        shape = subject.spatial_shape
        box = []
        for n in shape:
            length = max(1, round(n * (self.extent[0] + (self.extent[1] - self.extent[0]) * float(torch.rand(1)))))
            centre_low, centre_high = round(n * (0.5 - self.margin)), round(n * (0.5 + self.margin))
            first, last = max(0, centre_high - length), min(n - length, centre_low)
            start = first + int(torch.randint(0, max(1, last - first + 1), (1,)))
            box.append(slice(start, start + length))
        inside = torch.zeros(shape, dtype=torch.bool)
        inside[tuple(box)] = True
        for image in subject.get_images(intensity_only=False):
            data = image.data
            outside_value = 0 if image.type == tio.LABEL else data.min()
            image.set_data(torch.where(inside, data, torch.as_tensor(outside_value, dtype=data.dtype)))
        return subject
