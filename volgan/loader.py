"""torchio loaders: datalist cases as ``tio.Subject`` objects, through volgan's declared pipeline.

A subject holds ``image`` (ScalarImage), ``label`` (LabelMap, when the case has one), ``tumor_type``
(int, -1 when unknown), ``name`` and ``source``. Volumes are read with :func:`volgan.io.read_volume`, so
bad files fail with the same one-line errors everywhere.
"""

from __future__ import annotations

import numpy as np
import torch
import torchio as tio

from volgan.datalist import Case, balanced_test_split
from volgan.io import read_volume
from volgan.transforms import Preprocessing, augmentation, preprocessing


def _read_image(path) -> tuple[torch.Tensor, np.ndarray]:
    volume = read_volume(path)
    return torch.from_numpy(volume.array[None]), volume.affine


def _read_label(path) -> tuple[torch.Tensor, np.ndarray]:
    volume = read_volume(path, label=True)
    return torch.from_numpy(volume.array[None].astype(np.int64)), volume.affine


def subject_for(case: Case) -> tio.Subject:
    """The torchio subject of one case (volumes are read lazily, when a transform needs them)."""
    fields = {
        "image": tio.ScalarImage(case.image, reader=_read_image),
        "name": case.name,
        "source": case.source,
        "tumor_type": -1 if case.tumor_type is None else int(case.tumor_type),
    }
    if case.label is not None:
        fields["label"] = tio.LabelMap(case.label, reader=_read_label)
    return tio.Subject(**fields)


def segcls_dataset(cases: list[Case], prep: Preprocessing = Preprocessing(), augment: str = "none",
                   cache: bool = False) -> tio.SubjectsDataset:
    """A dataset of preprocessed (and, if ``augment`` names a preset, augmented) subjects.

    With ``cache`` the deterministic preprocessing runs once per case and its output is kept in memory;
    the random augmentation still runs on every draw.
    """
    random_part = augmentation(augment)
    if cache:
        pipeline = preprocessing(prep)
        subjects = [pipeline(subject_for(c)) for c in cases]
        for subject in subjects:
            subject.load()
        return tio.SubjectsDataset(subjects, transform=random_part)
    transforms = [preprocessing(prep)] + ([random_part] if random_part is not None else [])
    return tio.SubjectsDataset([subject_for(c) for c in cases], transform=tio.Compose(transforms))


def subjects_loader(dataset: tio.SubjectsDataset, batch_size: int = 2, shuffle: bool = False,
                    num_workers: int = 0, sampler=None, seed: int = 0, batch_sampler=None) -> tio.SubjectsLoader:
    """A batch loader for subjects; with ``shuffle`` the order is fixed by ``seed``. A ``batch_sampler`` (such as
    :class:`RatioBatchSampler`) makes the batches itself, and ``batch_size``, ``shuffle`` and ``sampler`` are
    then unused."""
    if batch_sampler is not None:
        return tio.SubjectsLoader(dataset, batch_sampler=batch_sampler, num_workers=num_workers)
    generator = torch.Generator().manual_seed(seed)
    return tio.SubjectsLoader(dataset, batch_size=batch_size, shuffle=shuffle and sampler is None, sampler=sampler,
                              num_workers=num_workers, generator=generator, drop_last=False)


def train_val_split(cases: list[Case], val_fraction: float = 0.2, seed: int = 0) -> tuple[list[Case], list[Case]]:
    """Split training cases into (train, validation), stratified by ``tumor_type``, fixed by ``seed``.

    ``val_fraction = 0`` holds nothing out: every case trains (an exact training set, as the study needs), and
    the validation set is the training cases themselves, a monitor of the fit rather than of generalisation."""
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


# --------------------------------------------------------------------------------------------------------
# Mixing real and synthetic volumes at an exact ratio (seed 2's protocol and the additive variant).


