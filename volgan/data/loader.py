"""torchio loaders: datalist cases as ``tio.Subject`` objects, through volgan's declared pipeline.

A subject holds ``image`` (ScalarImage), ``label`` (LabelMap, when the case has one), ``tumor_type``
(int, -1 when unknown), ``name`` and ``source``. Volumes are read with :func:`volgan.data.io.read_volume`, so
bad files fail with the same one-line errors everywhere.
"""

from __future__ import annotations

import numpy as np
import torch
import torchio as tio
from torch.utils.data.distributed import DistributedSampler

from volgan.data.datalist import Case, balanced_test_split
from volgan.data.io import read_volume
from volgan.labels import LABELS, NO_TUMOR, TUMOR_LABEL, label_number
from volgan.transforms import preprocessing as default_preprocessing


def _read_image(path) -> tuple[torch.Tensor, np.ndarray]:
    volume = read_volume(path)
    return torch.from_numpy(volume.array[None]), volume.affine


def _read_label(path) -> tuple[torch.Tensor, np.ndarray]:
    volume = read_volume(path, label=True)
    return torch.from_numpy(volume.array[None].astype(np.int64)), volume.affine


def unknown_bits(annotated: tuple[str, ...] | None, tumor_type: int | None = None) -> int:
    """What a 0 of a partially annotated label map may be, as a bit mask over the labels: background and every
    label the map leaves unannotated (bit k for label k); 0 for a fully annotated map, whose 0 is background.

    A healthy case (``tumor_type`` 0) holds no tumor voxel, so its tumor label is known, annotated or not: a healthy
    cord-only scan teaches the segmenter that none of its voxels is tumor (its other unannotated labels stay unknown).

    Parameters
    ----------
    annotated : tuple[str, ...] | None
        the labels the map annotates (None: all).
    tumor_type : int | None
        the case's tumor type (0: healthy; None: unknown).

    Returns
    -------
    int
        the bit mask, 0–63.
    """
    if annotated is None:
        return 0
    known = {label_number(name) for name in annotated} | ({TUMOR_LABEL} if tumor_type == NO_TUMOR else set())
    return sum(1 << k for k in LABELS if k not in known)


def subject_for(case: Case) -> tio.Subject:
    """The torchio subject of one case (volumes are read lazily, when a transform needs them).

    Parameters
    ----------
    case : Case
        the case (image, optional label map and ``tumor_type``).

    Returns
    -------
    tio.Subject
        a subject with ``image`` (ScalarImage), ``label`` (LabelMap, when the case has one) and ``tumor_type`` (int; −1
        where unknown).
    """
    fields = {
        "image": tio.ScalarImage(case.image, reader=_read_image),
        "name": case.name,
        "source": case.source,
        "tumor_type": -1 if case.tumor_type is None else int(case.tumor_type),
        "unknown_bits": unknown_bits(case.annotated, case.tumor_type),
    }
    if case.label is not None:
        fields["label"] = tio.LabelMap(case.label, reader=_read_label)
    return tio.Subject(**fields)


def segcls_dataset(cases: list[Case], preprocessing: tio.Transform | None = None,
                   augmentation: tio.Transform | None = None, cache: bool = False) -> tio.SubjectsDataset:
    """A dataset of preprocessed (and, given ``augmentation``, randomly augmented) subjects.

    With ``cache`` the deterministic preprocessing runs once per case and its output is kept in memory;
    the random augmentation still runs on every draw.

    Parameters
    ----------
    cases : list[Case]
        the cases to read (image, label map, ``tumor_type``).
    preprocessing : tio.Transform | None
        the deterministic preprocessing (spine_segcls's ``configs/train.json`` lists it: onto the RAS grid of the
        spacing in mm, cropped or padded to the patch in voxels, z-normalised); None: that of
        :func:`volgan.transforms.preprocessing` at its defaults.
    augmentation : tio.Transform | None
        the random augmentation applied after it (a preset of ``augmentations`` in the same config), or None.
    cache : bool
        keep each case's deterministic preprocessing in memory.

    Returns
    -------
    tio.SubjectsDataset
        A ``tio.SubjectsDataset`` whose subjects hold ``image`` (1, X, Y, Z) float32 and ``label``
        (1, X, Y, Z) integer maps on the patch grid, and ``tumor_type`` (-1 when unknown).
    """
    pipeline = preprocessing if preprocessing is not None else default_preprocessing()
    if cache:
        subjects = [pipeline(subject_for(c)) for c in cases]
        for subject in subjects:
            subject.load()
        return tio.SubjectsDataset(subjects, transform=augmentation)
    transforms = [pipeline] + ([augmentation] if augmentation is not None else [])
    return tio.SubjectsDataset([subject_for(c) for c in cases], transform=tio.Compose(transforms))


class PatchQueue(tio.Queue):
    """torchio's patch queue whose patches carry the tumor type they show: a patch of a tumor-bearing volume that
    holds no tumor voxel is ``tumor_type`` 0 (none), as a sliding window of such a volume is at inference, where the
    window most sure of a tumor gives the type. Volumes of unknown type (−1), and those whose map leaves the tumor
    unannotated, keep their type."""

    def __getitem__(self, index) -> tio.Subject:
        patch = super().__getitem__(index)
        tumor_annotated = not (int(patch["unknown_bits"]) >> TUMOR_LABEL) & 1
        if int(patch["tumor_type"]) > NO_TUMOR and tumor_annotated and not bool(
                (patch["label"].data == TUMOR_LABEL).any()):
            patch["tumor_type"] = NO_TUMOR
        return patch


