"""Synthesis with a trained spine_cgan: labeled volumes from a class, or images for given label maps. This module is
the run (:func:`synthesize`: class counts, the cases, their files and datalist); the generators and their painting
are in :mod:`volgan.gan.synthesizer`, the label maps' sources and morphology in :mod:`volgan.gan.label_sources` and
:mod:`volgan.gan.label_maps`.

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

import os
from pathlib import Path

import numpy as np
import torch

from volgan.data.datalist import Case, layout_paths, write_datalist
from volgan.data.files import staged_output_dir
from volgan.data.io import Volume, read_volume, reorient, volume_files, volume_stem, write_nifti
from volgan.errors import VolganInputError
from volgan.gan.label_maps import tumor_site
from volgan.gan.label_sources import (
    DEFAULT_PLACEMENT,
    LABEL_SOURCES,
    PLACEMENTS,
    check_label_source,
    draw_case_label,
    label_pool,
)
from volgan.gan.pose import POSE_FIELDS
from volgan.gan.synthesizer import Synthesizer, case_noise, load_synthesizer, paint, to_generator_grid
from volgan.labels import TUMOR_TYPES, tumor_type_from_name
from volgan.transforms import resample

__all__ = ["DEFAULT_PLACEMENT", "LABEL_SOURCES", "PLACEMENTS", "Synthesizer", "check_label_source", "exact_counts",
           "load_synthesizer", "synthesis_cases", "synthesis_meta", "synthesize", "write_case"]

SYNTH_ENTRIES = ("dataset.json", "imagesTr", "labelsTr")


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
    painted = paint(synth, crop, case_noise(seed, index))
    full = np.zeros(shape, np.float32)
    full[tuple(src)] = painted[tuple(dst)]
    image = resample(torch.from_numpy(full[None]), affine, label.affine, label.shape)[0].numpy()
    name = volume_stem(Path(label.path).name)
    image_path, label_path = layout_paths(staging, name, "training", "msd")
    write_nifti(Volume(image, label.affine), image_path)
    write_nifti(label, label_path)
    site = tumor_site(label.array)
    return image_path, label_path, site, {"tries": 0, "site_verified": None, "given_label": label.path}
