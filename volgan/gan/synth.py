"""Synthesis with a trained spine_cgan: labeled volumes from a class, or images for given label maps.

Class → volume: the EMA label generator draws a label map for the class; the class is enforced (no label 5
for ``none``; otherwise a tumor of a size drawn from the training tumors of the class, in its host tissue,
where the generator's tumor logit stands highest) and the tumor's site is checked against its class by the
labels around it (:func:`tumor_site`), drawing again up to ``max_tries`` times; the image generator then
paints the image. Volumes come out in the training data's spacing, orientation and intensity range, as ``.nii.gz``
pairs with an MSD datalist whose entries say ``source: synthetic``. Case ``i`` depends only on
``(seed, i)`` and the class it was asked for.

``label_source="real-deformed"`` makes each label map from a real training map of the GAN's own pool instead
(:func:`deformed_real_label`, the SynthSeg / TumorCP family of label-map augmentation): a map of the asked class,
a smooth random elastic deformation and a rigid pose, its tumor removed, and a new tumor of the asked class grown
in its host tissue at the old one's site, with a size drawn from the pool's tumors of that class. A learned label
generator trained on 12 to 24 maps is data-starved (HA-GAN's authors ask for some 3,000 images to avoid mode
collapse); a real map, deformed, keeps the anatomy a segmenter expects. The image generator paints both alike.
"""

from __future__ import annotations

import heapq
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from volgan.data.datalist import Case, layout_paths, write_datalist
from volgan.data.files import staged_output_dir
from volgan.data.io import Volume, read_volume, reorient, volume_files, volume_stem, write_nifti
from volgan.errors import VolganInputError
from volgan.gan.checkpoints import GENERATOR_FILE
from volgan.gan.networks import ImageGenerator, LabelGenerator, grid_shape
from volgan.gan.pose import POSE_FIELDS, missing_spread, pose_spread, random_pose
from volgan.labels import NUM_LABELS, NUM_TUMOR_TYPES, TUMOR_LABEL, TUMOR_TYPES, tumor_type_from_name
from volgan.transforms import model_grid, resample

SYNTH_ENTRIES = ("dataset.json", "imagesTr", "labelsTr")
FACES = ndimage.generate_binary_structure(3, 1)


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
                own += [_enforce_class(lg, int(c)) for lg, c in zip(logits, classes, strict=True)]
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


def exact_counts(spec: str | None, n: int) -> dict[int, int]:
    """Exact counts per class for ``n`` cases from class shares (largest remainder).

    Parameters
    ----------
    spec : str | None
        ``"none=0.5,intramedullary=0.2,..."``, shares adding up to 1; None: the four classes in equal shares.
    n : int
        The number of cases.

    Returns
    -------
    dict[int, int]
        The count of each ``tumor_type`` (0-3), summing to ``n``.

    Raises
    ------
    VolganInputError
        naming ``--types``, for an unknown class, a bad or negative share, or shares not adding up to 1.
    """
    if spec is None:
        shares = {k: 1.0 for k in TUMOR_TYPES}
    else:
        shares = {}
        for part in (p for p in spec.split(",") if p.strip()):
            name, _, value = part.partition("=")
            try:
                cls, share = tumor_type_from_name(name), float(value)
            except ValueError as exc:
                raise VolganInputError(None, f"--types: {exc if 'unknown' in str(exc) else f'bad share in {part!r}'}") \
                    from None
            if share < 0 or not np.isfinite(share):
                raise VolganInputError(None, f"--types: share of {name} must be a non-negative number")
            shares[cls] = shares.get(cls, 0.0) + share
    total = sum(shares.values())
    if spec is not None and abs(total - 1.0) > 1e-6:
        raise VolganInputError(None, f"--types: shares add up to {total:g}, not 1; give shares that sum to 1 "
                                     "(the counts are exact, so volgan does not rescale them)")
    exact = {k: n * v / total for k, v in shares.items()}
    counts = {k: int(np.floor(v)) for k, v in exact.items()}
    for k in sorted(exact, key=lambda k: (-(exact[k] - counts[k]), k))[: n - sum(counts.values())]:
        counts[k] += 1
    return {k: counts.get(k, 0) for k in TUMOR_TYPES}