def patch_sampler(patch: tuple[int, int, int]) -> tio.LabelSampler:
    """Patches of ``patch`` voxels centred on a voxel of a label drawn uniformly from the anatomy the volume holds
    (background, vertebra, disc, cord, CSF alike), never on the tumor: the cord is centred as often as the background,
    which fills most of a volume, and a tumor shows up at about its share of the cord-centred patches (centring it
    as often as the rest, the contrast-agnostic recipe labeled much of a real cord tumor: BENCHMARKS.md, "Real MRI").

    Parameters
    ----------
    patch : tuple[int, int, int]
        the patch size in voxels.

    Returns
    -------
    tio.LabelSampler
        the sampler (it reads ``label``).
    """
    return tio.LabelSampler(tuple(int(n) for n in patch), label_name="label",
                            label_probabilities={k: 0.0 if k == TUMOR_LABEL else 1.0 for k in LABELS})


class EpochShuffle(DistributedSampler):
    """torch's ``DistributedSampler`` on one process: each pass over the data in the order of
    ``randperm(generator seeded with seed + epoch)``, drawn when the pass starts, from nothing else. MONAI's engines
    set the epoch when one starts (as for any ``DistributedSampler``), so a training resumed at epoch N draws the
    orders the uninterrupted one drew; a loader's own generator (``shuffle=True``) would carry its state across
    epochs, which a checkpoint does not hold. Unlike its parent it moves on to the next epoch after each pass, so a
    plain ``for`` loop over the loader also gets a new order each time.

    Parameters
    ----------
    dataset : Sized
        the dataset.
    seed : int
        fixes the orders.
    """

    def __init__(self, dataset, seed: int = 0):
        super().__init__(dataset, num_replicas=1, rank=0, shuffle=True, seed=seed)

    def __iter__(self):
        order = super().__iter__()  # drawn now, from seed + epoch
        self.epoch += 1
        return order


def subjects_loader(dataset: tio.SubjectsDataset, batch_size: int = 2, shuffle: bool = False,
                    num_workers: int = 0, sampler=None, seed: int = 0, batch_sampler=None, patch_samples: int = 0,
                    patch: tuple[int, int, int] | None = None) -> tio.SubjectsLoader:
    """A batch loader for subjects, or, given ``patch_samples``, for patches of them.

    Parameters
    ----------
    dataset : tio.SubjectsDataset
        the subjects (:func:`segcls_dataset`).
    batch_size : int
        subjects per batch (unused with a ``batch_sampler``).
    shuffle : bool
        draw in a random order, each pass's fixed by ``seed`` and the epoch number (:class:`EpochShuffle`, so a
        resumed training draws the orders an uninterrupted one drew). Unused with a ``sampler`` or
        ``batch_sampler``.
    num_workers : int
        loader processes.
    sampler
        a sampler of indices (such as ``DistributedSampler``).
    seed : int
        fixes the shuffled order.
    batch_sampler
        makes the batches itself (such as :class:`~volgan.data.mixing.RatioBatchSampler`); unused with patches.
    patch_samples : int
        0: whole subjects. N > 0: N patches of ``patch`` voxels from each subject per epoch, through torchio's patch
        queue (:class:`PatchQueue`, :func:`patch_sampler`), which mixes the patches of four subjects at a time; each
        subject's random augmentation is drawn once per epoch, before its patches are cut. The epoch then holds every
        subject's patches, so its real:synthetic share is the cases' share; single batches need not keep it. A
        ``sampler`` (``DistributedSampler``) picks each process's subjects.
    patch : tuple[int, int, int] | None
        the patch size in voxels, with ``patch_samples``.

    Returns
    -------
    tio.SubjectsLoader
        A ``tio.SubjectsLoader``; its batches hold (B, 1, X, Y, Z) images and label maps.
    """
    if patch_samples:
        if patch is None:
            raise ValueError("patch_samples needs the patch size")
        queue = PatchQueue(dataset, max_length=4 * int(patch_samples), samples_per_volume=int(patch_samples),
                           sampler=patch_sampler(patch), subject_sampler=sampler, num_workers=num_workers,
                           shuffle_subjects=sampler is None)
        return tio.SubjectsLoader(queue, batch_size=batch_size, num_workers=0)
    if batch_sampler is not None:
        return tio.SubjectsLoader(dataset, batch_sampler=batch_sampler, num_workers=num_workers)
    if shuffle and sampler is None:
        sampler = EpochShuffle(dataset, seed)
    generator = torch.Generator().manual_seed(seed)
    return tio.SubjectsLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                              generator=generator, drop_last=False)


def train_val_split(cases: list[Case], val_fraction: float = 0.2, seed: int = 0) -> tuple[list[Case], list[Case]]:
    """Split training cases into (train, validation), stratified by ``tumor_type``, fixed by ``seed``.

    ``val_fraction = 0`` holds nothing out: every case trains (an exact training set, as the study needs), and
    the validation set is the training cases themselves, a monitor of the fit rather than of generalisation.

    Parameters
    ----------
    cases : list[Case]
        the training cases.
    val_fraction : float
        the share held out for validation, in [0, 1).
    seed : int
        fixes the split.

    Returns
    -------
    tuple[list[Case], list[Case]]
        the training cases and the validation cases.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must lie in [0, 1), got {val_fraction}")
    if val_fraction == 0.0:
        return list(cases), list(cases)
    n_val = max(1, round(val_fraction * len(cases))) if len(cases) > 1 else 0
    picked = balanced_test_split([c.tumor_type for c in cases], n_val, seed + 1)
    if len(picked) < n_val:  # classes too few for equal shares: fill up in seeded order
        rest = [i for i in np.random.default_rng([seed, 7]).permutation(len(cases)) if i not in picked]
        picked |= {int(i) for i in rest[: n_val - len(picked)]}
    return [c for i, c in enumerate(cases) if i not in picked], [c for i, c in enumerate(cases) if i in picked]
