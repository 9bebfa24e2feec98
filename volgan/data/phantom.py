"""Labeled spinal MRI phantoms: volgan's embedded default data.

A case is a spine segment of 3–5 vertebrae (body and posterior elements) with discs between them,
the canal filled with CSF and the cord inside it, in muscle and fat, drawn in millimetres on a RAS
grid and then given T1- or T2-weighted intensities, partial-volume blur, a bias field and Rician
noise. Tumors of the three types of docs/design.md are placed where their type says. By default anatomy is
scaled to the field of view (a 96 mm field, 64 voxels of 1.5 mm, holds a natural-size lumbar segment); with
``anatomy_field_mm`` set, it is drawn for that field and the grid shows its centre, so a small grid holds a
crop of the spine at natural size instead of a shrunken spine.

Every case depends only on ``(seed, index)`` and the :class:`PhantomConfig`, so datasets can be made in
parallel or extended without changing the cases already made.
"""

from __future__ import annotations

import math
import multiprocessing
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from volgan.data.anatomy import REGIONS, Anatomy, local_coordinates
from volgan.data.datalist import DATASET_FILE, FORMATS, Case, balanced_test_split, layout_paths, write_datalist
from volgan.data.files import staged_output_dir
from volgan.data.io import Volume, reorient, write_nifti
from volgan.data.summary import case_stats
from volgan.errors import VolganInputError

# Tissue intensities (arbitrary units, 1.0 = fat on T1) before per-case jitter.
TISSUES = ("air", "fat", "muscle", "body", "posterior", "disc", "csf", "cord")
INTENSITY = {
    "t1": {"air": 0.0, "fat": 0.95, "muscle": 0.35, "body": 0.65, "posterior": 0.55, "disc": 0.40,
           "csf": 0.12, "cord": 0.50},
    "t2": {"air": 0.0, "fat": 0.80, "muscle": 0.25, "body": 0.45, "posterior": 0.35, "disc": 0.70,
           "csf": 0.95, "cord": 0.40},
}
CONTRASTS = (*INTENSITY, "random")
# Domain randomisation (contrast "random", SynthSeg's recipe, arXiv 2107.09559, on volgan's label maps): per case,
# every tissue's mean intensity uniform in this range (air stays dark), so cord, CSF, fat and bone take any order
# of brightness that T1w, T2w, T2*w or MT-weighted spinal MRI gives them; and these ranges of partial-volume blur
# (voxels), bias-field coefficients, Rician noise (relative to the brightest tissue) and slice thickness (the
# blur along one random axis, in voxels: 2D stacks of 3–8 mm slices). Cord and CSF differ by at least
# RANDOM_CORD_CSF, as on every sequence used to image the cord (T1w, T2w, T2*w, MT); a case where they match
# shows no cord to learn (measured: with no such floor the quick recipe learned no cord at all).
RANDOM_TISSUE = (0.05, 1.0)
RANDOM_CORD_CSF = 0.25
RANDOM_BLUR = (0.3, 1.2)
RANDOM_BIAS = (0.0, 0.5)
RANDOM_NOISE = (0.01, 0.06)
RANDOM_SLICE_BLUR = (0.0, 2.5)
ORIENTATIONS = ("RAS", "LPS", "LAS", "RPI", "PIR", "ASL", "SRA", "ILP")
GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