def tumor_site(label: np.ndarray) -> int:
    """Where the tumor sits, judged by the labels touching it (6-connectivity).

    Parameters
    ----------
    label : np.ndarray
        (X, Y, Z) label map.

    Returns
    -------
    int
        3 vertebral (mostly bone around it), 1 intramedullary (more cord than CSF), 2 intradural
        extramedullary (more CSF); 0 when the map has no tumor.
    """
    tumor = label == TUMOR_LABEL
    if not tumor.any():
        return 0
    shell = ndimage.binary_dilation(tumor, FACES) & ~tumor
    share = np.bincount(label[shell], minlength=NUM_LABELS) / max(int(shell.sum()), 1)
    if share[1] + share[2] >= 0.5:
        return 3
    return 1 if share[3] >= share[4] else 2


TUMOR_HOSTS = {1: (3,), 2: (4,), 3: (1,)}  # docs/design.md: in the cord; in the canal outside the cord; in a vertebra


def grow_region(score: np.ndarray, size: int, preferred: np.ndarray | None = None) -> np.ndarray:
    """A face-connected region of ``size`` voxels of an (X, Y, Z) grid, grown from the highest-``score`` voxel of
    ``preferred`` (bool, (X, Y, Z); everything when None or empty), each step taking the bordering voxel of highest
    score among the preferred ones, and others only when no preferred voxel borders the region.

    Parameters
    ----------
    score : np.ndarray
        (X, Y, Z) float scores.
    size : int
        the region's size in voxels.
    preferred : np.ndarray | None
        (X, Y, Z) bool voxels to grow through first, or None.

    Returns
    -------
    np.ndarray
        (X, Y, Z) bool region.
    """
    preferred = np.ones(score.shape, bool) if preferred is None or not preferred.any() else preferred
    region, taken = np.zeros(score.shape, bool), 0
    start = np.unravel_index(int(np.where(preferred, score, -np.inf).argmax()), score.shape)
    border, queued = [(False, -float(score[start]), start)], {start}
    while border and taken < size:
        *_, voxel = heapq.heappop(border)
        region[voxel], taken = True, taken + 1
        for axis in range(3):
            for step in (-1, 1):
                near = list(voxel)
                near[axis] += step
                near = tuple(near)
                if 0 <= near[axis] < score.shape[axis] and near not in queued:
                    queued.add(near)
                    heapq.heappush(border, (not preferred[near], -float(score[near]), near))
    return region


def _enforce_class(logits: torch.Tensor, tumor_type: int, tumor_size: int | None = None) -> np.ndarray:
    """Label map from (6, X, Y, Z) logits with label 5 present exactly when ``tumor_type`` ≠ 0.

    With ``tumor_size`` the tumor has that many voxels, grown (:func:`grow_region`) in its class's host label
    (:data:`TUMOR_HOSTS`) along the tumor logit's margin over the other labels, from where that margin is
    highest; without, the generator's own tumor is kept, or its most tumor-like voxel and face neighbours
    when it drew none."""
    anatomy = logits[:TUMOR_LABEL].argmax(0).to(torch.uint8).cpu().numpy()
    if tumor_type == 0:
        return anatomy
    margin = (logits[TUMOR_LABEL] - logits[:TUMOR_LABEL].max(0).values).float().cpu().numpy()
    if tumor_size is not None:
        anatomy[grow_region(margin, tumor_size, np.isin(anatomy, TUMOR_HOSTS[tumor_type]))] = TUMOR_LABEL
        return anatomy
    label = logits.argmax(0).to(torch.uint8).cpu().numpy()
    if not (label == TUMOR_LABEL).any():
        seed = np.zeros(label.shape, bool)
        seed[np.unravel_index(int(margin.argmax()), label.shape)] = True
        label[ndimage.binary_dilation(seed, FACES)] = TUMOR_LABEL
    return label


def _generator(seed: int, index: int) -> torch.Generator:
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


