"""The 3D conditional GAN: a class-conditional generator of label maps and a SPADE generator of the image
from a label map, each against a spectrally normalised patch discriminator that sees the condition.

Shapes (S = volume size, a power of two ≥ 16): label maps are one-hot (B, 6, S, S, S), images z-normalised
(B, 1, S, S, S), classes ``tumor_type`` (B,). Stability on small data (seed 1's first challenge): spectral
normalisation in both discriminators, hinge loss with an R1 penalty on real samples, differentiable
augmentation (translation and cutout) of everything the discriminators see, and EMA copies of the
generators for sampling. :func:`msssim_diversity` is the mode-collapse monitor.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import spectral_norm

from volgan.labels import NUM_LABELS, NUM_TUMOR_TYPES, TUMOR_LABEL


def _norm(channels: int) -> nn.Module:
    return nn.GroupNorm(min(8, channels), channels)


class LabelGenerator(nn.Module):
    """Noise (B, z_dim) and class (B,) → label-map logits (B, 6, S, S, S)."""

    def __init__(self, size: int = 32, z_dim: int = 64, base: int = 32, classes: int = NUM_TUMOR_TYPES):
        super().__init__()
        self.size, self.z_dim = size, z_dim
        self.embed = nn.Embedding(classes, z_dim)
        steps = int(math.log2(size)) - 2  # from 4³ up to S³
        widths = [base * 2 ** min(steps - i, 3) for i in range(steps + 1)]
        self.project = nn.Linear(2 * z_dim, widths[0] * 4**3)
        self.widths = widths
        blocks = []
        for i in range(steps):
            blocks.append(nn.Sequential(
                nn.Upsample(scale_factor=2, mode="trilinear", align_corners=False),
                nn.Conv3d(widths[i] + classes, widths[i + 1], 3, padding=1), _norm(widths[i + 1]), nn.LeakyReLU(0.2),
                nn.Conv3d(widths[i + 1], widths[i + 1], 3, padding=1), _norm(widths[i + 1]), nn.LeakyReLU(0.2),
            ))
        self.blocks = nn.ModuleList(blocks)
        self.out = nn.Conv3d(widths[-1], NUM_LABELS, 1)
        self.classes = classes

    def forward(self, z: torch.Tensor, tumor_type: torch.Tensor) -> torch.Tensor:
        x = self.project(torch.cat([z, self.embed(tumor_type)], dim=1)).view(len(z), self.widths[0], 4, 4, 4)
        onehot = F.one_hot(tumor_type, self.classes).float()
        for block in self.blocks:
            cond = onehot[:, :, None, None, None].expand(-1, -1, *x.shape[2:])
            x = block(torch.cat([x, cond], dim=1))
        return self.out(x)


class LabelEncoder(nn.Module):
    """One-hot label map (B, 6, S³) and class (B,) → posterior mean and log-variance (B, z_dim) each.

    Makes the label generator a conditional VAE-GAN: reconstruction gives the generator a dense signal that
    pure adversarial training lacks on small data and a CPU budget; the KL term keeps the posterior near the
    prior that synthesis samples from."""

    def __init__(self, size: int = 32, z_dim: int = 64, base: int = 16, classes: int = NUM_TUMOR_TYPES):
        super().__init__()
        layers, c = [], NUM_LABELS + classes
        for width in (base, base * 2, base * 4):
            layers += [nn.Conv3d(c, width, 4, stride=2, padding=1), _norm(width), nn.LeakyReLU(0.2)]
            c = width
        self.net = nn.Sequential(*layers)
        self.head = nn.Linear(c * (size // 8) ** 3, 2 * z_dim)
        self.classes = classes

    def forward(self, onehot: torch.Tensor, tumor_type: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        planes = F.one_hot(tumor_type, self.classes).float()[:, :, None, None, None].expand(-1, -1, *onehot.shape[2:])
        mu, logvar = self.head(self.net(torch.cat([onehot, planes], 1)).flatten(1)).chunk(2, dim=1)
        return mu, logvar.clamp(-8, 8)


class SPADE(nn.Module):
    """Spatially-adaptive normalisation: GroupNorm without affine, then scale and shift from the label map."""

    def __init__(self, channels: int, hidden: int = 16):
        super().__init__()
        self.norm = nn.GroupNorm(min(8, channels), channels, affine=False)
        self.shared = nn.Sequential(nn.Conv3d(NUM_LABELS, hidden, 3, padding=1), nn.ReLU())
        self.gamma = nn.Conv3d(hidden, channels, 3, padding=1)
        self.beta = nn.Conv3d(hidden, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        label = F.interpolate(label, size=x.shape[2:], mode="nearest")
        h = self.shared(label)
        return self.norm(x) * (1 + self.gamma(h)) + self.beta(h)


class SPADEBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.norm1, self.conv1 = SPADE(c_in), nn.Conv3d(c_in, c_out, 3, padding=1)
        self.norm2, self.conv2 = SPADE(c_out), nn.Conv3d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv3d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.leaky_relu(self.norm1(x, label), 0.2))
        h = self.conv2(F.leaky_relu(self.norm2(h, label), 0.2))
        return self.skip(x) + h


class ImageGenerator(nn.Module):
    """One-hot label map (B, 6, S, S, S) and noise → image (B, 1, S, S, S), SPADE blocks from S/8 up to S.

    The noise is a vector (B, z_dim) for the global look (contrast, bias) plus per-voxel noise for texture.
    """

    def __init__(self, size: int = 32, z_dim: int = 32, base: int = 32):
        super().__init__()
        self.size, self.z_dim = size, z_dim
        self.start = size // 8
        self.project = nn.Linear(z_dim, base * 4 * self.start**3)
        self.base = base
        self.blocks = nn.ModuleList([SPADEBlock(base * 4, base * 2), SPADEBlock(base * 2, base),
                                     SPADEBlock(base, base)])
        self.texture = nn.Conv3d(1, base, 1)
        self.out = nn.Sequential(nn.LeakyReLU(0.2), nn.Conv3d(base, 1, 3, padding=1))

    def forward(self, label: torch.Tensor, z: torch.Tensor, texture: torch.Tensor | None = None) -> torch.Tensor:
        """``texture`` (B, 1, S, S, S) is the per-voxel noise; drawn from the global generator when None."""
        x = self.project(z).view(len(z), self.base * 4, self.start, self.start, self.start)
        for block in self.blocks:
            x = block(F.interpolate(x, scale_factor=2, mode="trilinear", align_corners=False), label)
        if texture is None:
            texture = torch.randn(len(z), 1, *x.shape[2:], device=x.device, dtype=x.dtype)
        return self.out(x + self.texture(texture))


class PatchDiscriminator(nn.Module):
    """Spectrally normalised 3D patch discriminator on (volume ⊕ condition channels) → (B, 1, S/8, S/8, S/8)."""

    def __init__(self, in_channels: int, base: int = 32):
        super().__init__()
        layers, c = [], in_channels
        for width in (base, base * 2, base * 4):
            layers += [spectral_norm(nn.Conv3d(c, width, 4, stride=2, padding=1)), nn.LeakyReLU(0.2)]
            c = width
        layers += [spectral_norm(nn.Conv3d(c, c, 3, padding=1)), nn.LeakyReLU(0.2),
                   spectral_norm(nn.Conv3d(c, 1, 3, padding=1))]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def class_planes(tumor_type: torch.Tensor, shape) -> torch.Tensor:
    """One-hot class broadcast to (B, 4, *shape), the condition the label discriminator sees."""
    return F.one_hot(tumor_type, NUM_TUMOR_TYPES).float()[:, :, None, None, None].expand(-1, -1, *shape)


def diff_augment(*volumes: torch.Tensor, generator: torch.Generator | None = None) -> list[torch.Tensor]:
    """The same random translation (up to 1/8 of the size, zero-filled) and cutout (a cube of 1/4 the size)
    for every volume of a batch element; differentiable in the volumes (DiffAugment for 3D)."""
    first = volumes[0]
    b, size = first.shape[0], first.shape[2:]
    device = first.device
    shift = [(torch.randint(-(n // 8), n // 8 + 1, (b,), generator=generator)).tolist() for n in size]
    corner = [(torch.randint(0, n - n // 4 + 1, (b,), generator=generator)).tolist() for n in size]
    mask = torch.ones(b, 1, *size, device=device)
    for i in range(b):
        mask[i, :, corner[0][i]:corner[0][i] + size[0] // 4, corner[1][i]:corner[1][i] + size[1] // 4,
             corner[2][i]:corner[2][i] + size[2] // 4] = 0
    out = []
    for v in volumes:
        moved = torch.stack([_translate(v[i], [s[i] for s in shift]) for i in range(b)])
        out.append(moved * mask)
    return out


def _translate(x: torch.Tensor, shift: list[int]) -> torch.Tensor:
    """Shift (C, X, Y, Z) by whole voxels, filling with zeros."""
    padded = F.pad(x, [p for s in reversed(shift) for p in (max(s, 0), max(-s, 0))])
    starts = [max(-s, 0) for s in shift]
    return padded[:, starts[0]:starts[0] + x.shape[1], starts[1]:starts[1] + x.shape[2],
                  starts[2]:starts[2] + x.shape[3]]


def hinge_d(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return F.relu(1 - real).mean() + F.relu(1 + fake).mean()


def r1_penalty(d_out: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """R1: squared gradient norm of D's output on real inputs."""
    (grad,) = torch.autograd.grad(d_out.sum(), inputs, create_graph=True)
    return grad.pow(2).flatten(1).sum(1).mean()


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
    Volumes are min-max scaled to [0, 1] together."""
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
    weights = (0.2, 0.3, 0.5) if size >= 32 else (0.5, 0.5)
    metric = MultiScaleSSIMMetric(spatial_dims=3, data_range=1.0, kernel_size=5, weights=weights)
    with torch.no_grad():
        values = [metric(scaled[part[:, 0]], scaled[part[:, 1]]) for part in chosen.split(64)]
    return chosen, torch.cat(values).flatten().float()


def msssim_diversity(volumes: torch.Tensor, pairs: int = 16, seed: int = 0) -> float:
    """Mean MS-SSIM over distinct pairs of (N, 1, S, S, S) volumes (:func:`msssim_pairs`); NaN below two volumes.
    Lower means more diverse; mode collapse shows as synthetic MS-SSIM well above the real one."""
    _, values = msssim_pairs(volumes, pairs, seed)
    return float(values.mean()) if len(values) else math.nan


# --------------------------------------------------------------------------------------------------------
# Training: a MONAI Trainer whose iteration conditions on the batch (MONAI's GanTrainer cannot).

from monai.engines import Trainer  # noqa: E402
from monai.networks.layers import GaussianFilter  # noqa: E402
from monai.utils import CommonKeys as Keys  # noqa: E402


def one_hot_labels(label: torch.Tensor) -> torch.Tensor:
    """(B, 1, X, Y, Z) integer labels → (B, 6, X, Y, Z) float one-hot."""
    return F.one_hot(label[:, 0].long(), NUM_LABELS).permute(0, 4, 1, 2, 3).float()


class CGanTrainer(Trainer):
    """One iteration: a discriminator step for both GANs (hinge, lazy R1 every ``r1_interval`` steps, DiffAugment),
    then a generator step (adversarial + ``rec_weight`` × L1 of the image generator on real label maps, the
    difference first blurred by a Gaussian of ``rec_blur`` voxels (MONAI's GaussianFilter) so that the L1 fits
    contrast and shading and leaves the noise texture to the discriminator, 0 = plain L1, which pulls towards a
    noise-free image; with ``rec_label_weights`` each voxel weighted as :meth:`label_weights` weights its label),
    then the EMA updates. With ``amp`` the forward passes run in bfloat16 autocast. ``engine.state.output``
    holds the losses as ``[{"loss": …, "d_loss": …, …}]`` (floats; one dict in a list, as MONAI's decollating
    engines give, so ``--tracking mlflow`` and MONAI's handlers find ``output[0]["loss"]``); every
    ``monitor_interval`` epochs the MS-SSIM of EMA samples and of real images go into ``engine.state.metrics``."""

    def __init__(self, device, max_epochs: int, train_data_loader, label_generator: LabelGenerator,
                 image_generator: ImageGenerator, label_discriminator: PatchDiscriminator,
                 image_discriminator: PatchDiscriminator, g_optimizer, d_optimizer, prepare_batch,
                 label_encoder: LabelEncoder | None = None, rec_weight: float = 5.0, label_rec_weight: float = 1.0,
                 rec_blur: float = 0.0, rec_label_weights: bool = False, kl_weight: float = 0.02,
                 r1_weight: float = 1.0, r1_interval: int = 4,
                 ema_decay: float = 0.995, monitor_interval: int = 5, seed: int = 0, amp: bool = False,
                 train_handlers=None, **kwargs):
        super().__init__(device=device, max_epochs=max_epochs, data_loader=train_data_loader,
                         prepare_batch=prepare_batch, handlers=None, decollate=False, **kwargs)
        self.label_generator, self.image_generator = label_generator, image_generator
        self.label_discriminator, self.image_discriminator = label_discriminator, image_discriminator
        self.g_optimizer, self.d_optimizer = g_optimizer, d_optimizer
        self.label_ema, self.image_ema = EMA(label_generator, ema_decay), EMA(image_generator, ema_decay)
        self.rec_weight, self.r1_weight, self.r1_interval = rec_weight, r1_weight, r1_interval
        self.rec_blur = GaussianFilter(3, rec_blur, truncated=3.0, approx="sampled").to(device) if rec_blur > 0 \
            else nn.Identity()
        self.rec_label_weights = rec_label_weights
        self.label_encoder, self.label_rec_weight, self.kl_weight = label_encoder, label_rec_weight, kl_weight
        self.noise = torch.Generator(device="cpu").manual_seed(seed)
        self.monitor_seed = seed + 1  # the monitor's fixed noise batch, apart from the training noise
        self.device_type, self.bf16 = torch.device(device).type, amp  # not MONAI's amp: no float16 GradScaler
        if amp:  # oneDNN's bf16 conv gradients are wrong on inputs smaller than the kernel (the S/8 maps at 16³)
            from volgan.train import fp32_small_convs

            for network in self.networks().values():
                fp32_small_convs(network)
        self.ckpt_dir: str | None = None  # set by attach_checkpointing, named when training stops on a NaN
        self.monitor_interval = monitor_interval
        self.real_bank: list[torch.Tensor] = []
        from ignite.engine import Events

        self.add_event_handler(Events.EPOCH_COMPLETED(every=monitor_interval), self.monitor)
        if train_handlers is not None:  # after the monitor, so the epoch's loggers see its metrics
            self._register_handlers(train_handlers)

    def _z(self, n: int, dim: int) -> torch.Tensor:
        return torch.randn(n, dim, generator=self.noise).to(self.state.device)

    def _iteration(self, engine, batchdata):
        image, (label, tumor_type) = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking)
        if sum(len(b) for b in self.real_bank) < 16:
            self.real_bank.append(image.detach().float().cpu())
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

    def check_finite(self, terms: dict[str, torch.Tensor], names: tuple[str, ...]) -> None:
        """Stop training (:class:`volgan.train.NonFiniteTraining`) before the optimiser step when a loss term or a
        gradient of the networks ``names`` is not finite, so that no weight ever takes a non-finite value."""
        from volgan.train import check_finite

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
                           torch.Generator().manual_seed(self.monitor_seed))
        synthetic, real = msssim_diversity(images.cpu()), msssim_diversity(torch.cat(self.real_bank)[:16])
        gap = (synthetic - real) / real if real else 0.0
        engine.state.metrics.update(msssim_synthetic=synthetic, msssim_real=real, diversity_gap=gap)
        if gap > DIVERSITY_GAP_TARGET:
            logging.getLogger("spine_cgan").warning(
                f"epoch {engine.state.epoch}: possible mode collapse: synthetic MS-SSIM {synthetic:.3f} is "
                f"{100 * gap:.0f}% above the real pool's {real:.3f} (less diverse; target gap <= "
                f"{100 * DIVERSITY_GAP_TARGET:.0f}%)")


DIVERSITY_GAP_TARGET = 0.15  # the synthetic-quality target: MS-SSIM within 15% of the real pool's


@torch.no_grad()
def sample(label_generator: LabelGenerator, image_generator: ImageGenerator, tumor_type: torch.Tensor,
           generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Label logits (N, 6, S³) and images (N, 1, S³) for classes (N,), noise drawn from ``generator``."""
    device = next(label_generator.parameters()).device
    n = len(tumor_type)
    z_l = torch.randn(n, label_generator.z_dim, generator=generator).to(device)
    logits = label_generator(z_l, tumor_type.to(device))
    onehot = F.one_hot(logits.argmax(1), NUM_LABELS).permute(0, 4, 1, 2, 3).float()
    z_i = torch.randn(n, image_generator.z_dim, generator=generator).to(device)
    texture = torch.randn(n, 1, *onehot.shape[2:], generator=generator).to(device)
    return logits, image_generator(onehot, z_i, texture)


GENERATOR_FILE = "generator.pt"


def training_stats(cases, prep=None) -> dict:
    """Geometry, intensity scale, pose spread and tumor sizes of the training data, recorded with the generators
    so that synthetic volumes come out in the same spacing, orientation, intensity range, pose spread and tumor
    sizes. With ``prep`` (a :class:`volgan.transforms.Preprocessing`) the label maps are brought to the
    generators' grid and measured there: the pose spread (:func:`volgan.pose.pose_spread`) and
    ``tumor_voxels``, the tumor's voxel count in each training map, by ``tumor_type`` (``{"1": [...], ...}``);
    without ``prep`` both are left out. Each case is read once."""
    from collections import Counter

    from volgan.loader import subject_for
    from volgan.pose import pose_spread
    from volgan.transforms import preprocessing

    pipeline = preprocessing(prep) if prep is not None else None
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


def attach_checkpointing(trainer: CGanTrainer, ckpt_dir: str, config: dict, stats: dict, save_interval: int = 1):
    """Save every network, optimiser and the trainer's state each ``save_interval`` epochs to
    ``ckpt_dir/checkpoint_checkpoint_epoch=N.pt`` (:class:`volgan.train.CheckpointSaver`: a kill during the save
    leaves the previous one whole; older ones go once the new one is in place), resume from the newest such
    checkpoint when one exists, and export the EMA generators with ``config`` and ``stats`` to
    ``ckpt_dir/generator.pt`` at each save."""
    from pathlib import Path

    from ignite.engine import Events
    from monai.handlers import CheckpointLoader

    from volgan.errors import NonFiniteTraining
    from volgan.io import atomic_path
    from volgan.train import CheckpointSaver, all_finite

    save_dict = {"label_generator": trainer.label_generator, "image_generator": trainer.image_generator,
                 **({"label_encoder": trainer.label_encoder} if trainer.label_encoder is not None else {}),
                 "label_discriminator": trainer.label_discriminator,
                 "image_discriminator": trainer.image_discriminator, "label_ema": trainer.label_ema.shadow,
                 "image_ema": trainer.image_ema.shadow, "g_optimizer": trainer.g_optimizer,
                 "d_optimizer": trainer.d_optimizer, "trainer": trainer}
    trainer.ckpt_dir = ckpt_dir
    latest = latest_checkpoint(ckpt_dir)
    if latest is not None:
        CheckpointLoader(load_path=str(latest), load_dict=save_dict, map_location=trainer.state.device).attach(trainer)
    CheckpointSaver(save_dir=ckpt_dir, save_dict=save_dict, save_interval=save_interval, n_saved=1,
                    file_prefix="checkpoint", epoch_level=True).attach(trainer)

    def export(engine) -> None:
        for _, older in checkpoints(ckpt_dir)[:-1]:  # left by the run before a resume
            older.unlink(missing_ok=True)
        state = {"config": config, "stats": stats, "epoch": engine.state.epoch,
                 "label_generator": trainer.label_ema.shadow.state_dict(),
                 "image_generator": trainer.image_ema.shadow.state_dict()}
        if not all_finite(state):
            raise NonFiniteTraining(f"{Path(ckpt_dir) / GENERATOR_FILE}: not written, the generators' weights are "
                                    f"not finite at epoch {engine.state.epoch}")
        with atomic_path(Path(ckpt_dir) / GENERATOR_FILE, suffix=".pt") as tmp:
            torch.save(state, tmp)

    trainer.add_event_handler(Events.EPOCH_COMPLETED(every=save_interval), export)
    return trainer


def checkpoints(ckpt_dir: str) -> list:
    """``(epoch, path)`` of each ``checkpoint_*.pt`` in ``ckpt_dir``, oldest first."""
    import re
    from pathlib import Path

    found = []
    for path in Path(ckpt_dir).glob("checkpoint_*.pt"):
        match = re.search(r"(\d+)\.pt$", path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(ckpt_dir: str):
    """The newest ``checkpoint_*.pt`` in ``ckpt_dir`` by epoch, or None."""
    found = checkpoints(ckpt_dir)
    return found[-1][1] if found else None
