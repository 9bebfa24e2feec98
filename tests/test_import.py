"""Real spine data in: volgan import of SPIDER-style .mha, a nested DICOM tree and .nrrd pairs written from
phantoms in each data set's own label values; each imported, checked, trained on for one epoch and inferred on,
with the outputs in the inputs' exact geometry. Segmentation-only data end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from helpers import write_dicom_series
from scipy import ndimage

from volgan.data.datalist import read_datalist
from volgan.data.io import Volume, read_volume, write_volume
from volgan.data.label_mapping import LABEL_MAP_PRESETS, load_label_map, map_labels
from volgan.data.phantom import PhantomConfig, generate_case
from volgan.labels import LABELS
from volgan.segcls.train import SegClsLoss, SegClsScore
from volgan.transforms import field_about_foreground

ROOT = Path(__file__).resolve().parent.parent
CONFIG = PhantomConfig(size=(32, 32, 24), spacing=(1.5, 1.5, 2.0), tumor_fraction=0.0, orientation="LPS")
# SPIDER's stacks: sagittal slices 3.3 mm thick (the third voxel axis runs along R), fine in-plane
SPIDER = PhantomConfig(size=(16, 48, 64), spacing=(3.3, 1.0, 1.0), tumor_fraction=0.0, orientation="PIR")


def spider_values(label: np.ndarray) -> np.ndarray:
    """volgan labels → SPIDER's numbering: vertebrae 1.. and discs 201.. per component, cord and CSF 100."""
    out = np.zeros(label.shape, np.int32)
    vertebrae, _ = ndimage.label(label == 1)
    discs, _ = ndimage.label(label == 2)
    out[vertebrae > 0] = vertebrae[vertebrae > 0]
    out[discs > 0] = 200 + discs[discs > 0]
    out[(label == 3) | (label == 4)] = 100
    return out


def spider_expected(label: np.ndarray) -> np.ndarray:
    """What the spider preset gives back: the canal (cord and CSF) as csf."""
    return np.where(label == 3, 4, label).astype(np.uint8)


def make_spider(root: Path, n: int = 3) -> list:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    cases = [generate_case(3, i, SPIDER) for i in range(n)]
    for i, case in enumerate(cases):
        write_volume(case.image, root / "images" / f"{i + 1}_t2.mha")
        write_volume(Volume(spider_values(case.label.array).astype(np.float32), case.label.affine),
                     root / "masks" / f"{i + 1}_t2.mha")
    return cases


def make_dicom_tree(root: Path) -> list:
    """Two series in a patient/study/series tree, each with a NIfTI label named by its path."""
    cases = [generate_case(4, i, replace_orientation("PIR")) for i in range(3)]
    for i, case in enumerate(cases):
        series = root / f"patient{i + 1}" / "study1" / "t2"
        write_dicom_series(np.rint(case.image.array), case.image.affine, series, f"1.2.826.0.1.3680043.2.1125.{i + 7}")
        write_volume(case.label, root / f"patient{i + 1}_study1_t2_label.nii.gz")
    return cases


def replace_orientation(code: str) -> PhantomConfig:
    from dataclasses import replace

    return replace(CONFIG, orientation=code)


def make_nrrd(root: Path) -> list:
    """.nrrd pairs whose labels use their own numbering (10·label), mapped back by a JSON file."""
    root.mkdir(parents=True)
    cases = [generate_case(5, i, replace_orientation("RAS")) for i in range(3)]
    for i, case in enumerate(cases):
        write_volume(case.image, root / f"spine{i}.nrrd")
        write_volume(Volume((case.label.array.astype(np.float32) * 10), case.label.affine), root / f"spine{i}_seg.nrrd")
    (root / "map.json").write_text(json.dumps({str(10 * k): name for k, name in LABELS.items()}), encoding="utf-8")
    return cases


def geometry(path: Path) -> tuple:
    """Size, spacing, origin and direction as ITK reads them (DICOM: the series in the folder)."""
    if path.is_dir():
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(path)))
        image = reader.Execute()
    else:
        image = sitk.ReadImage(str(path))
    return image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection()