@torch.no_grad()
def draw_label_map(synth: Synthesizer, tumor_type: int, seed: int, index: int, max_tries: int = 8,
                   pose: bool = True) -> tuple[np.ndarray, dict, torch.Generator]:
    """The label map of case ``index`` of class ``tumor_type``, drawn by the label generator.

    The tumor's size in voxels is drawn from the training maps' sizes for the class (``stats["tumor_voxels"]``,
    when the checkpoint has them; :func:`_enforce_class`); with ``pose`` the map is given a random pose
    (:func:`volgan.gan.pose.random_pose`) with the synthesizer's :attr:`~Synthesizer.pose_spread`. A map whose
    tumor's site does not fit its class (:func:`tumor_site`) is drawn again, up to ``max_tries`` times.

    Parameters
    ----------
    synth : Synthesizer
        the loaded generators and their training statistics.
    tumor_type : int
        the class, 0–3.
    seed : int
        the run's seed.
    index : int
        the case's index; the map depends on (seed, index) alone.
    max_tries : int
        draws at most, until the tumor's site fits the class.
    pose : bool
        give the map a random pose.

    Returns
    -------
    tuple[np.ndarray, dict, torch.Generator]
        The (X, Y, Z) uint8 map on the generators' RAS grid, what was drawn (tries, whether the site was
        verified, the pose, the tumor's size), and the case's random generator, to paint the image with.
    """
    noise = _generator(seed, index)
    classes = torch.tensor([tumor_type], device=synth.device)
    sizes = synth.stats.get("tumor_voxels", {}).get(str(tumor_type))
    tries = 0
    drawn = None
    while True:
        tries += 1
        z = torch.randn(1, synth.label_generator.z_dim, generator=noise)
        size = int(sizes[int(torch.randint(len(sizes), (1,), generator=noise))]) if sizes else None
        label = _enforce_class(synth.label_generator(z.to(synth.device), classes)[0], tumor_type, size)
        if pose and synth.pose_spread:
            moved, drawn = random_pose(label, noise, synth.pose_spread)
            if (moved == TUMOR_LABEL).any() == (tumor_type != 0):  # the tumor must stay in the field of view
                label = moved
            else:
                drawn = None
        site = tumor_site(label)
        if site == tumor_type or tries == max_tries:
            break
    info = {"tries": tries, "site_verified": bool(site == tumor_type), "pose": drawn, "tumor_voxels": size}
    return label, info, noise


LABEL_SOURCES = ("gan", "real-deformed")


def check_label_source(label_source: str) -> str:
    """``label_source`` if it is one of :data:`LABEL_SOURCES`; otherwise :class:`VolganInputError` naming the option.

    Parameters
    ----------
    label_source : str
        ``"gan"`` or ``"real-deformed"``.

    Returns
    -------
    str
        ``label_source``.

    Raises
    ------
    VolganInputError
        naming ``--label-source``, for anything else.
    """
    if label_source not in LABEL_SOURCES:
        raise VolganInputError(None, f"--label-source must be one of {', '.join(LABEL_SOURCES)}, got {label_source!r}")
    return label_source


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


def remove_tumor(label: np.ndarray) -> np.ndarray:
    """The map with its tumor removed.

    Parameters
    ----------
    label : np.ndarray
        (X, Y, Z) label map.

    Returns
    -------
    np.ndarray
        The map with each tumor voxel given the label of its nearest non-tumor voxel (the host tissue).
    """
    tumor = label == TUMOR_LABEL
    if not tumor.any() or tumor.all():
        return np.where(tumor, 0, label).astype(np.uint8)
    _, nearest = ndimage.distance_transform_edt(tumor, return_indices=True)
    return label[tuple(nearest)].astype(np.uint8)


