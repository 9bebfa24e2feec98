"""spine_segcls's inference definition, one for every path: the model input as ``configs/inference.json`` lists it
(its ``model_input`` transforms, instantiated from that file for ``volgan infer`` and the study too), the sliding
window inferer that pads as training did (:class:`ModelInferer`), and the tumor probability read from the
segmentation and the model input (:class:`TumorProbabilityd`, :func:`tumor_call`).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from monai.data import MetaTensor
from monai.inferers import SlidingWindowInferer
from monai.transforms import Compose, MapTransform
from monai.utils import convert_to_dst_type

from volgan.bundle_runs import bundles_root
from volgan.labels import TUMOR_LABEL
from volgan.transforms.dictionary import ZERO_VALUE

MIN_TUMOR_MM3 = 30.0  # tumor evidence at which the call turns "tumor": a sphere of 3.9 mm diameter
MIN_TUMOR_CONTRAST = 1.0  # contrast (host tissue's interquartile ranges) from which the tumor call is not lowered


class TumorCall(NamedTuple):
    """A volume's tumor call (:func:`tumor_call`)."""

    evidence_mm3: float  # the largest tumor component's probability mass, mm³
    contrast: float  # that component against the tissue around it, in the host label's interquartile ranges
    probability: float  # P(tumor)


def inference_config() -> Path:
    """spine_segcls's ``configs/inference.json`` (under :func:`volgan.bundle_runs.bundles_root`).

    Returns
    -------
    Path
        the file.
    """
    return bundles_root() / "spine_segcls" / "configs" / "inference.json"


@functools.lru_cache(maxsize=8)
def _parsed_model_input(config: str, spacing: tuple[float, float, float]) -> Compose:
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(config)
    parser["spacing"] = list(spacing)
    return parser.get_parsed_content("model_input", instantiate=True)


def model_input(spacing) -> Compose:
    """The model input transforms of spine_segcls's ``configs/inference.json`` (its ``model_input``: the image
    onto the RAS grid of ``spacing`` mm and z-normalised), instantiated from that file: the objects the bundle's
    own inference runs, not a copy. They take ``{"image": MetaTensor (1, X, Y, Z) with its affine}``.

    Parameters
    ----------
    spacing
        the model grid's voxel size in mm, (3,) (the model card's).

    Returns
    -------
    Compose
        MONAI's ``Compose`` of the listed transforms.
    """
    return _parsed_model_input(str(inference_config()), tuple(float(s) for s in spacing))


class ModelInferer(SlidingWindowInferer):
    """MONAI's sliding-window inferer that pads the volume's edge windows with the normalised value of intensity 0
    (the input's ``"zero_value"`` meta, written by :class:`~volgan.transforms.dictionary.ZNormalized`), as
    training pads the raw volume with zeros before normalising; 0 when the input has no such meta."""

    def __call__(self, inputs: torch.Tensor, network, *args, **kwargs):
        meta = getattr(inputs, "meta", {}) or {}
        zero = meta.get(ZERO_VALUE, 0.0)
        self.cval = float(torch.as_tensor(zero).flatten()[0])
        if not isinstance(inputs, MetaTensor):
            return super().__call__(inputs, network, *args, **kwargs)
        # windows of a plain tensor: MetaTensor's bookkeeping on every window cost 30% (27 windows of 32³)
        output = super().__call__(inputs.as_tensor(), network, *args, **kwargs)
        return convert_to_dst_type(output, inputs)[0]


def largest_tumor_component(tumor_probability: np.ndarray, label: np.ndarray) -> np.ndarray | None:
    """The connected (26-neighbour) component of voxels labeled tumor with the largest summed tumor probability.

    Parameters
    ----------
    tumor_probability : np.ndarray
        (X, Y, Z) the tumor label's softmax probability on the model grid.
    label : np.ndarray
        (X, Y, Z) the argmax label map on the same grid.

    Returns
    -------
    np.ndarray or None
        (X, Y, Z) bool, the component; None when no voxel is labeled tumor.
    """
    from scipy import ndimage

    components, n = ndimage.label(label == TUMOR_LABEL, ndimage.generate_binary_structure(3, 3))
    if not n:
        return None
    return components == 1 + int(np.argmax(ndimage.sum(tumor_probability, components, range(1, n + 1))))


