"""A trained spine_cgan's generators, loaded and checked (:func:`load_synthesizer`), and how they paint an image for a
label map on their grid (:func:`paint`): the inputs, the noise of a case (:func:`case_noise`, from the seed and the
case's index alone) and the training data's intensity units.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from volgan.data.io import Volume
from volgan.errors import VolganInputError
from volgan.gan.checkpoints import GENERATOR_FILE
from volgan.gan.label_maps import enforce_class
from volgan.gan.networks import ImageGenerator, LabelGenerator, grid_shape
from volgan.gan.pose import missing_spread, pose_spread
from volgan.labels import NUM_LABELS, NUM_TUMOR_TYPES
from volgan.transforms import model_grid, resample


@dataclass
class Synthesizer:
    label_generator: LabelGenerator
    image_generator: ImageGenerator
    config: dict
    stats: dict
    device: torch.device

    @property
    def shape(self) -> tuple[int, int, int]:
        """The generators' grid (X, Y, Z) in voxels."""
        return grid_shape(self.config["size"])

    @property
    def affine(self) -> np.ndarray:
        """RAS affine of the generators' grid: training spacing, centred on the origin."""
        spacing = np.asarray(self.config["spacing"], dtype=np.float64)
        affine = np.diag([*spacing, 1.0])
        affine[:3, 3] = -spacing * (np.asarray(self.shape, dtype=np.float64) - 1) / 2.0
        return affine

    @cached_property
    def pose_spread(self) -> list[float] | None:
        """Spread (:data:`volgan.gan.pose.POSE_FIELDS` units) of the random pose given to each generated map: what
        the training maps' spread (``stats["pose_std"]``) has beyond the label generator's own, measured on 32
        seeded draws. None for a checkpoint without the training maps' pose statistics."""
        target = self.stats.get("pose_std")
        if target is None:
            return None
        noise, own = torch.Generator().manual_seed(0), []
        with torch.no_grad():
            for start in range(0, 32, 8):
                classes = torch.arange(start, start + 8) % NUM_TUMOR_TYPES
                z = torch.randn(8, self.label_generator.z_dim, generator=noise)
                logits = self.label_generator(z.to(self.device), classes.to(self.device))
                own += [enforce_class(lg, int(c)) for lg, c in zip(logits, classes, strict=True)]
        return [round(v, 4) for v in missing_spread(target, pose_spread(own))]


def load_synthesizer(path: str | os.PathLike, device: str | torch.device | None = None) -> Synthesizer:
    """Load a trained spine_cgan's generators.

    Parameters
    ----------
    path : str | os.PathLike
        ``generator.pt``, or a bundle folder (its ``models/generator.pt``).
    device : str | torch.device | None
        where the generators run (None: CUDA when available, else the CPU).

    Returns
    -------
    Synthesizer
        The EMA generators in eval mode with the training data's config and statistics (grid, spacing in mm,
        orientation, intensity scale, pose spread, tumor sizes).

    Raises
    ------
    VolganInputError
        naming the file, when it is missing, not a generator checkpoint, holds non-finite
        weights, or does not fit the generators.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "models" / GENERATOR_FILE if (path / "models").is_dir() else path / GENERATOR_FILE
    if not path.is_file():
        raise VolganInputError(path, "no such generator checkpoint")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        config, stats = state["config"], state["stats"]
    except Exception as exc:
        raise VolganInputError(path, f"not a spine_cgan generator checkpoint ({type(exc).__name__})") from None
    from volgan.training import all_finite

    bad = [k for k in ("label_generator", "image_generator") if not all_finite(state.get(k, {}))]
    if bad:
        raise VolganInputError(path, f"the {' and '.join(bad)} weights hold NaN or Inf; this checkpoint cannot "
                                     "synthesize (retrain it)")
    check_generator_config(config, path)
    device = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    label_g = LabelGenerator(config["size"], z_dim=config["z_label"], base=config["base"])
    image_g = ImageGenerator(config["size"], z_dim=config["z_image"], base=config["base"])
    try:
        label_g.load_state_dict(state["label_generator"])
        image_g.load_state_dict(state["image_generator"])
    except (RuntimeError, KeyError) as exc:
        raise VolganInputError(path, f"checkpoint does not fit the generators ({str(exc).splitlines()[0][:120]})") \
            from None
    return Synthesizer(label_g.to(device).eval(), image_g.to(device).eval(), config, stats, device)


def check_generator_config(config: object, path: str | os.PathLike) -> None:
    """Refuse a generator checkpoint whose config cannot describe a grid: ``size`` one side or three that the
    networks build (:func:`volgan.gan.networks.grid_shape`), ``spacing`` three positive finite mm, ``base``,
    ``z_label`` and ``z_image`` positive whole numbers.

    Parameters
    ----------
    config : object
        the checkpoint's ``config``.
    path : str | os.PathLike
        the checkpoint, named in the error.

    Raises
    ------
    VolganInputError
        naming ``path`` and the first bad entry.
    """
    import math

    if not isinstance(config, dict):
        raise VolganInputError(path, "not a spine_cgan generator checkpoint (its config is not a mapping)")
    try:
        grid_shape(config.get("size"))
    except (TypeError, ValueError) as error:
        raise VolganInputError(path, f"generator config: {error}") from None
    for key in ("base", "z_label", "z_image"):
        value = config.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise VolganInputError(path, f"generator config: {key} {value!r} is not a positive whole number")
    spacing = config.get("spacing")
    if not (isinstance(spacing, (list, tuple)) and len(spacing) == 3
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0
                    for v in spacing)):
        raise VolganInputError(path, f"generator config: spacing {spacing!r} is not three positive finite mm")


def case_noise(seed: int, index: int) -> torch.Generator:
    """The random source of case ``index`` of a run with ``seed``: its label map, pose and image noise are drawn
    from it, so a case depends on (seed, index) alone.

    Parameters
    ----------
    seed : int
        the run's seed.
    index : int
        the case's index.

    Returns
    -------
    torch.Generator
        a CPU generator seeded from both.
    """
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, index]).generate_state(1)[0]))


def paint_inputs(synth: Synthesizer, label: np.ndarray, noise: torch.Generator
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What the image generator takes for a label map on its grid, on the CPU.

    Parameters
    ----------
    synth : Synthesizer
        the synthesizer whose image generator paints.
    label : np.ndarray
        (X, Y, Z) integer label map.
    noise : torch.Generator
        the case's random generator; the global noise is drawn from it, then the per-voxel texture.

    Returns
    -------
    tuple[torch.Tensor, torch.Tensor, torch.Tensor]
        The one-hot map (1, 6, X, Y, Z) float32, the global noise (1, z_dim) and the texture (1, 1, X, Y, Z).
    """
    onehot = F.one_hot(torch.from_numpy(label.astype(np.int64)), NUM_LABELS).permute(3, 0, 1, 2)[None].float()
    z = torch.randn(1, synth.image_generator.z_dim, generator=noise)
    texture = torch.randn(1, 1, *label.shape, generator=noise)
    return onehot, z, texture