def elastic_deform(label: np.ndarray, spacing, noise: torch.Generator, max_displacement_vox: float = 2.0,
                   control_points: int = 5) -> np.ndarray:
    """(X, Y, Z) map under a smooth random deformation: volgan's :class:`~volgan.transforms.
    RandomElasticDeformation` (torchio's B-spline field, ``control_points`` per axis, displacements up to
    ``max_displacement_vox`` voxels), nearest-neighbour, its random draws seeded from ``noise``.

    Parameters
    ----------
    label : np.ndarray
        (X, Y, Z) label map.
    spacing : tuple[float, float, float]
        its voxel size in mm.
    noise : torch.Generator
        the random source.
    max_displacement_vox : float
        the largest displacement, in voxels.
    control_points : int
        B-spline control points per axis.

    Returns
    -------
    np.ndarray
        (X, Y, Z) deformed map, same dtype.
    """
    import torchio as tio

    from volgan.transforms import RandomElasticDeformation

    spacing = np.asarray(spacing, dtype=np.float64)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(2**31 - 1, (1,), generator=noise)))
        transform = RandomElasticDeformation(num_control_points=control_points,
                                             max_displacement=tuple(max_displacement_vox * spacing))
        moved = transform(tio.LabelMap(tensor=torch.from_numpy(label[None].astype(np.int64)),
                                       affine=np.diag([*spacing, 1.0])))
    return moved.data[0].numpy().astype(np.uint8)


def place_tumor(label: np.ndarray, tumor_type: int, size: int, noise: torch.Generator,
                site: np.ndarray | None = None) -> np.ndarray:
    """The map with a tumor of ``size`` voxels for ``tumor_type`` (1–3) added: centred on a host voxel
    (:data:`TUMOR_HOSTS`; for vertebral ones, deep in the bone) in the middle 70% of the field along S, drawn
    with weight ∝ depth² in the host, and grown (:func:`grow_region`) through the host by distance from that
    centre bent by smooth noise, so its outline is irregular; an intramedullary tumor's cord widens by a voxel of
    CSF around it (not at the canal wall). With ``site`` ((X, Y, Z) bool) the centre is drawn from the host voxels
    inside it, when it holds any. A map with no host voxel comes back unchanged.

    Parameters
    ----------
    label : np.ndarray
        (X, Y, Z) label map, labels 0–4 (its tumor removed).
    tumor_type : int
        the class, 1–3.
    size : int
        the tumor's size in voxels.
    noise : torch.Generator
        the random source.
    site : np.ndarray | None
        (X, Y, Z) bool voxels to centre the tumor among (the removed tumor's site, widened), or None.

    Returns
    -------
    np.ndarray
        (X, Y, Z) map with the tumor (label 5).
    """
    host = np.isin(label, TUMOR_HOSTS[tumor_type])
    depth = ndimage.distance_transform_edt(host)
    lo, hi = int(0.15 * label.shape[2]), int(np.ceil(0.85 * label.shape[2]))
    weight = np.zeros(label.shape)
    weight[:, :, lo:hi] = depth[:, :, lo:hi] ** 2
    if tumor_type == 3:  # a vertebral body rather than a thin posterior element
        weight[depth < 0.6 * depth.max()] = 0.0
    if site is not None and (weight * site).sum() > 0:
        weight = weight * site
    if weight.sum() <= 0:
        return label
    pick = int(torch.multinomial(torch.from_numpy(weight.ravel() / weight.sum()), 1, generator=noise))
    centre = np.array(np.unravel_index(pick, label.shape), dtype=np.float64)
    grid = np.indices(label.shape, dtype=np.float64)
    distance = np.sqrt(sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True)))
    radius = max(1.0, (3.0 * size / (4.0 * np.pi)) ** (1 / 3))
    bend = torch.rand((4, 4, 4), generator=noise).numpy() * 2 - 1
    bend = ndimage.zoom(bend, [n / 4 for n in label.shape], order=1, mode="nearest", grid_mode=True)
    out = label.copy()
    tumor = grow_region(-distance + 0.6 * radius * bend, size, host)
    out[tumor] = TUMOR_LABEL
    if tumor_type == 1:  # the cord widens around its tumor (as in the phantom), never up to the canal wall
        wall = ndimage.binary_dilation(np.isin(label, (0, 1, 2)), FACES)
        out[ndimage.binary_dilation(tumor, FACES) & (label == 4) & ~wall] = 3
    return out


DEFAULT_PLACEMENT = "source"  # real-deformed maps: from a map of the class, the new tumor at the old one's site
PLACEMENTS = (DEFAULT_PLACEMENT, "anywhere")  # "anywhere": the rule before, kept to measure the difference