def tumor_evidence_mm3(tumor_probability: np.ndarray, label: np.ndarray, voxel_mm3: float) -> float:
    """The segmentation's evidence of a tumor, in mm³: the summed tumor probability of the largest connected
    (26-neighbour) component of voxels labeled tumor (:func:`largest_tumor_component`). A volume with no tumor voxel
    gets its highest voxel probability × 10⁻³ mm³, so such volumes still rank among themselves, below every volume
    with one.

    Parameters
    ----------
    tumor_probability, label : np.ndarray
        (X, Y, Z) each: the tumor probability and the argmax label map, as :func:`largest_tumor_component` takes
        them.
    voxel_mm3 : float
        one voxel's volume in mm³.

    Returns
    -------
    float
        the evidence in mm³.
    """
    return _component_evidence(tumor_probability, largest_tumor_component(tumor_probability, label), voxel_mm3)


def _component_evidence(tumor_probability: np.ndarray, component: np.ndarray | None, voxel_mm3: float) -> float:
    if component is None:
        return 1e-3 * float(tumor_probability.max())
    return voxel_mm3 * float(tumor_probability[component].sum(dtype=np.float64))


def tumor_contrast(image: np.ndarray, label: np.ndarray, component: np.ndarray) -> float:
    """How far a predicted tumor stands out from the tissue around it, in the same scan: (median of ``image`` in
    the component − median of the commonest other label in a 2-voxel shell around it, over that shell) /
    interquartile range of that label over the whole scan. 0 when the component has no such shell.

    Parameters
    ----------
    image : np.ndarray
        (X, Y, Z) the model's input on the model grid (z-normalised intensities).
    label : np.ndarray
        (X, Y, Z) the argmax label map on the same grid.
    component : np.ndarray
        (X, Y, Z) bool, the tumor component (:func:`largest_tumor_component`).

    Returns
    -------
    float
        the signed contrast, in interquartile ranges of the host label.
    """
    from scipy import ndimage

    shell = ndimage.binary_dilation(component, iterations=2) & ~component & (label != TUMOR_LABEL)
    if not shell.any():
        return 0.0
    host = int(np.bincount(label[shell]).argmax())
    q1, q3 = np.percentile(image[label == host], [25, 75])
    step = float(np.median(image[component]) - np.median(image[shell & (label == host)]))
    return step / max(float(q3 - q1), 1e-3)


def tumor_probability_from_segmentation(evidence_mm3: float, min_tumor_mm3: float = MIN_TUMOR_MM3) -> float:
    """P(tumor) = 1 − 2^(−evidence / ``min_tumor_mm3``): 0.5 at ``min_tumor_mm3`` of tumor mass (below the
    phantom's smallest tumor, 4 mm across, 34 mm³), rising with the evidence; its order is the evidence's.

    Parameters
    ----------
    evidence_mm3 : float
        the tumor evidence in mm³ (:func:`tumor_evidence_mm3`).
    min_tumor_mm3 : float
        the evidence at which the probability is 0.5.

    Returns
    -------
    float
        P(tumor), in [0, 1).
    """
    return float(-np.expm1(-np.log(2.0) * evidence_mm3 / min_tumor_mm3))


def tumor_call(probabilities: np.ndarray, image: np.ndarray, voxel_mm3: float) -> TumorCall:
    """The segmentation's tumor call, as ``volgan infer``, the study and the bundle's inference make it: the
    probability read from the largest tumor component's mass (:func:`tumor_evidence_mm3`,
    :func:`tumor_probability_from_segmentation`), gated by how far that component stands out from the tissue
    around it (:func:`tumor_contrast`): P(tumor) = P(mass) × min(1, |contrast| / :data:`MIN_TUMOR_CONTRAST`). A
    tumor the segmentation finds must differ from its host tissue in the same scan; on healthy real scans the
    phantom-trained models label look-alike tissue tumor (BENCHMARKS.md, "Real MRI").

    Parameters
    ----------
    probabilities : np.ndarray
        (6, X, Y, Z) softmax probabilities on the model grid.
    image : np.ndarray
        (X, Y, Z) the model's input on the same grid (z-normalised intensities).
    voxel_mm3 : float
        one voxel's volume in mm³.

    Returns
    -------
    TumorCall
        the evidence in mm³, the contrast (NaN without a tumor voxel) and P(tumor).
    """
    label = probabilities.argmax(0)
    component = largest_tumor_component(probabilities[TUMOR_LABEL], label)
    evidence = _component_evidence(probabilities[TUMOR_LABEL], component, voxel_mm3)
    p_mass = tumor_probability_from_segmentation(evidence)
    if component is None:
        return TumorCall(evidence, float("nan"), p_mass)
    contrast = tumor_contrast(image, label, component)
    return TumorCall(evidence, contrast, p_mass * min(1.0, abs(contrast) / MIN_TUMOR_CONTRAST))


