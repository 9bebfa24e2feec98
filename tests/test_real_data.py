"""Real spine data as the community ships it: BIDS trees built from the shipped real scans and from phantoms,
partial labels through import, training and evaluation, anisotropic stacks, and the real-MRI check."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from test_bad_input import assert_nothing_left, assert_one_line_error, listing

from volgan.data.datalist import read_datalist
from volgan.data.io import Volume, read_volume, write_nifti
from volgan.data.phantom import PhantomConfig, generate_case

REPO = Path(__file__).resolve().parents[1]
REAL = REPO / "data" / "real"


def binary(label: np.ndarray, value: int) -> np.ndarray:
    return (label == value).astype(np.uint8)


@pytest.fixture
def bids_tree(tmp_path) -> Path:
    """A BIDS tree: sub-01 the shipped real T2 with its SCT cord mask, sub-02 the PAM50 template (label-SC_seg),
    sub-03 and sub-04 phantoms (T2w and T1w, one with an intramedullary lesion), and participants.tsv."""
    root = tmp_path / "bids"
    (root / "dataset_description.json").parent.mkdir(parents=True)
    (root / "dataset_description.json").write_text('{"Name": "test", "BIDSVersion": "1.8.0"}', encoding="utf-8")
    labels = root / "derivatives" / "labels"

    def place(sub: str, suffix: str, image: Path | Volume, masks: dict[str, Path | Volume]) -> None:
        anat, derived = root / sub / "anat", labels / sub / "anat"
        anat.mkdir(parents=True, exist_ok=True)
        derived.mkdir(parents=True, exist_ok=True)
        for target, source in [(anat / f"{sub}_{suffix}.nii.gz", image),
                               *[(derived / f"{sub}_{suffix}_{tail}.nii.gz", m) for tail, m in masks.items()]]:
            shutil.copy(source, target) if isinstance(source, Path) else write_nifti(source, target)

    place("sub-01", "T2w", REAL / "t2.nii.gz", {"seg-manual": REAL / "t2_seg-manual.nii.gz"})
    place("sub-02", "T2w", REAL / "PAM50_small_t2.nii.gz", {"label-SC_seg": REAL / "PAM50_small_cord.nii.gz"})
    lesion = generate_case(0, 1, PhantomConfig(size=(32, 32, 32), types=(1,), tumor_fraction=1.0))
    assert lesion.tumor_type == 1
    lab = lesion.label.array
    place("sub-03", "T2w", lesion.image, {
        "label-SC_seg": Volume(binary(lab, 3) | binary(lab, 5), lesion.label.affine),  # the lesion lies in the cord
        "label-CSF_seg": Volume(binary(lab, 4), lesion.label.affine),
        "label-lesion": Volume(binary(lab, 5), lesion.label.affine)})
    healthy = generate_case(0, 2, PhantomConfig(size=(32, 32, 32), tumor_fraction=0.0))
    place("sub-04", "T2w", healthy.image, {"seg-manual": Volume(binary(healthy.label.array, 3), healthy.label.affine)})
    place("sub-04", "T1w", healthy.image, {})
    (root / "participants.tsv").write_text("participant_id\tage\ttumor\nsub-01\t30\tnone\nsub-02\tn/a\tn/a\n"
                                           "sub-03\t40\tintramedullary\nsub-04\t50\t0\n", encoding="utf-8")
    return root


def test_bids_tree_imports_with_masks_merged_and_partial_labels(cli, tmp_path, bids_tree):
    result = cli("import", bids_tree, "--out", tmp_path / "out", "--suffix", "T2w", "--classes-column", "tumor")
    assert result.code == 0, result.err
    assert "BIDS tree" in result.out and "labels annotated" in result.out
    cases = {c.name: c for c in read_datalist(tmp_path / "out").cases}
    assert sorted(cases) == ["sub-01_T2w", "sub-02_T2w", "sub-03_T2w", "sub-04_T2w"]
    assert cases["sub-01_T2w"].annotated == ("cord",) and cases["sub-01_T2w"].tumor_type == 0
    assert cases["sub-02_T2w"].tumor_type is None
    assert cases["sub-03_T2w"].annotated == ("cord", "csf", "tumor") and cases["sub-03_T2w"].tumor_type == 1
    merged = read_volume(cases["sub-03_T2w"].label, label=True).array
    phantom = generate_case(0, 1, PhantomConfig(size=(32, 32, 32), types=(1,), tumor_fraction=1.0)).label.array
    for value in (3, 4, 5):  # each mask painted its label; the lesion won over the cord it lies in
        assert np.array_equal(merged == value, phantom == value), value
    real = read_volume(cases["sub-01_T2w"].label, label=True)
    assert np.array_equal(real.array == 3, np.asarray(nib.load(REAL / "t2_seg-manual.nii.gz").dataobj) > 0)
    assert np.allclose(real.affine, nib.load(REAL / "t2.nii.gz").affine)  # geometry kept
    assert cli("check", tmp_path / "out").code == 0


def test_bids_mask_choice(cli, tmp_path, bids_tree):
    result = cli("import", bids_tree, "--out", tmp_path / "out", "--suffix", "T2w", "--mask", "label-CSF_seg")
    assert result.code == 0, result.err
    cases = {c.name: c for c in read_datalist(tmp_path / "out").cases}
    assert cases["sub-03_T2w"].annotated == ("csf",) and cases["sub-01_T2w"].label is None


@pytest.mark.parametrize("damage, args, needle", [
    ("none", ["--suffix", "T2star"], "no image with suffix 'T2star'"),
    ("none", [], "several contrasts"),
    ("grid", ["--suffix", "T2w"], "label affine differs"),
    ("orphan", ["--suffix", "T2w"], "matches no image"),
    ("overlap", ["--suffix", "T2w"], "disagrees with"),
    ("tsv", ["--suffix", "T2w", "--classes-column", "tumor"], "unknown tumor type"),
])
def test_bids_bad_input(cli, tmp_path, bids_tree, damage, args, needle):
    derived = bids_tree / "derivatives" / "labels"
    if damage == "grid":
        mask = nib.load(derived / "sub-04" / "anat" / "sub-04_T2w_seg-manual.nii.gz")
        affine = mask.affine.copy()
        affine[0, 3] += 3.0
        nib.save(nib.Nifti1Image(np.asarray(mask.dataobj), affine),
                 str(derived / "sub-04/anat/sub-04_T2w_seg-manual.nii.gz"))
    elif damage == "orphan":
        shutil.copy(derived / "sub-04/anat/sub-04_T2w_seg-manual.nii.gz",
                    derived / "sub-04/anat/sub-04_acq-ax_T2w_seg-manual.nii.gz")
    elif damage == "overlap":  # a CSF mask that claims the cord too
        cord = nib.load(derived / "sub-03/anat/sub-03_T2w_label-SC_seg.nii.gz")
        csf = nib.load(derived / "sub-03/anat/sub-03_T2w_label-CSF_seg.nii.gz")
        both = np.asarray(csf.dataobj) | np.asarray(cord.dataobj)
        nib.save(nib.Nifti1Image(both.astype(np.uint8), csf.affine),
                 str(derived / "sub-03/anat/sub-03_T2w_label-CSF_seg.nii.gz"))
    elif damage == "tsv":
        (bids_tree / "participants.tsv").write_text("participant_id\ttumor\nsub-01\tglioma\n", encoding="utf-8")
    before = listing(tmp_path)
    assert_one_line_error(cli("import", bids_tree, "--out", tmp_path / "out", *args), needle)
    assert_nothing_left(tmp_path, before)


# ---- partial references are scored on their annotated labels only


def test_evaluate_scores_a_cord_only_reference_on_the_cord(cli, tmp_path, phantom_dir):
    case = read_datalist(phantom_dir).split("test")[0]
    label = read_volume(case.label, label=True)
    pred = tmp_path / "pred"
    write_nifti(label, pred / f"{case.name}_seg.nii.gz")  # a perfect full prediction: vertebrae, discs, CSF too
    ref = tmp_path / "ref"
    write_nifti(Volume(np.where(label.array == 3, 3, 0).astype(np.uint8), label.affine), ref / "labelsTs" / "c.nii.gz")
    shutil.copy(case.image, ref / "c_image.nii.gz")
    (ref / "dataset.json").write_text(json.dumps({"training": [], "test": [
        {"name": case.name, "image": "c_image.nii.gz", "label": "labelsTs/c.nii.gz", "annotated": ["cord"]}]}),
        encoding="utf-8")
    result = cli("evaluate", "--pred", pred, "--ref", ref, "--out", tmp_path / "r", "--bootstrap", "10")
    assert result.code == 0, result.err
    summary = json.loads((tmp_path / "r" / "summary.json").read_text(encoding="utf-8"))
    assert summary["mean"]["3"]["Dice"] == 1.0  # the cord is found; the vertebrae it also finds are not punished
    assert summary["foreground_mean"]["Dice"] == 1.0
    assert all(summary["mean"][k]["Dice"] is None for k in ("1", "2", "4"))
    assert summary["volgan"]["scored_cases"]["3"] == 1 and summary["volgan"]["scored_cases"]["1"] == 0
    assert "Partially annotated references" in (tmp_path / "r" / "report.md").read_text(encoding="utf-8")
    # without "annotated" the same map is a full reference: its vertebrae become false positives
    (ref / "dataset.json").write_text(json.dumps({"training": [], "test": [
        {"name": case.name, "image": "c_image.nii.gz", "label": "labelsTs/c.nii.gz"}]}), encoding="utf-8")
    assert cli("evaluate", "--pred", pred, "--ref", ref, "--out", tmp_path / "r2", "--bootstrap", "10").code == 0
    full = json.loads((tmp_path / "r2" / "summary.json").read_text(encoding="utf-8"))
    assert full["mean"]["1"]["Dice"] == 0.0


# ---- partial labels in training: the marginal loss


def test_marginal_loss_equals_dice_ce_on_full_maps_and_ignores_unannotated_labels():
    import torch

    from volgan.labels import PARTIAL_BASE
    from volgan.segcls.train import SegClsLoss
    from volgan.training import mark_unknown

    torch.manual_seed(0)
    loss = SegClsLoss(batch_dice=True, tumor_weight=5.0)
    seg, cls = torch.randn(2, 6, 8, 8, 8, requires_grad=True), torch.randn(2, 4)
    label, tumor_type = torch.randint(0, 6, (2, 1, 8, 8, 8)), torch.tensor([1, -1])
    full = loss((seg, cls), (label, tumor_type))
    assert torch.allclose(loss.marginal_seg_loss(seg, label) + 0.5 * loss.cls_loss(cls[:1], tumor_type[:1]), full)
    cord_only = torch.where(label == 3, 3, 0)
    bits = torch.tensor([sum(1 << k for k in (0, 1, 2, 4, 5)), 0])
    marked = mark_unknown(cord_only, bits)
    assert bool((marked[0] >= PARTIAL_BASE).any()) and not bool((marked[1] >= PARTIAL_BASE).any())
    value = loss((seg, cls), (marked, tumor_type))
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(seg.grad).all()
    # for the cord-only case, trading vertebra for disc (both unknown) changes nothing; for a full map it does
    logits = seg.detach()[:1]
    swapped = logits.clone()
    swapped[0, [1, 2]] = swapped[0, [2, 1]]
    assert torch.allclose(loss.marginal_seg_loss(swapped, marked[:1]), loss.marginal_seg_loss(logits, marked[:1]))
    assert not torch.allclose(loss.seg_loss(swapped, label[:1]), loss.seg_loss(logits, label[:1]))


def test_a_healthy_cord_only_case_marks_its_tumor_known_absent():
    """Unannotated voxels of a cord-only map may be background, vertebra, disc or CSF, and tumor only where the case
    may hold one: a healthy scan's marginal loss punishes any tumor it is given."""
    import torch

    from volgan.data.loader import unknown_bits
    from volgan.labels import TUMOR_LABEL
    from volgan.segcls.train import SegClsLoss
    from volgan.training import mark_unknown

    tumor_bit = 1 << TUMOR_LABEL
    assert unknown_bits(None, 0) == unknown_bits(None, None) == 0
    for tumor_type in (None, 1, 3):
        assert unknown_bits(("cord",), tumor_type) & tumor_bit
    assert unknown_bits(("cord",), 0) == sum(1 << k for k in (0, 1, 2, 4))
    assert unknown_bits(("cord", "tumor"), 2) == unknown_bits(("cord",), 0)

    loss = SegClsLoss(batch_dice=True)
    label = torch.zeros(1, 1, 6, 6, 6, dtype=torch.long)
    label[..., 2:4, 2:4, :] = 3
    seg = torch.zeros(1, 6, 6, 6, 6)
    seg[:, 0] = 4.0
    seg[:, 3] = torch.where(label[:, 0] == 3, 8.0, 0.0)
    tumor_outside = seg.clone()
    tumor_outside[:, TUMOR_LABEL, 0] = 12.0  # tumor where the map says 0
    for tumor_type, punished in ((0, True), (None, False)):
        marked = mark_unknown(label, torch.tensor([unknown_bits(("cord",), tumor_type)]))
        before, after = loss.marginal_seg_loss(seg, marked), loss.marginal_seg_loss(tumor_outside, marked)
        assert bool(after > before + 0.05) == punished, (tumor_type, before, after)