def deformed_real_label(synth: Synthesizer, pool: list[np.ndarray], tumor_type: int, seed: int, index: int,
                        max_tries: int = 8, placement: str = DEFAULT_PLACEMENT, pool_sites: list[int] | None = None
                        ) -> tuple[np.ndarray, dict, torch.Generator]:
    """A label map ((X, Y, Z), the generators' grid) for case ``index`` of class ``tumor_type`` made from a real map
    of ``pool`` ((X, Y, Z) maps of the GAN's training pool, :func:`to_generator_grid`) of the same class (a tumor-free
    map for a tumor-free case, one whose tumor site is the class's for a tumor class; any map when the pool has none):
    deformed (:func:`elastic_deform`), moved (:func:`volgan.gan.pose.random_pose`, half the pool's own pose spread,
    so the set's spread grows by about 12%), its tumor removed (:func:`remove_tumor`) and, for a tumor class, a new
    tumor grown (:func:`place_tumor`) in the host tissue at the removed one's site (within 2 voxels of it; anywhere
    in the host when that site has no room), its size drawn from the pool's tumors of the class
    (``stats["tumor_voxels"]``; the median of all classes' when the pool has none of it). Drawn again, from another
    map, until the tumor's site (:func:`tumor_site`) matches its class, up to ``max_tries`` times. Returns (map,
    info, the generator that then paints it). ``placement="anywhere"`` is the rule before: a map of any class, the
    new tumor anywhere in its host (kept to measure the difference; :data:`PLACEMENTS`). ``pool_sites``: each pool
    map's :func:`tumor_site`, when the caller has them (measured here otherwise).

    Why the source's class and site: a map whose tumor was removed keeps its imprint (an intramedullary tumor's
    widened cord, the shape around the site), and the image generator, trained on a small pool, paints the tumor
    it saw there. From any map, tumor-free volumes showed the study's real-only judge a tumor in 2 to 3 of 6, and
    new tumors elsewhere were found at about half the judge's real-test Dice (BENCHMARKS.md, "Label maps from the
    source's class and site").

    Parameters
    ----------
    synth : Synthesizer
        the loaded generators and their training statistics.
    pool : list[np.ndarray]
        (X, Y, Z) real label maps on the generators' grid.
    tumor_type : int
        the class, 0–3.
    seed : int
        the run's seed.
    index : int
        the case's index; the map depends on (seed, index) alone.
    max_tries : int
        draws at most, until the tumor's site fits the class.
    placement : str
        ``"source"`` (a map of the class, the tumor at the old one's site) or ``"anywhere"``.
    pool_sites : list[int] | None
        each pool map's tumor site, or None.

    Returns
    -------
    tuple[np.ndarray, dict, torch.Generator]
        the (X, Y, Z) uint8 map, what was drawn (source map, tries, site, size, pose), and the case's random
        generator.

    Raises
    ------
    VolganInputError
        for an unknown ``placement``.
    """
    noise = _generator(seed, index)
    sizes = synth.stats.get("tumor_voxels", {})
    own = [int(v) for v in sizes.get(str(tumor_type), [])]
    every = [int(v) for k, values in sizes.items() if k != "0" for v in values]
    spread = [0.5 * v for v in synth.stats.get("pose_std", [])]
    if placement not in PLACEMENTS:
        raise VolganInputError(None, f"placement must be one of {PLACEMENTS}, got {placement!r}")
    if placement == "source":
        sites = pool_sites if pool_sites is not None else [tumor_site(m) for m in pool]
        same_class = [i for i, site in enumerate(sites) if site == tumor_type]
    else:
        same_class = []
    candidates = same_class or list(range(len(pool)))
    tries = 0
    while tries < max_tries:
        tries += 1
        source = candidates[int(torch.randint(len(candidates), (1,), generator=noise))]
        label = elastic_deform(pool[source], synth.config["spacing"], noise)
        if spread:
            label, _ = random_pose(label, noise, spread)
        site = ndimage.binary_dilation(label == TUMOR_LABEL, FACES, iterations=2)
        label = remove_tumor(label)
        size = None
        if tumor_type:
            choices = own or every or [27]
            size = int(choices[int(torch.randint(len(choices), (1,), generator=noise))])
            label = place_tumor(label, tumor_type, size, noise, site=site if placement == "source" else None)
        verified = tumor_site(label) == tumor_type
        if verified:
            break
    info = {"tries": tries, "site_verified": bool(verified), "label_source": "real-deformed",
            "from_pool_index": source, "tumor_voxels": size}
    return label, info, noise