@dataclass(frozen=True)
class PhantomConfig:
    """What every case of a dataset shares.

    ``size`` in voxels and ``spacing`` in mm are per RAS axis (left-right, posterior-anterior,
    inferior-superior) before reorientation. ``orientation`` is an axis code such as ``"LPS"`` or
    ``"random"`` (a code per case from :data:`ORIENTATIONS`). ``tumor_fraction`` of the cases carry a
    tumor, split evenly over ``types``; ``overlap_fraction`` of the tumors have a contrast within
    ±8% of the tissue they sit in. ``anatomy_field_mm`` (None: the grid's own field) is the cubic field, in
    mm, that the anatomy is scaled to: :data:`REFERENCE_FOV_MM` draws it at natural size whatever the grid,
    and a grid smaller than that field shows the centre of it (every tumor lies inside the grid).
    """

    size: tuple[int, int, int] = (64, 64, 64)
    spacing: tuple[float, float, float] = (1.5, 1.5, 1.5)
    contrast: str = "t2"
    tumor_fraction: float = 0.75
    types: tuple[int, ...] = (1, 2, 3)
    orientation: str = "RAS"
    overlap_fraction: float = 0.3
    noise: float = 0.025  # Rician noise sigma relative to the fat intensity
    blur: float = 0.6  # partial-volume blur, Gaussian sigma in voxels
    bias: float = 0.3  # bias-field polynomial coefficient range
    anatomy_field_mm: float | None = None
    clutter: bool = False  # soft-tissue clutter outside the spine, labeled background
    region: str = "auto"  # "lumbar", "cervical" or "auto": cervical for contrast "random", else lumbar

    @property
    def anatomy_region(self) -> str:
        """The region drawn (:data:`volgan.data.anatomy.REGIONS`): ``region``, with ``"auto"`` resolved."""
        if self.region != "auto":
            return self.region
        return "cervical" if self.contrast == "random" else "lumbar"

    def __post_init__(self):
        if self.contrast not in CONTRASTS:
            raise ValueError(f"contrast must be one of {', '.join(CONTRASTS)}, got {self.contrast!r}")
        if self.region not in ("auto", *REGIONS):
            raise ValueError(f"region must be one of auto, {', '.join(REGIONS)}, got {self.region!r}")
        if not 0.0 <= self.tumor_fraction <= 1.0:  # also refuses NaN
            raise ValueError(f"tumor fraction must lie in [0, 1], got {self.tumor_fraction}")
        if not self.types or any(t not in (1, 2, 3) for t in self.types):
            raise ValueError(f"types must be a non-empty subset of 1, 2, 3, got {self.types}")
        if len(self.size) != 3 or min(self.size) < 16:
            raise ValueError(f"size must be three numbers of at least 16 voxels, got {self.size}")
        if len(self.spacing) != 3 or not all(0 < s < float("inf") for s in self.spacing):
            raise ValueError(f"spacing must be three positive finite numbers in mm, got {self.spacing}")
        if self.anatomy_field_mm is not None and not 16.0 <= self.anatomy_field_mm <= 1000.0:
            raise ValueError(f"anatomy field must lie in 16 … 1000 mm, got {self.anatomy_field_mm}")
        if self.orientation != "random":
            try:
                assert len(self.orientation) == 3
                ornt = nib.orientations.axcodes2ornt(tuple(self.orientation.upper()))
                assert not np.isnan(ornt).any() and len(set(ornt[:, 0].astype(int))) == 3  # each axis once
            except Exception:
                raise ValueError(f"orientation must be a 3-letter code such as RAS or 'random', "
                                 f"got {self.orientation!r}") from None


@dataclass
class PhantomCase:
    """One generated case: image (float32) and label map (uint8) in the same geometry."""

    index: int
    tumor_type: int
    image: Volume
    label: Volume
    info: dict = field(default_factory=dict)


def tumor_type_for(seed: int, index: int, tumor_fraction: float, types: tuple[int, ...]) -> int:
    """The class of case ``index``: a golden-ratio sequence, so every prefix of a dataset holds the
    asked fractions to within a case or two, and the class depends only on ``(seed, index)``.

    Parameters
    ----------
    seed : int
        the data set's seed.
    index : int
        the case's index.
    tumor_fraction : float
        the share of cases with a tumor, in [0, 1].
    types : tuple[int, ...]
        the tumor types drawn among (1–3).

    Returns
    -------
    int
        the case's tumor_type (0 for none).
    """
    offset = np.random.default_rng([seed, 0x7A3B]).random()
    u = (offset + index * GOLDEN) % 1.0
    if u >= tumor_fraction:
        return 0
    return types[min(int(u / tumor_fraction * len(types)), len(types) - 1)]