def assert_same_geometry(a: Path, b: Path) -> None:
    size_a, *rest_a = geometry(a)
    size_b, *rest_b = geometry(b)
    assert size_a == size_b
    for x, y in zip(rest_a, rest_b, strict=True):
        assert np.allclose(x, y, atol=1e-4), (a, b, x, y)


def train_one_epoch(dataset: Path, root: Path, field: tuple[str, str] = ("[32,32,32]", "[1.5,1.5,1.5]")) -> Path:
    """spine_segcls trained one epoch on ``dataset`` into ``root``, on a field (patch, spacing) along R, A, S."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/train.json",
                           "--bundle_root", str(root), "--dataset_dir", str(dataset), "--max_epochs", "1",
                           "--patch", field[0], "--spacing", field[1], "--batch_size", "2"],
                          cwd=ROOT / "bundles" / "spine_segcls",
                          capture_output=True, encoding="utf-8", errors="replace", timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return root


@pytest.mark.parametrize("kind", ["spider-mha", "dicom-tree", "nrrd-pairs"])
def test_import_check_train_infer(tmp_path, cli, kind):
    src = tmp_path / "src"
    if kind == "spider-mha":
        cases = make_spider(src)
        args, expect = ["--label-map", "spider"], [spider_expected(c.label.array) for c in cases]
        inputs = sorted((src / "images").iterdir())
    elif kind == "dicom-tree":
        cases = make_dicom_tree(src)
        args, expect = [], [c.label.array for c in cases]
        inputs = [src / f"patient{i + 1}" / "study1" / "t2" for i in range(3)]
    else:
        cases = make_nrrd(src)
        args, expect = ["--label-map", src / "map.json"], [c.label.array for c in cases]
        inputs = [src / f"spine{i}.nrrd" for i in range(3)]
    result = cli("import", src, "--out", tmp_path / "imported", *args)
    assert result.code == 0, result.err
    assert "segmentation training: yes (3 cases)" in result.out
    if kind == "dicom-tree":  # the series are listed, one case each
        assert "DICOM series read (3, one case each)" in result.out and "patient2_study1_t2 ← " in result.out
    data = read_datalist(tmp_path / "imported")
    assert len(data.cases) == 3 and all(c.tumor_type is None for c in data.cases)
    for case, source, labels in zip(data.cases, cases, expect, strict=True):
        image, label = read_volume(case.image), read_volume(case.label, label=True)
        assert np.allclose(image.affine, source.image.affine, atol=1e-4)
        assert np.allclose(image.array, np.rint(source.image.array) if kind == "dicom-tree" else source.image.array)
        assert np.array_equal(label.array, labels)
    check = cli("check", tmp_path / "imported")
    assert check.code == 0 and "tumor classification training: no" in check.out
    assert "volgan study --real: no: no case has a tumor_type" in check.out
    # a sagittal stack trains on a field thick along R that holds the spine: 16×48×64 voxels of 3.3×1×1 mm
    field = ("[16,48,64]", "[3.3,1.0,1.0]") if kind == "spider-mha" else ("[32,32,32]", "[1.5,1.5,1.5]")
    model = train_one_epoch(tmp_path / "imported", tmp_path / "run", field)
    out = tmp_path / "pred"
    result = cli("infer", "--model", model, "--input", src / "images" if kind == "spider-mha" else src, "--out", out)
    assert result.code == 0, result.err
    suffix = {"spider-mha": ".mha", "dicom-tree": ".nii.gz", "nrrd-pairs": ".nrrd"}[kind]
    for path in inputs:
        name = "_".join(path.relative_to(src).parts) if path.is_dir() else path.name.removesuffix(path.suffix)
        assert_same_geometry(path, out / f"{name}_seg{suffix}")


def test_infer_writes_nifti_when_asked(tmp_path, cli):
    cases = make_nrrd(tmp_path / "src")
    assert cli("import", tmp_path / "src", "--out", tmp_path / "data", "--label-map", tmp_path / "src" / "map.json",
               "--test-fraction", "0.34").code == 0
    data = read_datalist(tmp_path / "data")
    assert len(data.split("test")) == 1 and len(data.split("training")) == 2
    model = train_one_epoch(tmp_path / "data", tmp_path / "run")
    result = cli("infer", "--model", model, "--input", tmp_path / "src" / "spine0.nrrd", "--out", tmp_path / "p",
                 "--output-ext", ".nii.gz")
    assert result.code == 0, result.err
    seg = read_volume(tmp_path / "p" / "spine0_seg.nii.gz", label=True)
    assert np.allclose(seg.affine, cases[0].image.affine, atol=1e-4) and seg.shape == cases[0].image.shape
    # segmentation-only data: the report says why it holds no classification
    test = data.split("test")[0]
    assert cli("infer", "--model", model, "--input", test.image, "--out", tmp_path / "q").code == 0
    report = cli("evaluate", "--pred", tmp_path / "q", "--ref", tmp_path / "data", "--classes",
                 tmp_path / "q" / "predictions.csv", "--out", tmp_path / "r", "--bootstrap", "20")
    assert report.code == 0, report.err
    summary = json.loads((tmp_path / "r" / "summary.json").read_text(encoding="utf-8"))
    assert "classification" not in summary and "segmentation only" in summary["volgan"]["classification_note"]
    assert "segmentation only" in (tmp_path / "r" / "report.md").read_text(encoding="utf-8")
    study = cli("study", "--profile", "tiny", "--real", tmp_path / "data", "--out", tmp_path / "s")
    assert study.code == 2 and "no case has a tumor_type" in study.err and len(study.err.strip().splitlines()) == 1
    assert not (tmp_path / "s").exists()


def test_unmapped_values_are_refused_with_counts_and_nothing_is_written(tmp_path, cli):
    make_spider(tmp_path / "src")
    result = cli("import", tmp_path / "src", "--out", tmp_path / "out")
    assert result.code == 2 and len(result.err.strip().splitlines()) == 1
    assert "not in the label map, in 3 case(s)" in result.err and "--unmapped background" in result.err
    assert not (tmp_path / "out").exists() and [p.name for p in tmp_path.iterdir()] == ["src"]
    result = cli("import", tmp_path / "src", "--out", tmp_path / "out", "--unmapped", "background")
    assert result.code == 0, result.err
    label = read_volume(read_datalist(tmp_path / "out").cases[0].label, label=True).array
    assert set(np.unique(label)) <= {0, 1, 2, 3, 4, 5} and (label == 1).any()  # vertebrae 1-5 kept, 100+ lost


def test_presets_and_label_map_files(tmp_path):
    spider = LABEL_MAP_PRESETS["spider"]
    assert spider[7] == spider[112] == 1 and spider[100] == 4 and spider[215] == 2 and 226 not in spider
    tss = LABEL_MAP_PRESETS["totalspineseg"]
    assert tss[1] == 3 and tss[2] == 4 and tss[45] == tss[50] == 1 and tss[63] == tss[100] == 2 and 60 not in tss
    assert set(LABEL_MAP_PRESETS["verse"]) == set(range(29))
    mapped, missing = map_labels(np.array([[[0, 100, 201, 999]]]), spider)
    assert mapped.tolist() == [[[0, 4, 2, 0]]] and missing == {999: 1}
    bad = tmp_path / "bad.json"
    bad.write_text('{"7": "kidney"}', encoding="utf-8")
    with pytest.raises(ValueError, match="not a volgan label"):
        load_label_map(bad)


def test_folders_name_their_problem(tmp_path):
    make_spider(tmp_path / "spider")
    with pytest.raises(ValueError, match=r"no DICOM series but 3 volume file\(s\) \(.mha\)"):
        read_volume(tmp_path / "spider" / "images")
    cases = make_dicom_tree(tmp_path / "tree")
    with pytest.raises(ValueError, match="holds 3 DICOM series"):
        read_volume(tmp_path / "tree")
    assert read_volume(tmp_path / "tree" / "patient2").shape == cases[1].image.shape  # one series below


def test_classification_loss_skips_cases_without_tumor_type():
    torch.manual_seed(0)
    seg, cls = torch.randn(3, 6, 8, 8, 8), torch.randn(3, 4, requires_grad=True)
    label = torch.randint(0, 6, (3, 1, 8, 8, 8))
    loss = SegClsLoss(cls_weight=1.0)
    unknown = loss((seg, cls), (label, torch.tensor([-1, -1, -1])))
    assert torch.isfinite(unknown) and unknown.item() == pytest.approx(loss.seg_loss(seg, label).item())
    mixed = loss((seg, cls), (label, torch.tensor([2, -1, 0])))
    expected = loss.seg_loss(seg, label) + torch.nn.functional.cross_entropy(cls[[0, 2]], torch.tensor([2, 0]))
    assert mixed.item() == pytest.approx(expected.item())
    score, dice = SegClsScore("score"), SegClsScore("dice")
    for metric in (score, dice):
        metric.update((seg, cls, label, torch.tensor([-1, -1, -1])))
    assert 0 < dice.compute() < 1 and score.compute() == pytest.approx(dice.compute())  # no accuracy to average in
    accuracy = SegClsScore("accuracy")
    accuracy.update((seg, cls, label, torch.tensor([int(cls[0].argmax()), -1, -1])))
    assert accuracy.compute() == 1.0


def test_field_follows_the_labeled_spine():
    label = np.zeros((100, 40, 40), np.uint8)
    label[70:80, 10:20, 10:30] = 1
    affine = np.diag([2.0, 1.0, 1.0, 1.0])
    field = field_about_foreground(affine, label, (16, 16, 16), (1.0, 1.0, 1.0))
    centre = field @ np.array([7.5, 7.5, 7.5, 1.0])
    assert np.allclose(centre[:3], affine[:3, :3] @ np.array([74.5, 14.5, 19.5]))


def test_classes_from_a_csv_and_an_nnunet_source_with_mha_files(tmp_path, cli, phantom_dir):
    make_spider(tmp_path / "spider")
    classes = tmp_path / "classes.csv"
    classes.write_text("name,tumor_type\n1_t2,none\n2_t2,0\n3_t2,\n", encoding="utf-8")
    result = cli("import", tmp_path / "spider", "--out", tmp_path / "nn", "--label-map", "spider", "--format",
                 "nnunet", "--classes", classes)
    assert result.code == 0, result.err
    data = read_datalist(tmp_path / "nn")
    assert data.format == "nnunet" and [c.tumor_type for c in data.cases] == [0, 0, None]
    assert all(c.annotated == ("vertebra", "disc", "csf") for c in data.cases if c.label)  # SPIDER's labels only
    classes.write_text("name,tumor_type\n1_t2,vertebral\n", encoding="utf-8")  # SPIDER annotates no tumor: allowed
    result = cli("import", tmp_path / "spider", "--out", tmp_path / "typed", "--label-map", "spider",
                 "--classes", classes)
    assert result.code == 0, result.err
    name = read_datalist(phantom_dir).cases[0].name  # a full map (tumor annotated) must agree with its class
    wrong = 0 if read_datalist(phantom_dir).cases[0].tumor_type else 3
    classes.write_text(f"name,tumor_type\n{name},{wrong}\n", encoding="utf-8")
    result = cli("import", phantom_dir, "--out", tmp_path / "bad", "--classes", classes)
    assert result.code == 2 and f"tumor_type {wrong} but the mapped label map" in result.err
    assert not (tmp_path / "bad").exists()
    # an nnU-Net raw folder whose file_ending is .mha, imported back with its values already volgan's
    raw = tmp_path / "raw"
    for folder in ("imagesTr", "labelsTr"):
        (raw / folder).mkdir(parents=True)
    for case in data.cases:
        write_volume(read_volume(case.image), raw / "imagesTr" / f"{case.name}_0000.mha")
        write_volume(read_volume(case.label, label=True), raw / "labelsTr" / f"{case.name}.mha")
    (raw / "dataset.json").write_text(json.dumps({"channel_names": {"0": "MR"}, "file_ending": ".mha",
                                                  "labels": {v: k for k, v in LABELS.items()}, "numTraining": 3}))
    result = cli("import", raw, "--out", tmp_path / "again")
    assert result.code == 0, result.err
    again = read_datalist(tmp_path / "again")
    for first, second in zip(data.cases, again.cases, strict=True):
        assert np.array_equal(read_volume(first.label, label=True).array, read_volume(second.label, label=True).array)
        assert np.allclose(read_volume(first.image).affine, read_volume(second.image).affine, atol=1e-5)