def read_pool(synth: Synthesizer, datalist: str | os.PathLike) -> tuple[list[np.ndarray], list[str]]:
    """The label maps that real-deformed label maps start from.

    Parameters
    ----------
    synth : Synthesizer
        Gives the generators' grid (size in voxels, spacing in mm).
    datalist : str | os.PathLike
        The GAN's real training datalist; its real ``training`` cases are read, its test cases never.

    Returns
    -------
    tuple[list[np.ndarray], list[str]]
        Each case's (X, Y, Z) map on the generators' grid, and the cases' names.
    """
    from volgan.data.datalist import read_datalist

    data = read_datalist(datalist)
    cases = [c for c in data.split("training") if c.label is not None and c.source == "real"]
    if not cases:
        raise VolganInputError(data.path, "--pool needs real training cases with label maps; this datalist has none")
    return [to_generator_grid(synth, read_volume(c.label, label=True))[0] for c in cases], [c.name for c in cases]


def write_case(out: Path, name: str, image: np.ndarray, label: np.ndarray, affine: np.ndarray,
               code: str) -> tuple[Path, Path]:
    """Write a case's image and map ((X, Y, Z), RAS, ``affine``) as ``imagesTr/NAME.nii.gz`` and
    ``labelsTr/NAME.nii.gz`` under ``out``, stored in axis order ``code`` (the training data's); returns their paths.

    Parameters
    ----------
    out : Path
        the synthetic data set's folder.
    name : str
        the case's name.
    image : np.ndarray
        (X, Y, Z) float32 image, RAS.
    label : np.ndarray
        (X, Y, Z) uint8 label map, RAS.
    affine : np.ndarray
        the 4×4 voxel-to-RAS affine (mm).
    code : str
        the axis codes to store in (``"RAS"``, ``"LPS"``…).

    Returns
    -------
    tuple[Path, Path]
        the image path and the label map path.
    """
    image_path, label_path = layout_paths(out, name, "training", "msd")
    image, label, affine = reorient(image, label, affine, code)
    write_nifti(Volume(image, affine), image_path)
    write_nifti(Volume(label, affine), label_path)
    return image_path, label_path


@dataclass
class LabelPool:
    """The real training maps that real-deformed label maps start from (:func:`label_pool`)."""

    maps: list[np.ndarray]  # (X, Y, Z) each, on the generators' grid
    names: list[str]  # the cases' names
    sites: list[int]  # each map's :func:`tumor_site`


def label_pool(synth: Synthesizer, datalist: str | os.PathLike) -> LabelPool:
    """The maps of :func:`read_pool` with their names and tumor sites, each site measured once rather than once a
    synthetic case.

    Parameters
    ----------
    synth : Synthesizer
        the loaded generators (their grid).
    datalist : str | os.PathLike
        the real data set whose training maps form the pool.

    Returns
    -------
    LabelPool
        the maps ((X, Y, Z) each), names and tumor sites.

    Raises
    ------
    VolganInputError
        naming the datalist, when it has no real training case with a label map.
    """
    maps, names = read_pool(synth, datalist)
    return LabelPool(maps, names, [tumor_site(m) for m in maps])