def generate_case(seed: int, index: int, config: PhantomConfig = PhantomConfig()) -> PhantomCase:
    """Make case ``index`` of the dataset ``seed``.

    Parameters
    ----------
    seed : int
        the data set's seed.
    index : int
        the case's index; the case depends on ``(seed, index, config)`` alone.
    config : PhantomConfig
        the phantom's size, spacing, orientation, contrast and tumor settings.

    Returns
    -------
    PhantomCase
        the image (X, Y, Z, float32), label map (X, Y, Z, uint8, labels 0–5), tumor_type and affine (4×4, mm).
    """
    rng = np.random.default_rng([seed, index])
    tumor_type = tumor_type_for(seed, index, config.tumor_fraction, config.types)
    shape = tuple(int(s) for s in config.size)
    spacing = np.asarray(config.spacing, dtype=np.float64)
    fov = np.asarray(shape) * spacing

    x, y, z = local_coordinates(rng, shape, spacing, fov)
    field = fov if config.anatomy_field_mm is None else np.full(3, float(config.anatomy_field_mm))
    anatomy = Anatomy(rng, field, spacing, x, y, z, visible_z=fov[2] / 2.0, region=config.anatomy_region)
    tumor, tumor_info = anatomy.place_tumor(rng, tumor_type, spacing)
    label = anatomy.label_map(tumor)
    image, look = _appearance(rng, config, anatomy, tumor, tumor_type)

    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = -spacing * (np.asarray(shape) - 1) / 2.0
    code = config.orientation.upper()
    if code == "RANDOM":
        code = ORIENTATIONS[int(rng.integers(len(ORIENTATIONS)))]
    image, label, affine = reorient(image, label, affine, code)
    info = {"n_vertebrae": anatomy.n_vertebrae, "orientation": code, **tumor_info, **look}
    return PhantomCase(index, tumor_type, Volume(image, affine), Volume(label, affine), info)


def _appearance(rng, config: PhantomConfig, anatomy: Anatomy, tumor, tumor_type: int) -> np.ndarray:
    """Intensities: tissue values with jitter and texture, tumor contrast, blur, bias field, Rician noise.

    Returns float32 in arbitrary units (fat ≈ 1000 on T1), and for contrast ``"random"`` what was drawn
    (``{"contrast": {tissue: intensity}, "blur": …, "bias": …, "noise": …, "slice_blur": [axis, sigma]}``).
    """
    look: dict = {}
    blur, bias, noise = config.blur, config.bias, config.noise
    if config.contrast == "random":
        table = {k: 0.0 if k == "air" else float(rng.uniform(*RANDOM_TISSUE)) for k in TISSUES}
        while abs(table["cord"] - table["csf"]) < RANDOM_CORD_CSF:  # every cord sequence shows the cord in its CSF
            table["cord"] = float(rng.uniform(*RANDOM_TISSUE))
        blur, bias, noise = (float(rng.uniform(*r)) for r in (RANDOM_BLUR, RANDOM_BIAS, RANDOM_NOISE))
        slice_axis, slice_blur = int(rng.integers(3)), float(rng.uniform(*RANDOM_SLICE_BLUR))
        look = {"contrast": {k: round(v, 4) for k, v in table.items()}, "blur": round(blur, 4),
                "bias": round(bias, 4), "noise": round(noise, 4), "slice_blur": [slice_axis, round(slice_blur, 4)]}
    else:
        table = {k: v * rng.uniform(0.9, 1.1) for k, v in INTENSITY[config.contrast].items()}
    s = anatomy.scale
    image = np.full(anatomy.u.shape, table["air"], dtype=np.float32)
    inside = anatomy.outer < 1.0
    image[inside] = table["muscle"]
    image[inside & (anatomy.outer > (1.0 - 6.0 * s / 40.0) ** 2)] = table["fat"]  # subcutaneous fat
    front = anatomy.body_u + anatomy.body_r[1] + 3.0 * s
    image[inside & (anatomy.u > front)] = table["fat"] * 0.8  # retroperitoneal fat
    image[anatomy.canal] = table["csf"]
    image[anatomy.cord] = table["cord"]
    image[anatomy.posterior] = table["posterior"]
    image[anatomy.body & ~anatomy.canal] = table["body"]
    disc = anatomy.disc & ~anatomy.canal & ~anatomy.body
    image[disc] = table["disc"]
    image *= 1.0 + 0.06 * _smooth_noise(rng, image.shape)  # tissue texture
    if config.clutter:
        _add_clutter(rng, image, inside & ~(anatomy.canal | anatomy.cord | anatomy.posterior | anatomy.body
                                            | anatomy.disc | tumor), config.spacing)
    if tumor_type:
        host_value = float(np.median(image[anatomy.tumor_host & ~tumor])) if (anatomy.tumor_host & ~tumor).any() \
            else float(np.median(image[tumor]))
        if rng.random() < config.overlap_fraction:
            value = host_value * (1.0 + rng.uniform(-0.08, 0.08))
        else:
            step = rng.uniform(0.2, 0.4)
            value = host_value + step if host_value + step <= 1.1 else host_value - step
        texture = 1.0 + 0.1 * _smooth_noise(rng, image.shape, cells=6)
        image[tumor] = (value * texture[tumor]).astype(np.float32)
    if look:
        sigma = [blur] * 3
        sigma[look["slice_blur"][0]] = float(np.hypot(blur, look["slice_blur"][1]))  # thick slices along one axis
        image = ndimage.gaussian_filter(image, sigma=sigma, mode="nearest")
    elif blur > 0:
        image = ndimage.gaussian_filter(image, sigma=blur, mode="nearest")
    image *= _bias_field(rng, image.shape, bias)
    sigma = noise * (max(table.values()) if look else table["fat"])
    real = image + rng.normal(0.0, sigma, image.shape).astype(np.float32)
    imag = rng.normal(0.0, sigma, image.shape).astype(np.float32)
    return (np.sqrt(real * real + imag * imag) * 1000.0).astype(np.float32), look


