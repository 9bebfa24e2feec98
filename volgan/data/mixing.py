"""Real and synthetic volumes at an exact ratio: :func:`mix_cases` draws a training set of a given size and
synthetic share, :class:`RatioBatchSampler` keeps that ratio in every batch, :func:`mixed_loader` puts both
together over torchio subjects.
"""

from __future__ import annotations

import numpy as np
import torch
import torchio as tio

from volgan.data.datalist import Case
from volgan.data.loader import segcls_dataset
from volgan.transforms import Preprocessing, augmentation, preprocessing

# --------------------------------------------------------------------------------------------------------
# Mixing real and synthetic volumes at an exact ratio (arXiv 2506.17165's protocol and the additive variant).


def mix_cases(real: list[Case], synthetic: list[Case], synthetic_share: float | None = None,
              size: int | None = None, extra: int | None = None, seed: int = 0) -> list[Case]:
    """A training set of real and synthetic cases at an exact mix.

    Fixed size (arXiv 2506.17165): ``size`` cases of which exactly ``round(size * synthetic_share)`` are synthetic,
    each pool drawn without replacement in a seeded order. Additive: every real case plus ``extra``
    synthetic ones.

    Parameters
    ----------
    real : list[Case]
        the real training cases.
    synthetic : list[Case]
        the synthetic pool.
    synthetic_share : float | None
        the synthetic fraction of the set, in [0, 1] (with ``size``).
    size : int | None
        the number of cases of a fixed-size mix.
    extra : int | None
        the number of synthetic cases added to every real one (instead of ``synthetic_share``).
    seed : int
        fixes which cases are drawn.

    Returns
    -------
    list[Case]
        The drawn cases, real ones first.

    Raises
    ------
    ValueError
        when both or neither of ``synthetic_share`` and ``extra`` are given, or a pool is too small
        for the asked mix.
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
    """A torchio loader over mixed cases whose batches keep the real:synthetic ratio (:class:`RatioBatchSampler`).

    Parameters
    ----------
    cases : list[Case]
        the mixed training set (:func:`mix_cases`); ``Case.source`` tells real from synthetic.
    batch_size : int
        volumes per batch.
    prep : Preprocessing
        the preprocessing (spacing in mm, patch in voxels).
    augment : str
        an augmentation preset of :mod:`volgan.transforms`, or ``"none"``.
    cache : bool
        keep each case's deterministic preprocessing in memory.
    seed : int
        fixes the batches' order and composition.
    num_workers : int
        loader processes.

    Returns
    -------
        A ``tio.SubjectsLoader`` of batches with ``image`` (B, 1, X, Y, Z), ``label`` (B, 1, X, Y, Z) and
        ``tumor_type`` (B,).
    """
    dataset = segcls_dataset(cases, preprocessing(prep), augmentation(augment), cache)
    sampler = RatioBatchSampler([c.source for c in cases], batch_size, seed)
    return tio.SubjectsLoader(dataset, batch_sampler=sampler, num_workers=num_workers)