# ---- anisotropic real stacks keep their geometry


@pytest.mark.parametrize("spacing, size", [((0.5, 0.5, 7.5), (96, 96, 16)), ((0.3, 0.3, 4.0), (128, 128, 16))])
def test_infer_and_evaluate_on_anisotropic_stacks_keep_geometry(cli, tmp_path, spacing, size):
    import torch

    from volgan.segcls.network import SegClsNet
    from volgan.segcls.train import write_model_card
    from volgan.transforms import Preprocessing

    case = generate_case(0, 3, PhantomConfig(size=size, spacing=spacing, orientation="PIR"))
    write_nifti(case.image, tmp_path / "scans" / "stack.nii.gz")
    write_nifti(case.label, tmp_path / "ref" / "stack.nii.gz")
    models = tmp_path / "models"
    models.mkdir()
    torch.manual_seed(0)
    torch.save(SegClsNet(channels=(4, 8, 16, 32)).state_dict(), models / "model.pt")
    write_model_card(str(models), Preprocessing(patch=(32, 32, 32)), (4, 8, 16, 32))
    result = cli("infer", "--model", models / "model.pt", "--input", tmp_path / "scans", "--out", tmp_path / "pred")
    assert result.code == 0, result.err
    out = nib.load(tmp_path / "pred" / "stack_seg.nii.gz")
    source = nib.load(tmp_path / "scans" / "stack.nii.gz")
    assert out.shape == source.shape and np.allclose(out.affine, source.affine, atol=1e-5)
    assert nib.aff2axcodes(out.affine) == nib.aff2axcodes(source.affine)
    result = cli("evaluate", "--pred", tmp_path / "pred", "--ref", tmp_path / "ref", "--out", tmp_path / "r",
                 "--bootstrap", "10")
    assert result.code == 0, result.err