def draw_case_label(synth: Synthesizer, tumor_type: int, seed: int, index: int, pose: bool = True,
                    pool: LabelPool | None = None, placement: str = DEFAULT_PLACEMENT
                    ) -> tuple[np.ndarray, dict, torch.Generator]:
    """The label map of synthetic case ``index`` of class ``tumor_type``: a real map of ``pool``, deformed
    (:func:`deformed_real_label`, with ``placement``), or without a pool the label generator's
    (:func:`draw_label_map`, posed when ``pose``).

    Parameters
    ----------
    synth : Synthesizer
        the loaded generators and their training statistics.
    tumor_type : int
        the class, 0–3.
    seed : int
        the run's seed.
    index : int
        the case's index.
    pose : bool
        give a generated map a random pose.
    pool : LabelPool | None
        the real maps to deform, or None for generated maps.
    placement : str
        the tumor placement rule of real-deformed maps.

    Returns
    -------
    tuple[np.ndarray, dict, torch.Generator]
        The (X, Y, Z) uint8 map on the generators' RAS grid, what was drawn (with ``from``, the source map's
        name, or ``label_source: gan``), and the case's random generator, to paint the image with.
    """
    if pool is not None:
        label, info, noise = deformed_real_label(synth, pool.maps, tumor_type, seed, index, placement=placement,
                                                 pool_sites=pool.sites)
        info["from"] = pool.names[info.pop("from_pool_index")]
    else:
        label, info, noise = draw_label_map(synth, tumor_type, seed, index, pose=pose)
        info["label_source"] = "gan"
    return label, info, noise


def synthesis_cases(n_cases: int, types: str | None = None) -> list[dict]:
    """The cases to synthesize from classes, in order.

    Parameters
    ----------
    n_cases : int
        how many, at least 1.
    types : str | None
        class shares as ``--types`` takes them (``"none=0.5,vertebral=0.5"``); None: equal shares.

    Returns
    -------
    list[dict]
        One dict per case: ``name`` (``synth_00000``…), ``tumor_type`` (0-3) and ``index`` (its noise stream).
    """
    if n_cases < 1:
        raise VolganInputError(None, f"num_cases must be at least 1, got {n_cases}")
    classes = [t for t, count in exact_counts(types, n_cases).items() for _ in range(count)]
    return [{"name": f"synth_{i:05d}", "tumor_type": t, "index": i} for i, t in enumerate(classes)]


def synthesis_meta(synth: Synthesizer, seed: int, posed: bool, label_source: str, cases: list[Case],
                   infos: list[dict]) -> dict:
    """The ``volgan`` entry of a synthetic datalist: generator, seed, the checkpoint's config and statistics, the
    pose spread given to generated maps (None unless ``posed``), the label source, and what was drawn per case.

    Parameters
    ----------
    synth : Synthesizer
        the loaded generators.
    seed : int
        the run's seed.
    posed : bool
        whether generated maps were given a random pose.
    label_source : str
        ``"gan"`` or ``"real-deformed"``.
    cases : list[Case]
        the synthetic cases.
    infos : list[dict]
        what was drawn per case, in order.

    Returns
    -------
    dict
        the entry (JSON-ready).
    """
    spread = dict(zip(POSE_FIELDS, synth.pose_spread, strict=True)) if posed and synth.pose_spread else None
    return {"volgan": {"generator": "volgan.gan.synth", "seed": seed, "config": synth.config, "stats": synth.stats,
                       "pose_spread": spread, "label_source": label_source,
                       "cases": {c.name: i for c, i in zip(cases, infos, strict=True)}}}


