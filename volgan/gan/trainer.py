"""Training of the 3D conditional GAN: :class:`CGanTrainer` (one MONAI ``Trainer`` that steps both GANs), the EMA
copies of the generators, the MS-SSIM diversity monitor against mode collapse, and the intensity and pose
statistics of the training pool that synthesis reproduces.

Volumes are (B, 1, S, S, S) z-normalised images and (B, 6, S, S, S) one-hot label maps; MS-SSIM is unitless.
"""

from __future__ import annotations

import copy
import math
import random

import numpy as np
import torch
import torch.nn.functional as F
from monai.engines import Trainer
from monai.inferers import Inferer, SimpleInferer
from monai.networks.layers import GaussianFilter
from monai.utils import CommonKeys as Keys
from torch import nn

from volgan.gan.losses import diff_augment, hinge_d, r1_penalty
from volgan.gan.networks import (
    ImageGenerator,
    LabelEncoder,
    LabelGenerator,
    PatchDiscriminator,
    class_planes,
    one_hot_labels,
    sample,
)
from volgan.labels import NUM_LABELS, NUM_TUMOR_TYPES, TUMOR_LABEL


class EMA:
    """Exponential moving average copy of a network, for sampling. The decay warms up as
    min(decay, (1 + t) / (10 + t)) over update t, so that short runs are not dominated by the initial weights."""

    def __init__(self, network: nn.Module, decay: float = 0.99):
        self.decay = decay
        self.steps = 0
        self.shadow = copy.deepcopy(network).eval()
        for p in self.shadow.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, network: nn.Module) -> None:
        decay = min(self.decay, (1 + self.steps) / (10 + self.steps))
        self.steps += 1
        for s, p in zip(self.shadow.parameters(), network.parameters(), strict=True):
            s.lerp_(p.detach(), 1 - decay)
        for s, b in zip(self.shadow.buffers(), network.buffers(), strict=True):
            s.copy_(b)


