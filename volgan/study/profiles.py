"""Study profiles: the sizes of one study (volume size and spacing, pools, test set, seeds, training budgets)
and the named ones (``tiny``, ``quick``, ``standard``, ``paper``), with the sweep's synthetic shares and the
augmentation comparison's arms.
"""

from __future__ import annotations

from dataclasses import dataclass

SHARES = tuple(round(0.1 * k, 1) for k in range(11))  # synthetic share of the sweep: 100:0 … 0:100

ARMS = ("none", "classical", "gan", "both")

GRADCAM_ARMS = ("none", "gan")  # the arms Ainapure et al.'s Grad-CAM claim compares

@dataclass(frozen=True)
class StudyProfile:
    """Sizes of one study. Volumes are ``size`` voxels of ``spacing`` mm: one number for a cube of isotropic voxels,
    or three per RAS axis (left-right, posterior-anterior, inferior-superior) for a field of thick slices, such as
    ``(16, 64, 64)`` voxels of ``(3.3, 0.75, 0.75)`` mm for a sagittal stack; counts are volumes."""

    name: str
    size: int | tuple[int, int, int]
    spacing: float | tuple[float, float, float]
    real_pool: int                      # real training pool (phantoms; with --real, what the datalist holds)
    test: int                           # fixed real test set, equal per tumor_type
    sweep_size: int                     # fixed training-set size of the ratio sweep
    pool_sizes: tuple[int, ...]         # real-pool sizes of the augmentation comparison
    synthetic: int                      # synthetic pool per GAN
    seeds: int
    channels: tuple[int, ...]           # spine_segcls widths
    presentations: int                  # training-volume presentations per segmenter-classifier
    batch_size: int
    gan_presentations: int              # training-volume presentations of each GAN (epochs = this / pool)
    gan_base: int
    gan_batch_size: int
    learning_rate: float = 0.002
    bootstrap: int = 2000
    seed: int = 0                       # phantoms, test split, pools, GANs and synthesis
    anatomy_field_mm: float | None = 96.0  # phantoms: anatomy at natural size, the grid a crop of it
    label_source: str = "real-deformed"  # synthetic label maps: volgan.gan.synth.LABEL_SOURCES (BENCHMARKS.md: why)
    loader_workers: int = 0             # spine_segcls loader processes for runs that augment (on the CPU, beside a GPU)

    def gan_epochs(self, pool: int) -> int:
        return max(1, round(self.gan_presentations / pool))

    @property
    def shape(self) -> tuple[int, int, int]:
        """The field in voxels along R, A and S."""
        return (self.size,) * 3 if isinstance(self.size, int) else tuple(self.size)  # type: ignore[return-value]

    @property
    def voxel_mm(self) -> tuple[float, float, float]:
        """The field's voxel size in mm along R, A and S."""
        return (self.spacing,) * 3 if isinstance(self.spacing, (int, float)) else tuple(self.spacing)  # type: ignore

    @property
    def field_text(self) -> str:
        """The field in words: ``32³ voxels of 1.5 mm`` or ``16×64×64 voxels of 3.3×0.75×0.75 mm``."""
        if isinstance(self.size, int) and isinstance(self.spacing, (int, float)):
            return f"{self.size}³ voxels of {self.spacing} mm"
        return (f"{'×'.join(map(str, self.shape))} voxels of {'×'.join(f'{v:g}' for v in self.voxel_mm)} mm "
                f"(R, A, S)")

    @classmethod
    def from_dict(cls, saved: dict) -> StudyProfile:
        """The profile a study saved as ``profile.json`` (its lists back to tuples)."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()})

PROFILES = {
    "tiny": StudyProfile("tiny", size=16, spacing=3.0, real_pool=12, test=8, sweep_size=10, pool_sizes=(6, 12),
                         synthetic=12, seeds=2, channels=(4, 8, 16, 32), presentations=24, batch_size=4,
                         gan_presentations=24, gan_base=4, gan_batch_size=4, bootstrap=200),
    # The GANs see each volume one at a time: of 320 presentations, batches of 8 made 39 steps (gan-24) and synthetic
    # volumes in which the study's real-only judge found anatomy Dice 0.78/0.81/0.63/0.61 (vertebra/disc/cord/
    # csf) and tumor Dice 0.12; batches of 1 (312 steps; in the study 128 s and 113 s for the two GANs against
    # 56 s and 48 s) give 0.86/0.89/0.84/0.87 and 0.29, as batches of 2 with half again the presentations do
    # (BENCHMARKS.md, "The study's GAN by batch size").
    "quick": StudyProfile("quick", size=32, spacing=1.5, real_pool=24, test=96, sweep_size=24, pool_sizes=(12, 24),
                          synthetic=24, seeds=2, channels=(16, 32, 64, 128), presentations=480, batch_size=2,
                          gan_presentations=320, gan_base=16, gan_batch_size=1),
    # The quick profile's design with the budget at which its real-only arm met the learning targets (1,200
    # presentations, BENCHMARKS.md), a test set twice as large and a third seed, for the resolution; on 2 CPU
    # cores at most 83 min from nothing with stages two at a time, every learning and resolution target met
    # (BENCHMARKS.md, "Study, standard profile"; GANs then in batches of 8). GANs in batches of 1: with maps
    # from the source's class and site, the study's real-only judge found anatomy Dice 0.83/0.87/0.86/0.87
    # (vertebra/disc/cord/csf) and tumor Dice 0.33 (real volumes: 0.43) in the volumes of a GAN at batch 8, and
    # 0.87/0.89/0.88/0.90 and 0.38 at batch 1, every synthetic-quality target met (BENCHMARKS.md, "Label maps
    # from the source's class and site"). That GAN took 655 s on 2 threads; at batch 8 each took 1,167 s in the
    # study, two side by side on one thread each. The whole study at batch 1 is not yet timed.
    "standard": StudyProfile("standard", size=32, spacing=1.5, real_pool=24, test=192, sweep_size=24,
                             pool_sizes=(12, 24), synthetic=24, seeds=3, channels=(16, 32, 64, 128),
                             presentations=1200, batch_size=2, gan_presentations=1200, gan_base=16, gan_batch_size=1),
    # The sizes of arXiv 2506.17165 at 64³, with the budget that fits 6 hours on one H100 (BENCHMARKS.md, "The
    # paper profile, measured and projected": 5.2 h projected from each stage kind measured there; 5 seeds, 40,000
    # presentations per run and 200,000 per GAN projected to 19.7 h). How well it learns at this budget is unmeasured.
    # The loader's 8 processes run the classical preset beside the GPU (29.5 against 47.8 ms a presentation there;
    # without augmentation they gained nothing).
    "paper": StudyProfile("paper", size=64, spacing=1.5, real_pool=1000, test=400, sweep_size=1000,
                          pool_sizes=(250, 1000), synthetic=1000, seeds=3, channels=(16, 32, 64, 128),
                          presentations=12000, batch_size=8, gan_presentations=40000, gan_base=32,
                          gan_batch_size=8, loader_workers=8),
}
