"""The study's real data: generated phantoms or the user's datalist, split into a real training pool and a
fixed test set with equal counts per ``tumor_type``, and the nested real pools of the augmentation comparison.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import replace
from pathlib import Path

import numpy as np

from volgan.data.datalist import Case, Datalist, balanced_test_split, read_datalist, write_datalist
from volgan.errors import VolganInputError
from volgan.study.profiles import StudyProfile
from volgan.study.stages import digest

# --------------------------------------------------------------------------------------------------------
# Data


def phantom_data(folder: Path, profile: StudyProfile) -> None:
    """Build the data stage from phantoms: the profile's real pool and test set (:attr:`~StudyProfile.shape` voxels
    of :attr:`~StudyProfile.voxel_mm` mm), generated with its seed into ``folder/real``.

    Parameters
    ----------
    folder : Path
        the stage's fresh folder.
    profile : StudyProfile
        the study profile.
    """
    from volgan.data.phantom import PhantomConfig, make_dataset

    n = profile.real_pool + profile.test
    make_dataset(folder / "real", n, PhantomConfig(size=profile.shape, spacing=profile.voxel_mm,
                                                   anatomy_field_mm=profile.anatomy_field_mm),
                 seed=profile.seed, test_fraction=profile.test / n, workers=min(2, os.cpu_count() or 1))


def user_data(folder: Path, datalist: Path, profile: StudyProfile) -> None:
    """The user's cases resampled onto the profile's field (``size`` voxels of ``spacing`` mm, RAS) centred on each
    case's labeled spine (:func:`volgan.transforms.field_about_foreground`), so that the GAN and the segmenter
    both see that field, whatever the scan's extent.

    Parameters
    ----------
    folder : Path
        the stage's fresh folder (the cases go to ``folder/real``).
    datalist : Path
        the user's datalist.
    profile : StudyProfile
        the study profile (field size, spacing, test size, seed).
    """
    import torch

    from volgan.data.datalist import layout_paths
    from volgan.data.io import Volume, read_volume, write_nifti
    from volgan.transforms import field_about_foreground, resample

    data = read_datalist(datalist)
    pool, test = split_user_data(data, profile)
    root = folder / "real"
    size, spacing = profile.shape, profile.voxel_mm
    cases = []
    for case, split in [(c, "training") for c in pool] + [(c, "test") for c in test]:
        image, label = read_volume(case.image), read_volume(case.label, label=True)
        affine = field_about_foreground(label.affine, label.array, size, spacing)
        image_path, label_path = layout_paths(root, case.name, split, "msd")
        field_image = resample(torch.from_numpy(image.array)[None], image.affine, affine, size)[0].numpy()
        field_label = resample(torch.from_numpy(label.array)[None], label.affine, affine, size, "nearest")[0].numpy()
        write_nifti(Volume(field_image, affine), image_path)
        write_nifti(Volume(field_label.astype(np.uint8), affine), label_path)
        cases.append(replace(case, image=image_path, label=label_path, split=split))
    write_datalist(cases, root, meta={"volgan": {"source_datalist": str(datalist), "field_voxels": list(profile.shape),
                                                 "field_spacing_mm": list(profile.voxel_mm)}})

RAS_AXES = ("R", "A", "S")


def slice_axis_note(spacings: list[tuple[float, float, float]], profile: StudyProfile) -> str | None:
    """A note when the study field's thick axis is not the data's: the field's axes are R, A and S, and a stack of
    thick slices keeps its detail only on a field whose coarse axis is the stack's slice direction (a sagittal
    stack: R). None when the field or the data is isotropic (coarsest axis within 1.5 times the finest) or both
    agree.

    Parameters
    ----------
    spacings : list[tuple[float, float, float]]
        the cases' voxel sizes in mm along R, A and S (:func:`volgan.data.summary.ras_spacing`).
    profile : StudyProfile
        the study profile (its field).

    Returns
    -------
    str | None
        the note, or None.
    """
    field = np.asarray(profile.voxel_mm)
    data = np.median(spacings, axis=0) if spacings else field
    if field.max() < 1.5 * field.min() or data.max() < 1.5 * data.min() or field.argmax() == data.argmax():
        return None
    return (f"note: the field's coarsest axis is {RAS_AXES[int(field.argmax())]} ({field.max():g} mm) but the data's "
            f"slices are thickest along {RAS_AXES[int(data.argmax())]} (median "
            f"{' x '.join(f'{v:g}' for v in data)} mm along R, A, S); --size and --spacing are in R, A, S order")


MIN_USER_CASES = 8


def split_user_data(data: Datalist, profile: StudyProfile) -> tuple[list[Case], list[Case]]:
    """(real pool, test set) of a user's datalist: its own labeled test split when it has one, otherwise a
    test set with equal counts per ``tumor_type`` drawn with the profile's seed: a third of the cases up to the
    profile's test size, and at least one case of every class that has two or more (the other stays for
    training). The rule: at least 8 real cases with a label map and a ``tumor_type``, two or more of those
    classes with at least two cases each, and at least four cases left for training.

    Parameters
    ----------
    data : Datalist
        the user's datalist.
    profile : StudyProfile
        the study profile.

    Returns
    -------
    tuple[list[Case], list[Case]]
        the real pool and the test set.

    Raises
    ------
    VolganInputError
        naming the datalist, when no case has a tumor_type, or there are too few labeled cases (or classes) for a pool
        and a test set.
    """
    if all(c.tumor_type is None for c in data.cases):
        raise VolganInputError(data.path, "no case has a tumor_type: the study compares tumor detection and "
                                          "segmentation across arms and needs tumor classes; for segmentation-only "
                                          "data, train and evaluate spine_segcls directly (README: real data)")
    labeled = [c for c in data.cases if c.label is not None and c.tumor_type is not None and c.source == "real"]
    rule = (f"the study needs at least {MIN_USER_CASES} real cases with a label map and a tumor_type, two or more "
            f"tumor_type values with at least two cases each, and four or more cases left for training")
    if len(labeled) < MIN_USER_CASES:
        raise VolganInputError(data.path, f"{rule}; this datalist has {len(labeled)} such cases")
    test = [c for c in labeled if c.split == "test"]
    pool = [c for c in labeled if c.split != "test"]
    if not test:
        types = [c.tumor_type for c in pool]
        splittable = sum(1 for t in set(types) if types.count(t) >= 2)
        chosen = balanced_test_split(types, max(min(profile.test, len(pool) // 3), splittable), profile.seed)
        test = [c for i, c in enumerate(pool) if i in chosen]
        pool = [c for i, c in enumerate(pool) if i not in chosen]
    if len({c.tumor_type for c in test}) < 2 or len(pool) < 4:
        raise VolganInputError(data.path, f"{rule}; got {len(test)} test cases of {len({c.tumor_type for c in test})}"
                                          f" type(s) and {len(pool)} training cases")
    return pool, test


def data_fingerprint(datalist: Path) -> dict:
    """What the user's data stage depends on: the datalist's bytes and each file's size and mtime.

    Parameters
    ----------
    datalist : Path
        the user's datalist file or folder.

    Returns
    -------
    dict
        ``datalist`` (the SHA-256 of its bytes) and ``files`` (a digest of every image's and label map's path, size and
        mtime).
    """
    data = read_datalist(datalist)
    files = sorted({str(p) for c in data.cases for p in (c.image, c.label) if p is not None})
    stats = [(f, os.stat(f).st_size, os.stat(f).st_mtime_ns) for f in files]
    return {"datalist": hashlib.sha256(Path(data.path).read_bytes()).hexdigest(), "files": digest(stats)}


def adapt_profile(profile: StudyProfile, pool_size: int) -> StudyProfile:
    """The profile's sizes fitted to a real pool of ``pool_size`` cases (the user's data may be smaller); the
    augmentation comparison keeps two or more real-pool sizes.

    Parameters
    ----------
    profile : StudyProfile
        the study profile.
    pool_size : int
        the user's real-pool size.

    Returns
    -------
    StudyProfile
        the profile with ``real_pool``, ``sweep_size``, ``pool_sizes`` and ``synthetic`` fitted.
    """
    sweep = min(profile.sweep_size, pool_size)
    pools = {p for p in profile.pool_sizes if p < pool_size} | {min(max(profile.pool_sizes), pool_size)}
    if len(pools) < 2:
        pools.add(max(2, pool_size // 2))
    pools = tuple(sorted(pools))
    return replace(profile, real_pool=pool_size, sweep_size=sweep, pool_sizes=pools,
                   synthetic=max(profile.synthetic, sweep, max(pools)))


def real_cases(out: Path) -> tuple[list[Case], list[Case]]:
    """(real pool, test set) of a finished data stage, the pool in a seeded class-stratified order.

    Parameters
    ----------
    out : Path
        the study's output folder.

    Returns
    -------
    tuple[list[Case], list[Case]]
        the real pool and the test set.
    """
    data = read_datalist(out / "stages" / "data" / "real")
    return data.split("training"), data.split("test")


def pool_subset(pool: list[Case], n: int, seed: int) -> list[Case]:
    """``n`` cases of the real pool, stratified by ``tumor_type`` and nested (smaller subsets lie inside
    larger ones for the same seed).

    Parameters
    ----------
    pool : list[Case]
        the real pool, in :func:`real_cases`'s order.
    n : int
        the subset's size.
    seed : int
        fixes the order within each class.

    Returns
    -------
    list[Case]
        ``n`` cases.
    """
    if n >= len(pool):
        return list(pool)
    order = np.random.default_rng([seed, 0xB001]).permutation(len(pool))
    by_type: dict[int, list[int]] = {}
    for i in order:
        by_type.setdefault(pool[i].tumor_type, []).append(int(i))
    interleaved = [i for rank in range(len(pool)) for members in by_type.values() if rank < len(members)
                   for i in [members[rank]]]
    return [pool[i] for i in sorted(interleaved[:n])]