def synthesize(synth: Synthesizer, out: str | os.PathLike, n_cases: int | None = None, types: str | None = None,
               labels: str | os.PathLike | None = None, seed: int = 0, overwrite: bool = False,
               progress: bool = False, pose: bool = True, label_source: str = "gan",
               pool: str | os.PathLike | None = None, placement: str = DEFAULT_PLACEMENT) -> list[Case]:
    """Write synthetic image/label pairs and their datalist under ``out``.

    Parameters
    ----------
    synth : Synthesizer
        the generators (:func:`load_synthesizer`).
    out : str | os.PathLike
        the output folder (``imagesTr``, ``labelsTr``, ``dataset.json``), built in a staging folder and
        moved in at the end.
    n_cases : int | None
        volumes to draw from noise (or give ``labels``).
    types : str | None
        exact class shares (``"none=0.5,vertebral=0.5"``; None: equal shares).
    labels : str | os.PathLike | None
        a folder of label maps to paint images for (instead of ``n_cases``).
    seed : int
        case ``i`` depends only on ``(seed, i)`` and its class.
    overwrite : bool
        replace a synthetic set already in ``out``.
    progress : bool
        show a progress bar.
    pose : bool
        a random rigid pose for each generated label map (given label maps are kept as they are).
    label_source : str
        ``"gan"`` (the label generator) or ``"real-deformed"`` (:func:`deformed_real_label` from
        the real training cases of the datalist ``pool``).
    pool : str | os.PathLike | None
        the GAN's real training datalist, with ``label_source="real-deformed"``.
    placement : str
        where a real-deformed map's new tumor goes, as :func:`deformed_real_label` takes it.

    Returns
    -------
    list[Case]
        The cases written (``source: synthetic``), in the training data's spacing, orientation and intensity
        units; each case's ``label_source`` and what was drawn are recorded in the datalist.
    """
    from tqdm import tqdm

    if (n_cases is None) == (labels is None):
        raise VolganInputError(None, "give either --cases N or --labels DIR")
    check_label_source(label_source)
    if (label_source == "real-deformed") != (pool is not None) or (pool is not None and n_cases is None):
        raise VolganInputError(None, "--label-source real-deformed goes with --cases and needs --pool DATALIST "
                                     "(the GAN's real training pool); --pool goes with it only")
    real_pool = label_pool(synth, pool) if pool is not None else None
    if n_cases is not None and n_cases < 1:
        raise VolganInputError(None, f"--cases must be at least 1, got {n_cases}")
    out = Path(out)
    code = synth.stats.get("orientation", "RAS")
    jobs = []
    if n_cases is not None:
        jobs = [("class", case) for case in synthesis_cases(n_cases, types)]
    else:
        folder = Path(labels)
        if not folder.is_dir():
            raise VolganInputError(folder, "--labels must be a folder of label maps")
        files = volume_files(folder)
        if not files:
            raise VolganInputError(folder, "holds no label maps (.nii, .nii.gz, .mha, .mhd, .nrrd or .nhdr)")
        jobs = [("label", read_volume(p, label=True)) for p in files]  # validate every file before any work
    cases, infos = [], []
    with staged_output_dir(out, SYNTH_ENTRIES, overwrite) as staging:
        for index, (kind, item) in enumerate(tqdm(jobs, desc="synth", unit="case", disable=not progress)):
            if kind == "class":
                name, tumor_type = item["name"], item["tumor_type"]
                label, info, noise = draw_case_label(synth, tumor_type, seed, item["index"], pose, real_pool,
                                                     placement)
                image_path, label_path = write_case(staging, name, paint(synth, label, noise), label, synth.affine,
                                                    code)
            else:
                image_path, label_path, tumor_type, info = _paint_given(synth, item, staging, seed, index)
                name = volume_stem(Path(item.path).name)
            cases.append(Case(name, image_path, label_path, tumor_type, "synthetic", "training"))
            infos.append(info)
        write_datalist(cases, staging, "msd", synthesis_meta(synth, seed, pose and real_pool is None,
                                                             label_source if n_cases else "given", cases, infos))
    for case in cases:
        case.image, case.label = out / case.image.relative_to(staging), out / case.label.relative_to(staging)
    return cases


def _paint_given(synth: Synthesizer, label: Volume, staging: Path, seed: int, index: int):
    """Image for a user's label map: onto the generators' grid (nearest), centre crop/pad to its shape, paint, and
    back onto the label map's own grid; the label map is kept as given."""
    crop, affine, shape, src, dst = to_generator_grid(synth, label)
    painted = paint(synth, crop, _generator(seed, index))
    full = np.zeros(shape, np.float32)
    full[tuple(src)] = painted[tuple(dst)]
    image = resample(torch.from_numpy(full[None]), affine, label.affine, label.shape)[0].numpy()
    name = volume_stem(Path(label.path).name)
    image_path, label_path = layout_paths(staging, name, "training", "msd")
    write_nifti(Volume(image, label.affine), image_path)
    write_nifti(label, label_path)
    site = tumor_site(label.array)
    return image_path, label_path, site, {"tries": 0, "site_verified": None, "given_label": label.path}