def msssim_pairs(volumes: torch.Tensor, pairs: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """MS-SSIM of distinct pairs of (N, 1, S, S, S) volumes: every pair when there are at most ``pairs``, else
    ``pairs`` of them drawn without replacement. Returns the pairs' indices (P, 2) and their MS-SSIM (P,).
    Volumes are min-max scaled to [0, 1] together.

    Parameters
    ----------
    volumes : torch.Tensor
        (N, 1, S, S, S) volumes.
    pairs : int
        the most pairs scored.
    seed : int
        fixes the pairs drawn.

    Returns
    -------
    tuple[torch.Tensor, torch.Tensor]
        pair indices (P, 2) int64 and MS-SSIM (P,).
    """
    from monai.metrics import MultiScaleSSIMMetric

    n = len(volumes)
    chosen = torch.combinations(torch.arange(n), 2)
    if len(chosen) > pairs:
        chosen = chosen[torch.randperm(len(chosen), generator=torch.Generator().manual_seed(seed))[:pairs]]
    if n < 2:
        return chosen, torch.zeros(0)
    lo, hi = volumes.min(), volumes.max()
    scaled = (volumes - lo) / (hi - lo + 1e-8)
    size = min(volumes.shape[2:])
    weights = (0.2, 0.3, 0.5) if size >= 32 else (0.5, 0.5) if size >= 16 else (1.0,)  # a scale needs 4+ voxels
    metric = MultiScaleSSIMMetric(spatial_dims=3, data_range=1.0, kernel_size=5, weights=weights)
    with torch.no_grad():
        values = [metric(scaled[part[:, 0]], scaled[part[:, 1]]) for part in chosen.split(64)]
    return chosen, torch.cat(values).flatten().float()


def msssim_diversity(volumes: torch.Tensor, pairs: int = 16, seed: int = 0) -> float:
    """Mean MS-SSIM over distinct pairs of (N, 1, S, S, S) volumes (:func:`msssim_pairs`); NaN below two volumes.
    Lower means more diverse; mode collapse shows as synthetic MS-SSIM well above the real one.

    Parameters
    ----------
    volumes : torch.Tensor
        (N, 1, S, S, S) volumes.
    pairs : int
        the most pairs scored.
    seed : int
        fixes the pairs drawn.

    Returns
    -------
    float
        the mean MS-SSIM, in [0, 1], or NaN.
    """
    _, values = msssim_pairs(volumes, pairs, seed)
    return float(values.mean()) if len(values) else math.nan


class CGanTrainer(Trainer):
    """One iteration: a discriminator step for both GANs (hinge, lazy R1 every ``r1_interval`` steps, DiffAugment),
    then a generator step (adversarial + ``rec_weight`` × L1 of the image generator on real label maps, the
    difference first blurred by a Gaussian of ``rec_blur`` voxels (MONAI's GaussianFilter) so that the L1 fits
    contrast and shading and leaves the noise texture to the discriminator, 0 = plain L1, which pulls towards a
    noise-free image; with ``rec_label_weights`` each voxel weighted as :meth:`label_weights` weights its label),
    then the EMA updates. With ``amp`` the forward passes run in bfloat16 autocast. ``engine.state.output``
    holds the losses as ``[{"loss": …, "d_loss": …, …}]`` (floats; one dict in a list, as MONAI's decollating
    engines give, so ``--tracking mlflow`` and MONAI's handlers find ``output[0]["loss"]``); every
    ``monitor_interval`` epochs the MS-SSIM of EMA samples (drawn through ``inferer``, the bundle's
    ``train#inferer``; default a ``SimpleInferer``) and of real images go into ``engine.state.metrics``."""

    def __init__(self, device, max_epochs: int, train_data_loader, label_generator: LabelGenerator,
                 image_generator: ImageGenerator, label_discriminator: PatchDiscriminator,
                 image_discriminator: PatchDiscriminator, g_optimizer, d_optimizer, prepare_batch,
                 label_encoder: LabelEncoder | None = None, rec_weight: float = 5.0, label_rec_weight: float = 1.0,
                 rec_blur: float = 0.0, rec_label_weights: bool = False, kl_weight: float = 0.02,
                 r1_weight: float = 1.0, r1_interval: int = 4,
                 ema_decay: float = 0.995, monitor_interval: int = 5, seed: int = 0, amp: bool = False,
                 train_handlers=None, inferer: Inferer | None = None, distributed: bool = False, **kwargs):
        super().__init__(device=device, max_epochs=max_epochs, data_loader=train_data_loader,
                         prepare_batch=prepare_batch, handlers=None, decollate=False, **kwargs)
        self.label_generator, self.image_generator = label_generator, image_generator
        self.label_discriminator, self.image_discriminator = label_discriminator, image_discriminator
        self.label_encoder = label_encoder
        self.g_optimizer, self.d_optimizer = g_optimizer, d_optimizer
        self.distributed = distributed
        rank = 0
        if distributed:  # every process starts from rank 0's weights and averages its gradients with the others
            import torch.distributed as dist

            rank = dist.get_rank()
            for network in self.networks().values():
                for tensor in network.state_dict().values():
                    dist.broadcast(tensor, 0)
        self.label_ema, self.image_ema = EMA(label_generator, ema_decay), EMA(image_generator, ema_decay)
        self.rec_weight, self.r1_weight, self.r1_interval = rec_weight, r1_weight, r1_interval
        self.rec_blur = GaussianFilter(3, rec_blur, truncated=3.0, approx="sampled").to(device) if rec_blur > 0 \
            else nn.Identity()
        self.rec_label_weights = rec_label_weights
        self.label_rec_weight, self.kl_weight = label_rec_weight, kl_weight
        self.noise = torch.Generator(device="cpu")  # seeded at each epoch's start, each process its own
        self.seed, self.rank = seed, rank
        self.monitor_seed = seed + 1  # the monitor's fixed noise batch, apart from the training noise
        self.device_type, self.bf16 = torch.device(device).type, amp  # not MONAI's amp: no float16 GradScaler
        if amp:  # oneDNN's bf16 conv gradients are wrong on inputs smaller than the kernel (the S/8 maps at 16³)
            from volgan.training import fp32_small_convs

            for network in self.networks().values():
                fp32_small_convs(network)
        self.ckpt_dir: str | None = None  # set by attach_checkpointing, named when training stops on a NaN
        self.monitor_interval = monitor_interval
        self.inferer = inferer or SimpleInferer()  # runs the generators when the monitor samples them
        self.real_bank: list[torch.Tensor] = []
        from ignite.engine import Events

        self.add_event_handler(Events.EPOCH_STARTED, self.start_epoch)
        self.add_event_handler(Events.EPOCH_COMPLETED(every=monitor_interval), self.monitor)
        if train_handlers is not None:  # after the monitor, so the epoch's loggers see its metrics
            self._register_handlers(train_handlers)

    def _z(self, n: int, dim: int) -> torch.Tensor:
        return torch.randn(n, dim, generator=self.noise).to(self.state.device)

    def start_epoch(self, engine) -> None:
        """Make the epoch's randomness a function of the seed, the epoch and the process alone, so that a run
        resumed from an epoch's checkpoint trains as the run without a break did (weights equal bit for bit on
        the same machine and thread count): torch's, numpy's and Python's generators and the noise generator are
        seeded from (seed, epoch, rank), the loader's generator (its workers' seeds) from (seed, epoch), before the
        epoch's first batch is drawn (ignite makes each epoch's loader iterator after this event, in a resumed run as
        in the first; the order is :class:`~volgan.data.loader.EpochShuffle`'s). The EMA warm-up counts the
        iterations done, which the checkpoint holds; the monitor's real images are the training
        set's first 16, read before the seeding (they draw nothing afterwards)."""
        if not self.real_bank:
            dataset = self.data_loader.dataset
            self.real_bank = [dataset[i]["image"].data[None].float() for i in range(min(16, len(dataset)))]
        epoch = engine.state.epoch
        words = np.random.SeedSequence((self.seed, epoch, self.rank)).generate_state(2)
        torch.manual_seed(int(words[0]))
        np.random.seed(int(words[0]))
        random.seed(int(words[0]))
        self.noise.manual_seed(int(words[1]))
        worker_seeds = getattr(self.data_loader, "generator", None)  # the loader's workers' base seed
        if worker_seeds is not None:
            worker_seeds.manual_seed(int(np.random.SeedSequence((self.seed, epoch)).generate_state(1)[0]))
        self.label_ema.steps = self.image_ema.steps = engine.state.iteration

    def _iteration(self, engine, batchdata):
        image, (label, tumor_type) = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking)
        real_onehot = one_hot_labels(label)
        n, shape = len(image), image.shape[2:]
        planes = class_planes(tumor_type, shape)
        g_l, g_i = self.label_generator, self.image_generator
        d_l, d_i = self.label_discriminator, self.image_discriminator

        with self.autocast():
            fake_label = F.gumbel_softmax(g_l(self._z(n, g_l.z_dim), tumor_type).float(), tau=1.0, hard=True, dim=1)
            fake_image = g_i(real_onehot, self._z(n, g_i.z_dim)).float()

            # discriminators
            lazy_r1 = engine.state.iteration % self.r1_interval == 0
            real_l = real_onehot.clone().requires_grad_(lazy_r1)
            real_i = image.clone().requires_grad_(lazy_r1)
            ra_l, fa_l = diff_augment(torch.cat([real_l, planes], 1))[0], diff_augment(
                torch.cat([fake_label.detach(), planes], 1))[0]
            ra_i, fa_i = diff_augment(torch.cat([real_i, real_onehot], 1))[0], diff_augment(
                torch.cat([fake_image.detach(), real_onehot], 1))[0]
            out_rl, out_ri = d_l(ra_l).float(), d_i(ra_i).float()
            d_loss = hinge_d(out_rl, d_l(fa_l).float()) + hinge_d(out_ri, d_i(fa_i).float())
            r1 = torch.zeros((), device=image.device)
            if lazy_r1:
                r1 = r1_penalty(out_rl, real_l) + r1_penalty(out_ri, real_i)
                d_loss = d_loss + self.r1_weight / 2 * self.r1_interval * r1
        self.d_optimizer.zero_grad(set_to_none=True)
        d_loss.backward()
        self.average_gradients(("label_discriminator", "image_discriminator"))
        self.check_finite({"d_loss": d_loss, "r1": r1}, ("label_discriminator", "image_discriminator"))
        self.d_optimizer.step()

        # generators
        with self.autocast():
            adv_l = -d_l(diff_augment(torch.cat([fake_label, planes], 1))[0]).float().mean()
            adv_i = -d_i(diff_augment(torch.cat([fake_image, real_onehot], 1))[0]).float().mean()
            rec = self.rec_blur(fake_image - image).abs()
            if self.rec_label_weights:  # each voxel weighted by its label's inverse square-root frequency
                weights = self.label_weights(label)[label]
                rec = (rec * weights).sum() / weights.sum()
            else:
                rec = rec.mean()
            g_loss = adv_l + adv_i + self.rec_weight * rec
            label_rec = kl = torch.zeros((), device=image.device)
            if self.label_encoder is not None:  # VAE-GAN: reconstruct the real label map through the posterior
                mu, logvar = (v.float() for v in self.label_encoder(real_onehot, tumor_type))
                z_post = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
                label_rec = F.cross_entropy(g_l(z_post, tumor_type).float(), label[:, 0].long(),
                                            weight=self.label_weights(label))
                kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1).mean()
                g_loss = g_loss + self.label_rec_weight * label_rec + self.kl_weight * kl
        self.g_optimizer.zero_grad(set_to_none=True)
        g_loss.backward()
        self.average_gradients(("label_generator", "image_generator", "label_encoder"))
        self.check_finite({"g_adv_label": adv_l, "g_adv_image": adv_i, "rec_l1": rec, "label_ce": label_rec,
                           "kl": kl, "g_loss": g_loss}, ("label_generator", "image_generator", "label_encoder"))
        self.g_optimizer.step()
        self.label_ema.update(g_l)
        self.image_ema.update(g_i)
        # one dict in a list, as a decollating MONAI engine gives: MONAI's tracking handlers read output[0]["loss"]
        return [{Keys.LOSS: float(g_loss.detach() + d_loss.detach()), "d_loss": float(d_loss.detach()),
                 "g_adv_label": float(adv_l.detach()),
                 "g_adv_image": float(adv_i.detach()), "rec_l1": float(rec.detach()), "r1": float(r1.detach()),
                 "label_ce": float(label_rec.detach()), "kl": float(kl.detach())}]

    def networks(self) -> dict[str, nn.Module]:
        """Every trained network by name (the label encoder when there is one)."""
        nets = {"label_generator": self.label_generator, "image_generator": self.image_generator,
                "label_discriminator": self.label_discriminator, "image_discriminator": self.image_discriminator}
        if self.label_encoder is not None:
            nets["label_encoder"] = self.label_encoder
        return nets

    def average_gradients(self, names: tuple[str, ...]) -> None:
        """With ``distributed``, each gradient of the networks ``names`` becomes its mean over the processes
        (``torch.distributed.all_reduce``), so that every process takes the same step; a no-op otherwise. Done by
        hand rather than by ``DistributedDataParallel``: the R1 penalty's double backward and the generator step
        through the discriminators each backward a network more than once an iteration, and the EMA copies and
        checkpoints keep the plain networks."""
        if not self.distributed:
            return
        import torch.distributed as dist

        world = dist.get_world_size()
        nets = self.networks()
        for name in names:
            for parameter in nets[name].parameters() if name in nets else ():
                if parameter.grad is not None:
                    dist.all_reduce(parameter.grad)
                    parameter.grad /= world

    def check_finite(self, terms: dict[str, torch.Tensor], names: tuple[str, ...]) -> None:
        """Stop training (:class:`volgan.errors.NonFiniteTraining`) before the optimiser step when a loss term or a
        gradient of the networks ``names`` is not finite, so that no weight ever takes a non-finite value."""
        from volgan.training import check_finite

        nets = self.networks()
        check_finite("spine_cgan", self, terms, {n: nets[n] for n in names if n in nets}, self.ckpt_dir)

    def autocast(self) -> torch.autocast:
        """bfloat16 autocast of the forward passes when the trainer was built with ``amp=True`` (no loss scaling
        needed); a no-op context otherwise."""
        return torch.autocast(self.device_type, dtype=torch.bfloat16, enabled=self.bf16)

    @staticmethod
    def label_weights(label: torch.Tensor) -> torch.Tensor:
        """Inverse square-root label frequencies of the batch (normalised to mean 1), so thin structures count."""
        counts = torch.bincount(label.flatten().long(), minlength=NUM_LABELS).float().clamp(min=1)
        weights = counts.rsqrt()
        return weights / weights.mean()

    @torch.no_grad()
    def monitor(self, engine) -> None:
        """Mode-collapse monitor: MS-SSIM among 16 EMA samples of a fixed noise batch against among (up to) 16 real
        images, as epoch metrics (``msssim_synthetic``, ``msssim_real``, ``diversity_gap`` = (synthetic − real) /
        real) that the bundle's TensorBoard and MLflow handlers log; a warning in the log when the samples are
        less diverse than the real pool by more than :data:`DIVERSITY_GAP_TARGET`."""
        import logging

        classes = torch.arange(16) % NUM_TUMOR_TYPES
        _, images = sample(self.label_ema.shadow, self.image_ema.shadow, classes,
                           torch.Generator().manual_seed(self.monitor_seed), self.inferer)
        synthetic, real = msssim_diversity(images.cpu()), msssim_diversity(torch.cat(self.real_bank)[:16])
        gap = (synthetic - real) / real if real else 0.0
        engine.state.metrics.update(msssim_synthetic=synthetic, msssim_real=real, diversity_gap=gap)
        if gap > DIVERSITY_GAP_TARGET:
            logging.getLogger("spine_cgan").warning(
                f"epoch {engine.state.epoch}: possible mode collapse: synthetic MS-SSIM {synthetic:.3f} is "
                f"{100 * gap:.0f}% above the real pool's {real:.3f} (less diverse; target gap <= "
                f"{100 * DIVERSITY_GAP_TARGET:.0f}%)")