def training_intensity(stats: dict, image: np.ndarray) -> np.ndarray:
    """The image generator's z-normalised output in the training data's intensity units (float32, ≥ 0).

    Parameters
    ----------
    stats : dict
        the generators' training statistics (``intensity_mean``, ``intensity_std``).
    image : np.ndarray
        the generator's z-normalised output (any shape).

    Returns
    -------
    np.ndarray
        the image in training intensity units, same shape.
    """
    scaled = image * stats["intensity_std"] + stats["intensity_mean"]
    return np.clip(scaled, 0, None).astype(np.float32)


@torch.no_grad()
def paint(synth: Synthesizer, label: np.ndarray, noise: torch.Generator) -> np.ndarray:
    """Image ((X, Y, Z) float32, training intensity units) for a label map on the generators' grid.

    Parameters
    ----------
    synth : Synthesizer
        the loaded generators.
    label : np.ndarray
        (X, Y, Z) label map on the generators' grid.
    noise : torch.Generator
        the case's random source (its image noise and texture are drawn from it).

    Returns
    -------
    np.ndarray
        (X, Y, Z) float32 image, in training intensity units.
    """
    onehot, z, texture = paint_inputs(synth, label, noise)
    image = synth.image_generator(onehot.to(synth.device), z.to(synth.device), texture.to(synth.device))
    return training_intensity(synth.stats, image[0, 0].float().cpu().numpy())


def to_generator_grid(synth: Synthesizer, label: Volume) -> tuple[np.ndarray, np.ndarray, tuple, list, list]:
    """A label map on the generators' grid: resampled (nearest) onto a RAS grid of the training spacing, then
    centre-cropped or padded to its shape. Returns ((X, Y, Z) uint8 map, that RAS grid's affine and shape, and the
    slices ``src`` of the grid and ``dst`` of the generators' map that correspond).

    Parameters
    ----------
    synth : Synthesizer
        the loaded generators (their grid: size S and training spacing).
    label : Volume
        a label map, any grid.

    Returns
    -------
    tuple[np.ndarray, np.ndarray, tuple, list, list]
        (X, Y, Z) uint8 map on the generators' grid, the RAS grid's affine (4×4, mm) and shape, and the matching
        slices of that grid and of the generators' map.
    """
    affine, shape = model_grid(label.affine, label.shape, synth.config["spacing"])
    on_grid = resample(torch.from_numpy(label.array[None].astype(np.int64)), label.affine, affine, shape, "nearest")[0]
    crop = np.zeros(synth.shape, np.uint8)
    src, dst = [], []
    for n, s in zip(shape, synth.shape, strict=True):
        start = (n - s) // 2
        src.append(slice(max(start, 0), max(start, 0) + min(n, s)))
        dst.append(slice(max(-start, 0), max(-start, 0) + min(n, s)))
    crop[tuple(dst)] = on_grid.numpy()[tuple(src)]
    return crop, affine, shape, src, dst