def combine_type_probabilities(p_tumor: float, head_probabilities: np.ndarray) -> np.ndarray:
    """The four tumor_type probabilities (4,): ``1 − p_tumor`` for none, and ``p_tumor`` shared over the three
    types in the proportions of the classifier head's ``head_probabilities[1:]``.

    Parameters
    ----------
    p_tumor : float
        P(tumor) from the segmentation.
    head_probabilities : np.ndarray
        (4,) the classifier head's tumor_type probabilities.

    Returns
    -------
    np.ndarray
        (4,) probabilities summing to 1.
    """
    types = np.asarray(head_probabilities[1:], dtype=np.float64)
    types = types / types.sum() if types.sum() > 0 else np.full(len(types), 1.0 / len(types))
    return np.concatenate([[1.0 - p_tumor], p_tumor * types])


def head_of_windows(window_logits: list[torch.Tensor]) -> np.ndarray:
    """The classifier head's tumor_type probabilities for a volume segmented by sliding windows: those of the window
    most sure a tumor is present (for a volume that fits one window, the network's output).

    Parameters
    ----------
    window_logits : list[torch.Tensor]
        the head's logits, (W, 4) per forward pass, for every window of one volume.

    Returns
    -------
    np.ndarray
        (4,) probabilities.
    """
    window_probs = torch.softmax(torch.cat([w.float() for w in window_logits]), dim=1)
    return window_probs[int((1.0 - window_probs[:, 0]).argmax())].cpu().numpy()


class SegmentationWithHead(torch.nn.Module):
    """The segmentation logits (B, 6, X, Y, Z) of a network that gives (segmentation, classification) — from its
    ``segment_and_classify`` where it has one (:class:`~volgan.segcls.network.SegClsNet`, ``SegmentationNet`` or
    its TorchScript export), else from its forward (``volgan.segcls.predict.ScriptedSegCls``) — for MONAI's
    sliding-window inferer, keeping each window's classification logits for :meth:`take_head_probabilities` (one
    volume at a time)."""

    def __init__(self, network: torch.nn.Module):
        super().__init__()
        self.network = network
        self.window_logits: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        both = getattr(self.network, "segment_and_classify", self.network)
        seg, cls = both(x)
        self.window_logits.append(cls.detach().float())
        return seg

    def take_head_probabilities(self) -> np.ndarray:
        """The head's probabilities for the volume just segmented (:func:`head_of_windows`); forgets its windows.

        Returns
        -------
        np.ndarray
            (4,) probabilities.
        """
        logits, self.window_logits = self.window_logits, []
        return head_of_windows(logits)


class TumorProbabilityd(MapTransform):
    """MONAI postprocessing: from the softmax probabilities under ``keys`` ((6, X, Y, Z) on the model grid, before
    inversion) and the model input under ``image_key`` ((1, X, Y, Z), the same grid) the tumor probability of
    :func:`tumor_call` (the largest tumor component's probability mass, in mm³ of the grid's ``spacing``, gated by
    its contrast against the tissue around it), stored as a float under ``output_key``. Given the ``head`` that
    segmented the volume (:class:`SegmentationWithHead`), also the four tumor_type probabilities under
    ``"type_probabilities"`` (:func:`combine_type_probabilities`), as ``volgan infer`` gives them."""

    def __init__(self, keys, spacing, image_key: str = "image", output_key: str = "tumor_probability",
                 head: SegmentationWithHead | None = None, allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.voxel_mm3 = float(np.prod(spacing))
        self.image_key = image_key
        self.output_key = output_key
        self.head = head

    def __call__(self, data):
        d = dict(data)
        image = torch.as_tensor(d[self.image_key]).detach().float().cpu().numpy()[0]
        for key in self.key_iterator(d):
            probabilities = torch.as_tensor(d[key]).detach().float().cpu().numpy()
            d[self.output_key] = tumor_call(probabilities, image, self.voxel_mm3).probability
            if self.head is not None:
                d["type_probabilities"] = combine_type_probabilities(d[self.output_key],
                                                                     self.head.take_head_probabilities())
        return d
