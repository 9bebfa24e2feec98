"""NIfTI volume inference: label maps in the input's own shape and affine, and tumor probabilities.

A volume is resampled onto the model's RAS grid (:func:`volgan.transforms.model_grid`), z-normalised,
segmented by sliding windows of the training patch size, and its softmax probabilities are resampled
back onto the input grid before the argmax.

Whether a tumor is present is read from the segmentation (:func:`tumor_probability_from_segmentation`): the
largest predicted tumor component's probability mass in mm³. Which type it is comes from the classifier head
of the window most sure a tumor is present (for a volume that fits one window, the network's output). The
head alone ranked tumor-bearing volumes at chance where the segmentation already found the tumors (quick
profile, 1,200 presentations: AUC 0.45 from the head, 0.83 from the segmentation; BENCHMARKS.md).
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torchio as tio
from monai.inferers import sliding_window_inference

from volgan.errors import VolganInputError
from volgan.io import (
    OUTPUT_SUFFIXES,
    DicomSeries,
    Volume,
    atomic_path,
    find_volumes,
    first_line,
    read_volume,
    volume_stem,
    volume_suffix,
    write_text,
    write_volume,
)
from volgan.labels import TUMOR_LABEL, TUMOR_TYPES
from volgan.network import SegClsNet
from volgan.transforms import Preprocessing, model_grid, normalize_intensity, resample

TABLE_FIELDS = ["input", "output", "gradcam", "tumor_probability", "predicted_tumor_type",
                *[f"p_{name}" for name in TUMOR_TYPES.values()], "error"]


@dataclass
class LoadedModel:
    """A network in eval mode with the preprocessing it was trained with."""

    network: SegClsNet
    prep: Preprocessing = field(default_factory=Preprocessing)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``device`` as a torch device this build can use (None: CUDA when available, else the CPU); anything else
    raises :class:`VolganInputError` naming ``--device``."""
    if device is None:
        return default_device()
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise VolganInputError(None, f"--device {device!r}: not a device name (cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise VolganInputError(None, f"--device {device}: this torch build has no usable CUDA device")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise VolganInputError(None, f"--device {device}: only {torch.cuda.device_count()} CUDA device(s)")
    if device.type not in ("cpu", "cuda"):
        raise VolganInputError(None, f"--device {device}: volgan runs on cpu or cuda")
    return device


def load_model(path: str | os.PathLike, device: str | torch.device | None = None, network: SegClsNet | None = None,
               prep: Preprocessing | None = None) -> LoadedModel:
    """Load a checkpoint file, or a bundle folder's ``models/model.pt``.

    The network width and preprocessing come from ``model.json`` beside the checkpoint (written by training)
    unless given; without one, the defaults. A checkpoint whose weights do not fit the network raises
    :class:`VolganInputError` naming the file.
    """
    path = Path(path)
    device = resolve_device(device)
    if path.is_dir():
        if not (path / "configs").is_dir() and not (path / "models").is_dir():
            raise VolganInputError(path, "not a bundle folder (no configs/ or models/)")
        path = path / "models" / "model.pt"
    if not path.is_file():
        raise VolganInputError(path, "no such checkpoint")
    card = path.parent / "model.json"
    if card.is_file() and (network is None or prep is None):
        try:
            info = json.loads(card.read_text(encoding="utf-8"))
            network = network or SegClsNet(channels=tuple(info["channels"]))
            prep = prep or Preprocessing(tuple(info["spacing"]), tuple(info["patch"]))
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise VolganInputError(card, f"unreadable model card ({exc})") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise VolganInputError(path, f"not a PyTorch checkpoint ({type(exc).__name__})") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    network = network or SegClsNet()
    try:
        network.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        first = str(exc).strip().splitlines()
        detail = first[1].strip() if len(first) > 1 else (first[0] if first else type(exc).__name__)
        raise VolganInputError(path, f"checkpoint does not fit the network ({detail[:150]})") from None
    return LoadedModel(network.to(device).eval(), prep or Preprocessing(), device)


@dataclass
class Prediction:
    """Output for one volume: ``label`` on the input grid (uint8), the four tumor_type probabilities (4,: none from
    the segmentation, the types shared as the head says; :func:`combine_type_probabilities`), the model-grid
    input, the classifier head's own probabilities (4,) and the segmentation's tumor evidence in mm³."""

    label: Volume
    type_probabilities: np.ndarray
    model_input: torch.Tensor  # (1, 1, X, Y, Z), normalised, on the model grid
    model_affine: np.ndarray
    head_probabilities: np.ndarray | None = None
    tumor_evidence_mm3: float = float("nan")

    @property
    def tumor_probability(self) -> float:
        return float(1.0 - self.type_probabilities[0])


def to_model_grid(volume: Volume, prep: Preprocessing) -> tuple[torch.Tensor, np.ndarray, float]:
    """Resample and normalise a volume as training did: (1, 1, X, Y, Z) tensor, its affine, and the
    normalised value of zero intensity (used to pad windows, as training pads with zeros)."""
    affine, shape = model_grid(volume.affine, volume.shape, prep.spacing)
    data = resample(torch.from_numpy(np.ascontiguousarray(volume.array))[None], volume.affine, affine, shape)
    raw = tio.ScalarImage(tensor=data, affine=affine)
    normalized = normalize_intensity()(raw).data
    std = float(data.std()) or 1.0
    pad_value = float(-data.mean()) / std
    return normalized[None].float(), affine, pad_value


PRECISIONS = ("fp32", "bf16")
MIN_TUMOR_MM3 = 30.0  # tumor evidence at which the call turns "tumor": a sphere of 3.9 mm diameter


def tumor_evidence_mm3(tumor_probability: np.ndarray, label: np.ndarray, voxel_mm3: float) -> float:
    """The segmentation's evidence of a tumor, in mm³: the summed tumor probability of the largest connected
    (26-neighbour) component of voxels labeled tumor. A volume with no tumor voxel gets its highest voxel
    probability × 10⁻³ mm³, so such volumes still rank among themselves, below every volume with one.

    ``tumor_probability`` and ``label``: arrays of one shape on the model grid; ``voxel_mm3``: one voxel's volume.
    """
    from scipy import ndimage

    components, n = ndimage.label(label == TUMOR_LABEL, ndimage.generate_binary_structure(3, 3))
    if not n:
        return 1e-3 * float(tumor_probability.max())
    return voxel_mm3 * float(np.max(ndimage.sum(tumor_probability, components, range(1, n + 1))))


def tumor_probability_from_segmentation(evidence_mm3: float, min_tumor_mm3: float = MIN_TUMOR_MM3) -> float:
    """P(tumor) = 1 − 2^(−evidence / ``min_tumor_mm3``): 0.5 at ``min_tumor_mm3`` of tumor mass (below the
    phantom's smallest tumor, 4 mm across, 34 mm³), rising with the evidence; its order is the evidence's."""
    return float(-np.expm1(-np.log(2.0) * evidence_mm3 / min_tumor_mm3))


def combine_type_probabilities(p_tumor: float, head_probabilities: np.ndarray) -> np.ndarray:
    """The four tumor_type probabilities (4,): ``1 − p_tumor`` for none, and ``p_tumor`` shared over the three
    types in the proportions of the classifier head's ``head_probabilities[1:]``."""
    types = np.asarray(head_probabilities[1:], dtype=np.float64)
    types = types / types.sum() if types.sum() > 0 else np.full(len(types), 1.0 / len(types))
    return np.concatenate([[1.0 - p_tumor], p_tumor * types])


@torch.inference_mode()
def predict(model: LoadedModel, volume: Volume, overlap: float = 0.25, sw_batch_size: int = 2,
            precision: str = "fp32") -> Prediction:
    """Segment and classify one volume; the label map has the input's shape and affine.

    ``precision="bf16"`` runs the network under bfloat16 autocast (faster on CPUs with AVX512-BF16 and on
    GPUs; labels differ from fp32 in a small share of boundary voxels). Resampling stays in float32.
    """
    if precision not in PRECISIONS:
        raise VolganInputError(None, f"precision must be one of {PRECISIONS}, got {precision!r}")
    if float(np.ptp(volume.array)) == 0.0:
        raise VolganInputError(None, "the image has one intensity everywhere; there is nothing to segment")
    x, affine, pad_value = to_model_grid(volume, model.prep)
    x = x.to(model.device)
    window_logits: list[torch.Tensor] = []

    def predictor(windows: torch.Tensor) -> torch.Tensor:
        seg, cls = model.network(windows)
        window_logits.append(cls.float())
        return seg

    with torch.autocast(model.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        seg = sliding_window_inference(x, model.prep.patch, sw_batch_size, predictor, overlap=overlap,
                                       mode="constant", cval=pad_value)
    probs = torch.softmax(seg[0].float(), dim=0)
    back = resample(probs, affine, volume.affine, volume.shape, "bilinear")
    label = back.argmax(dim=0).to(torch.uint8).cpu().numpy()
    window_probs = torch.softmax(torch.cat(window_logits), dim=1)
    head = window_probs[int((1.0 - window_probs[:, 0]).argmax())].cpu().numpy()
    model_probs = probs.cpu().numpy()
    evidence = tumor_evidence_mm3(model_probs[TUMOR_LABEL], model_probs.argmax(0), float(np.prod(model.prep.spacing)))
    p_tumor = tumor_probability_from_segmentation(evidence)
    return Prediction(Volume(label, volume.affine), combine_type_probabilities(p_tumor, head), x, affine,
                      head, evidence)


def expand_inputs(inputs: list[str | os.PathLike]) -> list[tuple[Path, str, DicomSeries | None]]:
    """Every volume the inputs name: (path, the stem its outputs are named by, its DICOM series or None).

    A file stays a file (stem: its name less the suffix). A folder gives the volume files in it and every DICOM
    series at any depth below it (:func:`volgan.io.find_volumes`)."""
    found: list[tuple[Path, str, DicomSeries | None]] = []
    for item in map(Path, inputs):
        if not item.is_dir():
            found.append((item, volume_stem(item.name), None))
            continue
        volumes = find_volumes(item)
        if not volumes:
            raise VolganInputError(item, "folder holds no volume files (.nii.gz, .nii, .mha, .mhd, .nrrd, .nhdr) and "
                                         "no DICOM series")
        found.extend((path, name, series) for name, path, series in volumes)
    return found


def output_suffix(path: Path, output_ext: str | None) -> str:
    """The suffix of the outputs for input ``path``: ``output_ext`` when given, otherwise the input's own format
    (``.mhd`` → ``.mha``, ``.nhdr`` → ``.nrrd``, a DICOM series → ``.nii.gz``)."""
    if output_ext:
        ext = output_ext if output_ext.startswith(".") else f".{output_ext}"
        if ext.lower() not in OUTPUT_SUFFIXES:
            raise VolganInputError(None, f"--output-ext must be one of {', '.join(OUTPUT_SUFFIXES)}, "
                                         f"got {output_ext!r}")
        return ext.lower()
    suffix = volume_suffix(path.name)
    return {".mhd": ".mha", ".nhdr": ".nrrd", "": ".nii.gz"}.get(suffix, suffix)


def stem_of_output(path: str | os.PathLike) -> str:
    """The case name in an output file name: ``"case_seg.mha"`` → ``"case"``."""
    stem = volume_stem(Path(path).name)
    for tail in ("_seg", "_gradcam"):
        if stem.endswith(tail):
            return stem[: -len(tail)]
    return stem


def check_overlap(overlap: float) -> float:
    """The sliding-window overlap, refused unless 0 ≤ overlap < 1 (MONAI's sliding window needs that)."""
    if not (0.0 <= overlap < 1.0):
        raise VolganInputError(None, f"--overlap must be at least 0 and below 1, got {overlap}")
    return overlap


def _previous_rows(table_json: Path) -> list[dict]:
    try:
        rows = json.loads(table_json.read_text(encoding="utf-8"))
        return [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []
    except (OSError, ValueError):
        return []


def run_inference(model: LoadedModel, inputs: list[str | os.PathLike], out: str | os.PathLike,
                  gradcam: bool = False, overlap: float = 0.25, overwrite: bool = False,
                  progress: bool = False, precision: str = "fp32", output_ext: str | None = None) -> list[dict]:
    """Predict every input, write ``<name>_seg<ext>`` (and ``<name>_gradcam<ext>``) into ``out`` and the
    table ``predictions.csv`` / ``predictions.json``. ``<ext>`` is ``output_ext`` or the input's own format
    (:func:`output_suffix`); every output has its input's shape and affine. A bad input (unreadable, not 3D,
    constant intensity…) is listed with a one-line error and gets no output file; the others go on. Existing
    outputs are never replaced without ``overwrite``; with it, rows of the earlier table whose outputs this run
    did not replace are kept, so the table lists every output in the folder. Returns this run's rows."""
    from tqdm import tqdm

    from volgan.io import check_writable_dir

    out = Path(out)
    check_overlap(overlap)
    check_writable_dir(out)
    table_csv, table_json = out / "predictions.csv", out / "predictions.json"
    if (table_csv.exists() or table_json.exists()) and not overwrite:
        raise VolganInputError(out, "already holds predictions.csv; pass --overwrite to replace")
    inputs_found = expand_inputs(inputs)
    if not inputs_found:
        raise VolganInputError(None, "no input volumes given")
    outputs = [(path, stem, series, output_suffix(path if series is None else Path("series"), output_ext))
               for path, stem, series in inputs_found]
    stems = [stem for _, stem, _, _ in outputs]
    if len(set(stems)) != len(stems):
        dup = next(s for s in stems if stems.count(s) > 1)
        raise VolganInputError(None, f"two inputs would both write {dup}_seg")
    kinds = ("_seg", "_gradcam") if gradcam else ("_seg",)
    existing = [out / f"{stem}{kind}{ext}" for _, stem, _, ext in outputs for kind in kinds
                if (out / f"{stem}{kind}{ext}").exists()]
    if existing and not overwrite:
        raise VolganInputError(existing[0], f"already exists ({len(existing)} output(s) of these inputs are in "
                                            f"{out}); pass --overwrite to replace")
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for path, stem, series, ext in tqdm(outputs, desc="infer", unit="volume", disable=not progress):
        row = {"input": str(path), "output": "", "gradcam": "", "error": ""}
        try:
            volume = read_volume(path, series=series)
            prediction = predict(model, volume, overlap=overlap, precision=precision)
            seg_path = out / f"{stem}_seg{ext}"
            cam_volume = None
            if gradcam:
                from volgan.gradcam import gradcam_volume

                cam_volume = gradcam_volume(model, prediction, volume)
            write_volume(prediction.label, seg_path)
            row["output"] = str(seg_path)
            if cam_volume is not None:
                cam_path = out / f"{stem}_gradcam{ext}"
                write_volume(cam_volume, cam_path)
                row["gradcam"] = str(cam_path)
            probs = prediction.type_probabilities
            row.update({f"p_{name}": round(float(probs[k]), 6) for k, name in TUMOR_TYPES.items()})
            row["tumor_probability"] = round(prediction.tumor_probability, 6)
            row["predicted_tumor_type"] = int(np.argmax(probs))
        except VolganInputError as exc:
            row["error"] = str(exc) if exc.path else f"{path}: {exc.what}"
        except (KeyboardInterrupt, SystemExit, MemoryError):
            raise
        except Exception as exc:  # noqa: BLE001 - one bad volume must not abort the batch
            row["error"] = f"{path}: {type(exc).__name__}: {first_line(exc)}"
        if row["error"]:
            earlier = out / f"{stem}_seg{ext}"
            if earlier.exists():
                row["error"] += f" (the {earlier.name} in the folder is from an earlier run)"
        rows.append({k: row.get(k, "") for k in TABLE_FIELDS})
    written = {r["output"] for r in rows if r["output"]}
    ran = {r["input"] for r in rows}
    kept = [r for r in _previous_rows(table_json) if r.get("input") not in ran and r.get("output")
            and r["output"] not in written and Path(r["output"]).exists()] if overwrite else []
    write_table(kept + rows, table_csv, table_json)
    return rows


def write_table(rows: list[dict], csv_path: Path, json_path: Path) -> None:
    """Write the same rows as CSV and JSON, each atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else TABLE_FIELDS)
    writer.writeheader()
    writer.writerows(rows)
    with atomic_path(csv_path) as tmp:
        tmp.write_text(buffer.getvalue(), encoding="utf-8")
    write_text(json_path, json.dumps(rows, indent=2) + "\n")
