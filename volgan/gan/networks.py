"""The 3D conditional GAN: a class-conditional generator of label maps and a SPADE generator of the image
from a label map, each against a spectrally normalised patch discriminator that sees the condition.

Shapes (S = the grid, X × Y × Z voxels, :func:`grid_shape`; a cube S³ by default): label maps are one-hot
(B, 6, *S), images z-normalised (B, 1, *S), classes ``tumor_type`` (B,). Stability on small data (Ainapure et
al.'s first challenge): spectral normalisation in both discriminators, hinge loss with an R1 penalty on real
samples, differentiable augmentation (translation and cutout) of everything the discriminators see, and EMA copies
of the generators for sampling. :func:`volgan.gan.trainer.msssim_diversity` is the mode-collapse monitor.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.inferers import Inferer, SimpleInferer
from torch import nn
from torch.nn.utils import spectral_norm

from volgan.labels import NUM_LABELS, NUM_TUMOR_TYPES


def grid_shape(size: int | Sequence[int]) -> tuple[int, int, int]:
    """The generators' grid (X, Y, Z) in voxels for ``size``, one side (a cube) or three.

    A grid the networks build: every side a multiple of 8 (the image generator starts at S/8), the smallest side
    a power of two, at least 8 (the label generator starts there at 4 voxels), and every side a multiple of the
    label generator's upsampling (the smallest side / 4). Cubes of 16, 32 and 64 qualify, and so do fields such
    as 64 × 64 × 16 (thick slices along S).

    Parameters
    ----------
    size : int | Sequence[int]
        one side, or three sides (X, Y, Z), in voxels.

    Returns
    -------
    tuple[int, int, int]
        the grid's shape.

    Raises
    ------
    ValueError
        for a size the networks cannot build, saying why.
    """
    sides = (size,) * 3 if isinstance(size, int) else tuple(size)
    if len(sides) != 3 or not all(isinstance(n, int) and not isinstance(n, bool) for n in sides):
        raise ValueError(f"size must be a whole number or three, got {size!r}")
    smallest = min(sides)
    if smallest < 8 or smallest & (smallest - 1):
        raise ValueError(f"the smallest side must be a power of two, 8 or more, got {size!r}")
    step = max(8, smallest // 4)
    if any(n % step for n in sides):
        raise ValueError(f"every side must be a multiple of {step} (8 and the smallest side / 4), got {size!r}")
    return sides  # type: ignore[return-value]


def _norm(channels: int) -> nn.Module:
    return nn.GroupNorm(min(8, channels), channels)


class LabelGenerator(nn.Module):
    """Noise (B, z_dim) and class (B,) → label-map logits (B, 6, *S) for the grid S of ``size``
    (:func:`grid_shape`)."""

    def __init__(self, size: int | Sequence[int] = 32, z_dim: int = 64, base: int = 32,
                 classes: int = NUM_TUMOR_TYPES):
        super().__init__()
        shape = grid_shape(size)
        self.size, self.z_dim = size, z_dim
        self.embed = nn.Embedding(classes, z_dim)
        steps = int(math.log2(min(shape))) - 2  # from 4 voxels on the smallest side (4³ for a cube) up to S
        self.start = tuple(n >> steps for n in shape)
        widths = [base * 2 ** min(steps - i, 3) for i in range(steps + 1)]
        self.project = nn.Linear(2 * z_dim, widths[0] * math.prod(self.start))
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
        x = self.project(torch.cat([z, self.embed(tumor_type)], dim=1))
        x = x.view(z.shape[0], self.widths[0], self.start[0], self.start[1], self.start[2])
        onehot = F.one_hot(tumor_type, self.classes).float()
        for block in self.blocks:
            cond = onehot[:, :, None, None, None].expand(-1, -1, x.shape[2], x.shape[3], x.shape[4])
            x = block(torch.cat([x, cond], dim=1))
        return self.out(x)


class LabelEncoder(nn.Module):
    """One-hot label map (B, 6, *S) and class (B,) → posterior mean and log-variance (B, z_dim) each.

    Makes the label generator a conditional VAE-GAN: reconstruction gives the generator a dense signal that
    pure adversarial training lacks on small data and a CPU budget; the KL term keeps the posterior near the
    prior that synthesis samples from."""

    def __init__(self, size: int | Sequence[int] = 32, z_dim: int = 64, base: int = 16,
                 classes: int = NUM_TUMOR_TYPES):
        super().__init__()
        layers, c = [], NUM_LABELS + classes
        for width in (base, base * 2, base * 4):
            layers += [nn.Conv3d(c, width, 4, stride=2, padding=1), _norm(width), nn.LeakyReLU(0.2)]
            c = width
        self.net = nn.Sequential(*layers)
        self.head = nn.Linear(c * math.prod(n // 8 for n in grid_shape(size)), 2 * z_dim)
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
        label = F.interpolate(label, size=[x.shape[2], x.shape[3], x.shape[4]], mode="nearest")
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
    """One-hot label map (B, 6, *S) and noise → image (B, 1, *S), SPADE blocks from S/8 up to S.

    The noise is a vector (B, z_dim) for the global look (contrast, bias) plus per-voxel noise for texture.
    """

    def __init__(self, size: int | Sequence[int] = 32, z_dim: int = 32, base: int = 32):
        super().__init__()
        self.size, self.z_dim = size, z_dim
        self.start = tuple(n // 8 for n in grid_shape(size))
        self.project = nn.Linear(z_dim, base * 4 * math.prod(self.start))
        self.base = base
        self.blocks = nn.ModuleList([SPADEBlock(base * 4, base * 2), SPADEBlock(base * 2, base),
                                     SPADEBlock(base, base)])
        self.texture = nn.Conv3d(1, base, 1)
        self.out = nn.Sequential(nn.LeakyReLU(0.2), nn.Conv3d(base, 1, 3, padding=1))

    def forward(self, label: torch.Tensor, z: torch.Tensor | None = None,
                texture: torch.Tensor | None = None) -> torch.Tensor:
        """Image (B, 1, *S) for one-hot maps ``label`` (B, 6, *S); ``z`` (B, z_dim) is the global noise
        and ``texture`` (B, 1, *S) the per-voxel noise, each drawn from the global random generator when
        None."""
        if z is None:
            z = torch.randn(label.shape[0], self.z_dim, device=label.device, dtype=label.dtype)
        x = self.project(z).view(z.shape[0], self.base * 4, self.start[0], self.start[1], self.start[2])
        for block in self.blocks:
            x = block(F.interpolate(x, scale_factor=2.0, mode="trilinear", align_corners=False), label)
        if texture is None:
            texture = torch.randn(z.shape[0], 1, x.shape[2], x.shape[3], x.shape[4], device=x.device, dtype=x.dtype)
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
    """One-hot class broadcast to (B, 4, *shape), the condition the label discriminator sees.

    Parameters
    ----------
    tumor_type : torch.Tensor
        (B,) int64 classes 0–3.
    shape : tuple[int, int, int]
        the spatial size (X, Y, Z).

    Returns
    -------
    torch.Tensor
        (B, 4, X, Y, Z) float planes (an expanded view).
    """
    return F.one_hot(tumor_type, NUM_TUMOR_TYPES).float()[:, :, None, None, None].expand(-1, -1, *shape)


def one_hot_labels(label: torch.Tensor) -> torch.Tensor:
    """(B, 1, X, Y, Z) integer labels → (B, 6, X, Y, Z) float one-hot.

    Parameters
    ----------
    label : torch.Tensor
        (B, 1, X, Y, Z) labels 0–5.

    Returns
    -------
    torch.Tensor
        (B, 6, X, Y, Z) float one-hot.
    """
    return F.one_hot(label[:, 0].long(), NUM_LABELS).permute(0, 4, 1, 2, 3).float()

@torch.no_grad()
def sample(label_generator: LabelGenerator, image_generator: ImageGenerator, tumor_type: torch.Tensor,
           generator: torch.Generator, inferer: Inferer | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Label logits (N, 6, *S) and images (N, 1, *S) for classes (N,), noise drawn from ``generator``; each
    generator runs through ``inferer`` (a MONAI ``Inferer``, called as ``inferer(inputs, network, *args)``;
    default :class:`~monai.inferers.SimpleInferer`).

    Parameters
    ----------
    label_generator : LabelGenerator
        the label-map generator.
    image_generator : ImageGenerator
        the image generator.
    tumor_type : torch.Tensor
        (N,) int64 classes 0–3.
    generator : torch.Generator
        the random source of the noise.
    inferer : Inferer | None
        how each generator is run (None: MONAI's SimpleInferer).

    Returns
    -------
    tuple[torch.Tensor, torch.Tensor]
        label logits (N, 6, *S) and images (N, 1, *S), z-normalised.
    """
    inferer = inferer or SimpleInferer()
    device = next(label_generator.parameters()).device
    n = len(tumor_type)
    z_l = torch.randn(n, label_generator.z_dim, generator=generator).to(device)
    logits = inferer(z_l, label_generator, tumor_type.to(device))
    onehot = F.one_hot(logits.argmax(1), NUM_LABELS).permute(0, 4, 1, 2, 3).float()
    z_i = torch.randn(n, image_generator.z_dim, generator=generator).to(device)
    texture = torch.randn(n, 1, *onehot.shape[2:], generator=generator).to(device)
    return logits, inferer(onehot, image_generator, z_i, texture)
