"""The two sources of synthetic label maps (:data:`LABEL_SOURCES`): the GAN's label generator
(:func:`draw_label_map`), or a real training map of the GAN's own pool, deformed and given a new tumor
(:func:`deformed_real_label`, read once per run as a :class:`LabelPool`); :func:`draw_case_label` picks by source.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from volgan.data.io import read_volume
from volgan.errors import VolganInputError
from volgan.gan.label_maps import FACES, elastic_deform, enforce_class, place_tumor, remove_tumor, tumor_site
from volgan.gan.pose import random_pose
from volgan.gan.synthesizer import Synthesizer, case_noise, to_generator_grid
from volgan.labels import TUMOR_LABEL

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


DEFAULT_PLACEMENT = "source"  # real-deformed maps: from a map of the class, the new tumor at the old one's site


PLACEMENTS = (DEFAULT_PLACEMENT, "anywhere")  # "anywhere": the rule before, kept to measure the difference


@torch.no_grad()
def draw_label_map(synth: Synthesizer, tumor_type: int, seed: int, index: int, max_tries: int = 8,
                   pose: bool = True) -> tuple[np.ndarray, dict, torch.Generator]:
    """The label map of case ``index`` of class ``tumor_type``, drawn by the label generator.

    The tumor's size in voxels is drawn from the training maps' sizes for the class (``stats["tumor_voxels"]``,
    when the checkpoint has them; :func:`enforce_class`); with ``pose`` the map is given a random pose
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
    noise = case_noise(seed, index)
    classes = torch.tensor([tumor_type], device=synth.device)
    sizes = synth.stats.get("tumor_voxels", {}).get(str(tumor_type))
    tries = 0
    drawn = None
    while True:
        tries += 1
        z = torch.randn(1, synth.label_generator.z_dim, generator=noise)
        size = int(sizes[int(torch.randint(len(sizes), (1,), generator=noise))]) if sizes else None
        label = enforce_class(synth.label_generator(z.to(synth.device), classes)[0], tumor_type, size)
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
    noise = case_noise(seed, index)
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