DIVERSITY_GAP_TARGET = 0.15  # the synthetic-quality target: MS-SSIM within 15% of the real pool's


def training_stats(cases, prep=None) -> dict:
    """Geometry, intensity scale, pose spread and tumor sizes of the training data, recorded with the generators
    so that synthetic volumes come out in the same spacing, orientation, intensity range, pose spread and tumor
    sizes. With ``prep`` (the generators' preprocessing, a torchio transform such as spine_cgan's
    ``configs/train.json`` lists, or a :class:`volgan.transforms.Preprocessing` for the shared one) the label maps
    are brought to the generators' grid and measured there: the pose spread (:func:`volgan.gan.pose.pose_spread`) and
    ``tumor_voxels``, the tumor's voxel count in each training map, by ``tumor_type`` (``{"1": [...], ...}``);
    without ``prep`` both are left out. Each case is read once.

    Parameters
    ----------
    cases : list[Case]
        the training cases.
    prep : tio.Transform | Preprocessing | None
        the generators' preprocessing or grid, or None.

    Returns
    -------
    dict
        ``intensity_mean`` and ``intensity_std`` (the cases' means of their own), ``orientation`` (the commonest axis
        codes), ``n_training`` and, with ``prep``, ``pose_std`` and ``tumor_voxels``.
    """
    from collections import Counter

    from volgan.data.loader import subject_for
    from volgan.gan.pose import pose_spread
    from volgan.transforms import Preprocessing, preprocessing

    pipeline = preprocessing(prep) if isinstance(prep, Preprocessing) else prep
    means, stds, codes, on_grid = [], [], Counter(), []
    for case in cases:
        subject = subject_for(case)
        image = subject["image"]
        means.append(float(image.data.mean()))
        stds.append(float(image.data.float().std(unbiased=False)))
        codes["".join(image.orientation)] += 1
        if pipeline is not None and case.label is not None:
            on_grid.append((case.tumor_type, pipeline(subject)["label"].data[0].numpy()))
    stats = {"intensity_mean": float(sum(means) / len(means)), "intensity_std": float(sum(stds) / len(stds)),
             "orientation": codes.most_common(1)[0][0], "n_training": len(cases)}
    if pipeline is not None:
        stats["pose_std"] = pose_spread(label for _, label in on_grid)
        sizes: dict[str, list[int]] = {}
        for tumor_type, label in on_grid:
            if tumor_type:
                sizes.setdefault(str(tumor_type), []).append(int((label == TUMOR_LABEL).sum()))
        stats["tumor_voxels"] = {k: sorted(v) for k, v in sorted(sizes.items())}
    return stats