def mix_cases(real: list[Case], synthetic: list[Case], synthetic_share: float | None = None,
              size: int | None = None, extra: int | None = None, seed: int = 0) -> list[Case]:
    """A training set of real and synthetic cases.

    Fixed size (seed 2): ``size`` cases of which exactly ``round(size * synthetic_share)`` are synthetic,
    each pool drawn without replacement in a seeded order. Additive: every real case plus ``extra``
    synthetic ones. Raises ValueError when a pool is too small for the asked mix.
    """
    rng = np.random.default_rng([seed, 0x313])
    if (synthetic_share is None) == (extra is None):
        raise ValueError("give either synthetic_share (with size) or extra")
    if extra is not None:
        n_real, n_synth = len(real), extra
    else:
        if not 0.0 <= synthetic_share <= 1.0 or size is None or size < 1:
            raise ValueError(f"synthetic_share must lie in [0, 1] and size be positive, got {synthetic_share}, {size}")
        n_synth = int(round(size * synthetic_share))
        n_real = size - n_synth
    if n_real > len(real) or n_synth > len(synthetic):
        raise ValueError(f"the mix needs {n_real} real and {n_synth} synthetic cases; the pools hold "
                         f"{len(real)} and {len(synthetic)}")
    chosen_real = [real[i] for i in rng.permutation(len(real))[:n_real]]
    chosen_synth = [synthetic[i] for i in rng.permutation(len(synthetic))[:n_synth]]
    return chosen_real + chosen_synth


class RatioBatchSampler(torch.utils.data.Sampler):
    """Batches that each hold the dataset's real:synthetic ratio to within one volume.

    ``sources`` gives each dataset index's source (``"real"``/``"synthetic"``). Every epoch both pools are
    shuffled (seeded by ``seed`` and the epoch) and batch j takes ``round((j+1)·B·p) − round(j·B·p)``
    synthetic volumes, p being the synthetic share, so that totals are exact and every batch is within one
    volume of B·p. Each pass over the sampler takes the next epoch's order (:meth:`set_epoch` sets which comes
    next), so a trainer needs no handler for it. With one source only it is a seeded shuffle.
    """

    def __init__(self, sources: list[str], batch_size: int, seed: int = 0):
        self.synthetic = [i for i, s in enumerate(sources) if s == "synthetic"]
        self.real = [i for i, s in enumerate(sources) if s != "synthetic"]
        self.batch_size, self.seed, self.epoch = batch_size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-(len(self.real) + len(self.synthetic)) // self.batch_size)

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        self.epoch += 1
        real = [self.real[i] for i in rng.permutation(len(self.real))]
        synth = [self.synthetic[i] for i in rng.permutation(len(self.synthetic))]
        total = len(real) + len(synth)
        share = len(synth) / total if total else 0.0
        taken_real = taken_synth = 0
        for j in range(len(self)):
            size = min(self.batch_size, total - j * self.batch_size)
            want = int(round(min((j + 1) * self.batch_size, total) * share)) - taken_synth
            want = max(0, min(want, size, len(synth) - taken_synth))
            want = max(want, size - (len(real) - taken_real))  # the real pool may run out first
            batch = synth[taken_synth: taken_synth + want] + real[taken_real: taken_real + size - want]
            taken_synth, taken_real = taken_synth + want, taken_real + size - want
            order = rng.permutation(len(batch))
            yield [batch[k] for k in order]


def mixed_loader(cases: list[Case], batch_size: int = 2, prep: Preprocessing = Preprocessing(),
                 augment: str = "none", cache: bool = False, seed: int = 0, num_workers: int = 0):
    """A torchio loader over mixed cases whose batches keep the real:synthetic ratio (:class:`RatioBatchSampler`)."""
    dataset = segcls_dataset(cases, prep, augment, cache)
    sampler = RatioBatchSampler([c.source for c in cases], batch_size, seed)
    return tio.SubjectsLoader(dataset, batch_sampler=sampler, num_workers=num_workers)
