"""Losses and augmentation of the GANs' discriminators: hinge loss, the R1 penalty on real samples, and
differentiable augmentation (translation and cutout) applied alike to every volume a discriminator sees.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def diff_augment(*volumes: torch.Tensor, generator: torch.Generator | None = None) -> list[torch.Tensor]:
    """The same random translation (up to 1/8 of the size, zero-filled) and cutout (a cube of 1/4 the size)
    for every volume of a batch element; differentiable in the volumes (DiffAugment for 3D).

    Parameters
    ----------
    generator : torch.Generator | None
        the random source (None: torch's global one).
    *volumes : torch.Tensor
        (B, C, X, Y, Z) tensors of one batch (an image and its label map, say), moved alike.

    Returns
    -------
    list[torch.Tensor]
        the augmented volumes, same shapes, in order.
    """
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
    """The discriminator's hinge loss: mean(relu(1 − D(real))) + mean(relu(1 + D(fake))).

    Parameters
    ----------
    real : torch.Tensor
        D's outputs on real inputs (any shape).
    fake : torch.Tensor
        D's outputs on generated inputs (any shape).

    Returns
    -------
    torch.Tensor
        the scalar loss.
    """
    return F.relu(1 - real).mean() + F.relu(1 + fake).mean()


def r1_penalty(d_out: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """R1: squared gradient norm of D's output on real inputs.

    Parameters
    ----------
    d_out : torch.Tensor
        D's outputs on ``inputs`` (any shape; summed).
    inputs : torch.Tensor
        the real inputs (B, ...), with ``requires_grad``.

    Returns
    -------
    torch.Tensor
        the scalar penalty: the mean over the batch of the squared gradient norm (differentiable, for the D step).
    """
    (grad,) = torch.autograd.grad(d_out.sum(), inputs, create_graph=True)
    return grad.pow(2).flatten(1).sum(1).mean()