# ---- the real-MRI check on its own


def test_real_check_scores_the_annotated_cord_of_the_shipped_scans(tmp_path):
    import torch

    from volgan.evaluation.real_mri import check_model, shipped_scans
    from volgan.segcls.network import SegClsNet
    from volgan.segcls.train import write_model_card
    from volgan.transforms import Preprocessing

    scans = shipped_scans()
    assert [s.name for s in scans] == ["t2", "pam50_t2"] and all(s.annotated == ("cord",) for s in scans)
    torch.manual_seed(0)
    torch.save(SegClsNet(channels=(4, 8, 16, 32)).state_dict(), tmp_path / "model.pt")
    write_model_card(str(tmp_path), Preprocessing(patch=(32, 32, 32)), (4, 8, 16, 32))
    rows = check_model(tmp_path / "model.pt", scans, tmp_path / "pred")
    assert [sorted(r["dice"]) for r in rows] == [["cord"], ["cord"]]
    for scan, row in zip(scans, rows, strict=True):
        pred = nib.load(tmp_path / "pred" / f"{scan.name}_seg.nii.gz")
        assert pred.shape == nib.load(scan.image).shape  # the scan's own grid
        assert row["healthy_called_tumor"] == (row["tumor_probability"] >= 0.5)


def test_cord_only_cases_do_not_teach_that_vertebrae_are_background(tmp_path):
    """12 cord-only training maps and 4 full ones: with the cord-only maps marked as partial, the vertebrae of the
    full maps are learnt; with "unannotated = background" the cord-only maps teach that vertebrae are background.
    Vertebra Dice on 4 fully labeled test cases, same seed, data, network and steps for both."""
    from dataclasses import replace

    import torch

    from volgan.data.loader import segcls_dataset, subjects_loader
    from volgan.data.phantom import make_dataset
    from volgan.evaluation.metrics import confusion_counts, dice_iou
    from volgan.segcls.network import SegClsNet
    from volgan.segcls.predict import LoadedModel, predict
    from volgan.segcls.train import SegClsLoss
    from volgan.training import prepare_batch
    from volgan.transforms import Preprocessing, preprocessing

    make_dataset(tmp_path / "data", 20, PhantomConfig(size=(24, 24, 24), spacing=(4.0, 4.0, 4.0)), seed=3,
                 test_fraction=0.2)
    data = read_datalist(tmp_path / "data")
    train, test = data.split("training"), data.split("test")
    cord_only = []
    for case in train[4:]:
        label = read_volume(case.label, label=True)
        path = write_nifti(Volume(np.where(label.array == 3, 3, 0).astype(np.uint8), label.affine),
                           tmp_path / "cord" / f"{case.name}.nii.gz")
        cord_only.append(replace(case, label=path))
    prep = Preprocessing(spacing=(4.0,) * 3, patch=(24,) * 3)

    def vertebra_dice(cases) -> float:
        torch.manual_seed(0)
        network, loss = SegClsNet(channels=(4, 8, 16, 32)), SegClsLoss(batch_dice=True)
        optimizer = torch.optim.AdamW(network.parameters(), 3e-3)
        dataset = segcls_dataset(cases, preprocessing(prep), cache=True)
        loader = subjects_loader(dataset, batch_size=4, shuffle=True, seed=0)
        for _ in range(15):
            for batch in loader:
                x, y = prepare_batch(batch)
                optimizer.zero_grad()
                loss(network(x), y).backward()
                optimizer.step()
        model = LoadedModel(network.eval(), prep)
        scores = [dice_iou(confusion_counts(predict(model, read_volume(c.image)).label.array,
                                            read_volume(c.label, label=True).array, [1])[1])[0] for c in test]
        return float(np.nanmean(scores))

    marginal = vertebra_dice(train[:4] + [replace(c, annotated=("cord",)) for c in cord_only])
    as_background = vertebra_dice(train[:4] + cord_only)
    assert marginal > as_background + 0.2, (marginal, as_background)


def test_a_study_field_across_the_datas_slices_gets_a_note():
    from dataclasses import replace

    from volgan.data.summary import ras_spacing
    from volgan.study.data import slice_axis_note
    from volgan.study.profiles import PROFILES

    sagittal = np.array([[0, 0, 3.3, 0], [0.6, 0, 0, 0], [0, 0.6, 0, 0], [0, 0, 0, 1.0]])  # slices along R
    axial = np.diag([0.5, 0.5, 7.5, 1.0])
    assert ras_spacing(sagittal) == pytest.approx((3.3, 0.6, 0.6)) and ras_spacing(axial) == (0.5, 0.5, 7.5)
    thick_s = replace(PROFILES["tiny"], size=(16, 16, 8), spacing=(3.0, 3.0, 6.0))
    note = slice_axis_note([ras_spacing(sagittal)] * 3, thick_s)
    assert "coarsest axis is S" in note and "thickest along R" in note
    assert slice_axis_note([ras_spacing(axial)], thick_s) is None  # both thick along S
    assert slice_axis_note([ras_spacing(sagittal)], PROFILES["tiny"]) is None  # an isotropic field
    assert slice_axis_note([(1.0, 1.0, 1.0)], thick_s) is None  # isotropic data