CLUTTER_BLOBS = (80, 200)  # blobs per case
CLUTTER_RADIUS_MM = (1.0, 6.0)


def _add_clutter(rng, image: np.ndarray, soft: np.ndarray, spacing) -> None:
    """Paint what real soft tissue holds and a plain phantom lacks, in place: blobs of any brightness (vessels, fat
    islands, lymph nodes, nerve roots; radius 1–5 mm) and fine multi-scale texture (muscle fibres, fascia), only
    in ``soft`` (outside the spine, the canal and the tumor), where the label map says background. A segmenter
    trained on such phantoms learns that an odd bright or dark spot outside the spine is no tumor.

    ``image``: (X, Y, Z) intensities; ``soft``: (X, Y, Z) bool; ``spacing``: mm per axis.
    """
    spacing = np.asarray(spacing, dtype=np.float64)
    candidates = np.argwhere(soft)
    if not len(candidates):
        return
    image[soft] *= (1.0 + 0.25 * _smooth_noise(rng, image.shape, cells=16))[soft]
    for _ in range(int(rng.integers(*CLUTTER_BLOBS))):
        centre = candidates[int(rng.integers(len(candidates)))]
        radii = rng.uniform(*CLUTTER_RADIUS_MM, size=3) / spacing
        low = np.maximum(centre - np.ceil(radii).astype(int), 0)
        high = np.minimum(centre + np.ceil(radii).astype(int) + 1, image.shape)
        box = tuple(slice(a, b) for a, b in zip(low, high, strict=True))
        grid = np.ogrid[box]
        inside = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii, strict=True)) <= 1.0
        inside &= soft[box]
        image[box][inside] = float(rng.uniform(0.02, 1.0))


def _smooth_noise(rng, shape, cells: int = 4) -> np.ndarray:
    """Zero-mean smooth noise in [-1, 1]: a ``cells``³ random grid upsampled linearly to ``shape``."""
    coarse = rng.uniform(-1, 1, (cells, cells, cells)).astype(np.float32)
    zoom = [n / cells for n in shape]
    return ndimage.zoom(coarse, zoom, order=1, mode="nearest", grid_mode=True)


def _bias_field(rng, shape, strength: float) -> np.ndarray:
    """A multiplicative field exp(Σ c·x^i y^j z^k), i+j+k ≤ 2, coefficients in ±``strength``."""
    axes = [np.linspace(-1, 1, n, dtype=np.float32) for n in shape]
    x, y, z = axes[0][:, None, None], axes[1][None, :, None], axes[2][None, None, :]
    log_field = np.zeros(shape, dtype=np.float32)
    for i in range(3):
        for j in range(3 - i):
            for k in range(3 - i - j):
                if i + j + k:
                    log_field += rng.uniform(-strength, strength) * (x**i) * (y**j) * (z**k)
    return np.exp(log_field)


def config_dict(config: PhantomConfig) -> dict:
    """The configuration as JSON-ready values, recorded in the datalist.

    Parameters
    ----------
    config : PhantomConfig
        the configuration.

    Returns
    -------
    dict
        its fields as lists, numbers and strings.
    """
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()}


DATASET_ENTRIES = ("dataset.json", "imagesTr", "labelsTr", "imagesTs", "labelsTs")


def case_name(index: int) -> str:
    """The name of phantom case ``index``: ``phantom_00007`` for 7.

    Parameters
    ----------
    index : int
        the case's index.

    Returns
    -------
    str
        the name.
    """
    return f"phantom_{index:05d}"


