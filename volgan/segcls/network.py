"""The segmenter-classifier: a 3D UNet (MONAI DynUNet blocks) whose bottleneck feeds a tumor-type head.

``SegClsNet(x)`` with ``x`` of shape (B, 1, X, Y, Z), X, Y, Z divisible by 2**len(strides), returns
``(seg_logits, cls_logits)`` of shapes (B, 6, X, Y, Z) and (B, 4): the six labels and the four
``tumor_type`` classes of docs/design.md. The head sees the bottleneck (average- and max-pooled) and the
segmentation's own softmax (per-label mean and maximum over the volume), so that a segmented tumor, and
where it sits, informs the class.
"""

from __future__ import annotations

import torch
from monai.networks.blocks.dynunet_block import UnetBasicBlock, UnetOutBlock, UnetUpBlock
from torch import nn

from volgan.labels import NUM_LABELS, NUM_TUMOR_TYPES

DEFAULT_CHANNELS = (16, 32, 64, 128)  # widths per level


class SegClsNet(nn.Module):
    def __init__(self, in_channels: int = 1, channels: tuple[int, ...] = DEFAULT_CHANNELS,
                 num_labels: int = NUM_LABELS, num_classes: int = NUM_TUMOR_TYPES, dropout: float = 0.2):
        super().__init__()
        norm = ("instance", {"affine": True})
        act = ("leakyrelu", {"negative_slope": 0.01, "inplace": True})
        self.in_channels = in_channels
        self.divisor = 2 ** (len(channels) - 1)
        self.encoders = nn.ModuleList()
        previous = in_channels
        for level, width in enumerate(channels):
            self.encoders.append(UnetBasicBlock(3, previous, width, kernel_size=3, stride=1 if level == 0 else 2,
                                                norm_name=norm, act_name=act))
            previous = width
        self.decoders = nn.ModuleList(
            UnetUpBlock(3, channels[level + 1], channels[level], kernel_size=3, stride=1, upsample_kernel_size=2,
                        norm_name=norm, act_name=act)
            for level in reversed(range(len(channels) - 1))
        )
        self.seg_head = UnetOutBlock(3, channels[0], num_labels)
        self.cls_head = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(2 * channels[-1] + 2 * num_labels, 64),
            nn.LeakyReLU(0.01),
            nn.Linear(64, num_classes),
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Segmentation logits (B, 6, X, Y, Z) and tumor_type logits (B, 4) for images (B, 1, X, Y, Z)."""
        return self.segment_and_classify(x)

    @torch.jit.export
    def segment_and_classify(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both outputs, as :meth:`forward` gives them; kept by TorchScript whatever the forward is, so a model
        exported from :class:`SegmentationNet` still classifies."""
        skips = []
        for encoder in self.encoders:
            x = encoder(x)
            skips.append(x)
        bottleneck = skips.pop()
        y = bottleneck
        for decoder in self.decoders:
            y = decoder(y, skips.pop())
        seg = self.seg_head(y)
        probs = torch.softmax(seg, dim=1)
        features = torch.cat([
            bottleneck.mean(dim=(2, 3, 4)), bottleneck.amax(dim=(2, 3, 4)),
            probs.mean(dim=(2, 3, 4)), probs.amax(dim=(2, 3, 4)),
        ], dim=1)
        return seg, self.cls_head(features)


class SegmentationNet(SegClsNet):
    """:class:`SegClsNet` whose forward gives the segmentation logits alone, (B, 6, X, Y, Z): the one spatial output
    that MONAI's sliding-window inferer, ``verify_net_in_out`` and ``ckpt_export`` expect. Same weights (a
    ``SegClsNet`` checkpoint loads as it is); :meth:`~SegClsNet.segment_and_classify` still gives both outputs,
    also from its TorchScript export."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.segment_and_classify(x)[0]


class SegmentationOnly(nn.Module):
    """The segmentation logits alone, (B, 6, X, Y, Z), of a network that gives (segmentation, classification) as
    :class:`SegClsNet` does, or of one that gives the segmentation alone (:class:`SegmentationNet` or its
    TorchScript export), which passes through."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        output = self.network(x)
        return output[0] if isinstance(output, (tuple, list)) else output


class ClassifierOnly(nn.Module):
    """The network's classification logits alone, for tools that expect one output (Grad-CAM)."""

    def __init__(self, network: SegClsNet):
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)[1]