def _write_case(job: tuple[int, int, PhantomConfig, str, str, str]) -> tuple[Case, dict]:
    """Generate one case and write its image and label; runs in a worker process."""
    seed, index, config, split, root, fmt = job
    case = generate_case(seed, index, config)
    image_path, label_path = layout_paths(Path(root), case_name(index), split, fmt)
    write_nifti(case.image, image_path)
    write_nifti(case.label, label_path)
    stats = case_stats(case.image.array, case.label.array, case.image.spacing)
    stats.update(case.info)
    return Case(case_name(index), image_path, label_path, case.tumor_type, "real", split), stats


def make_dataset(out: str | os.PathLike, n_cases: int, config: PhantomConfig = PhantomConfig(), seed: int = 0,
                 fmt: str = "msd", test_fraction: float = 0.2, workers: int = 1, overwrite: bool = False,
                 start: int = 0, progress: bool = False) -> tuple[Path, list[Case], list[dict]]:
    """Write cases ``start .. start + n_cases - 1`` of dataset ``seed`` and their datalist under ``out``.

    The test split (``test_fraction`` of the cases, the same number of each class) never changes with
    ``workers``. Everything is built in a staging folder and moved into ``out`` at the end.

    Parameters
    ----------
    out : str | os.PathLike
        the dataset folder.
    n_cases : int
        how many cases.
    config : PhantomConfig
        the phantom's field (voxels, spacing in mm), contrast and tumor shares.
    seed : int
        the dataset; case ``i`` depends only on ``(seed, i)`` and ``config``.
    fmt : str
        the datalist's form, ``"msd"`` or ``"nnunet"``.
    test_fraction : float
        the share of cases in the test split.
    workers : int
        processes that draw the cases.
    overwrite : bool
        replace a dataset already in ``out``.
    start : int
        the first case's index.
    progress : bool
        show a progress bar.

    Returns
    -------
    tuple[Path, list[Case], list[dict]]
        The datalist path, the cases, and each case's statistics (see :func:`case_stats`).
    """
    if n_cases < 1:
        raise VolganInputError(None, f"--cases must be at least 1, got {n_cases}")
    if not 0.0 <= test_fraction < 1.0:
        raise VolganInputError(None, f"--test-fraction must lie in [0, 1), got {test_fraction}")
    if fmt not in FORMATS:
        raise VolganInputError(None, f"--format must be one of {FORMATS}, got {fmt!r}")
    if start < 0:
        raise VolganInputError(None, f"--start-index must be 0 or more, got {start}")
    if not 0 <= seed < 2**32:
        raise VolganInputError(None, f"--seed must lie in 0 … 2³²−1, got {seed}")
    if workers < 1:
        raise VolganInputError(None, f"--workers must be at least 1, got {workers}")
    indices = list(range(start, start + n_cases))
    types = [tumor_type_for(seed, i, config.tumor_fraction, config.types) for i in indices]
    test = balanced_test_split(types, round(test_fraction * n_cases), seed)
    out = Path(out)
    with staged_output_dir(out, DATASET_ENTRIES, overwrite) as staging:
        jobs = [(seed, i, config, "test" if k in test else "training", str(staging), fmt)
                for k, i in enumerate(indices)]
        results = list(_map(_write_case, jobs, workers, progress, "phantom"))
        cases = [c for c, _ in results]
        meta = {"volgan": {"generator": "volgan.data.phantom", "seed": seed, "config": config_dict(config)}}
        write_datalist(cases, staging, fmt, meta if fmt == "msd" else meta["volgan"])
    for case in cases:  # paths now lie in ``out``
        case.image = out / case.image.relative_to(staging)
        case.label = out / case.label.relative_to(staging)
    return out / DATASET_FILE, cases, [s for _, s in results]


def _map(fn, jobs: list, workers: int, progress: bool, desc: str):
    """``map(fn, jobs)`` in order, over ``workers`` processes when > 1, with a tqdm bar if ``progress``."""
    from tqdm import tqdm

    bar = tqdm(total=len(jobs), desc=desc, unit="case", disable=not progress, leave=False)
    if workers <= 1 or len(jobs) < 2:
        for job in jobs:
            yield fn(job)
            bar.update()
    else:
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(min(workers, len(jobs))) as pool:
            for result in pool.imap(fn, jobs, chunksize=max(1, len(jobs) // (8 * workers))):
                yield result
                bar.update()
    bar.close()
