"""The phantom: anatomy invariants, tumor placement, determinism, split, speed-independent properties."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from volgan.data.datalist import read_datalist
from volgan.data.io import read_volume
from volgan.data.phantom import PhantomConfig, generate_case, make_dataset, tumor_type_for
from volgan.labels import CORD, CSF, VERTEBRA

FACES = ndimage.generate_binary_structure(3, 1)
CONFIGS = {
    "64iso": PhantomConfig(),
    "32iso_t1": PhantomConfig(size=(32, 32, 32), contrast="t1"),
    "aniso_random": PhantomConfig(size=(24, 96, 96), spacing=(3.0, 0.8, 0.8), orientation="random"),
}


def shell_fractions(label: np.ndarray, value: int) -> np.ndarray:
    """Share of each label among the voxels that touch (6-connectivity) the region ``label == value``."""
    region = label == value
    shell = ndimage.binary_dilation(region, FACES) & ~region
    return np.bincount(label[shell], minlength=6) / max(int(shell.sum()), 1)


@pytest.fixture(scope="module", params=list(CONFIGS))
def cases(request):
    config = CONFIGS[request.param]
    return [generate_case(3, i, config) for i in range(16)]


def test_labels_and_structures(cases):
    for case in cases:
        values = set(np.unique(case.label.array).tolist())
        assert values <= {0, 1, 2, 3, 4, 5}
        assert {0, 1, 2, 3, 4} <= values, f"case {case.index} misses a structure: {values}"
        assert case.image.array.dtype == np.float32 and case.label.array.dtype == np.uint8
        assert np.isfinite(case.image.array).all() and case.image.array.min() >= 0
        assert np.allclose(case.image.affine, case.label.affine)
        assert 3 <= case.info["n_vertebrae"] <= 5


def test_cord_lies_inside_the_canal(cases):
    for case in cases:
        touching = shell_fractions(case.label.array, 3)
        assert touching[[0, 1, 2]].sum() == 0, f"case {case.index}: cord touches {touching.round(2)}"


def test_tumor_present_exactly_when_typed_and_where_its_type_says(cases):
    seen = set()
    for case in cases:
        label = case.label.array
        assert (label == 5).any() == (case.tumor_type != 0), f"case {case.index}"
        if not case.tumor_type:
            continue
        seen.add(case.tumor_type)
        around = shell_fractions(label, 5)
        if case.tumor_type == 1:  # intramedullary: enclosed by cord and CSF, never bone or outside
            assert around[[0, 1, 2]].sum() == 0 and around[3] > 0.1, around.round(2)
        elif case.tumor_type == 2:  # intradural extramedullary: in the CSF beside the cord
            assert around[4] >= 0.4 and around[3] > 0 and around[3] < 0.6, around.round(2)
        else:  # vertebral: inside a vertebral body
            assert around[[3, 4]].sum() == 0 and around[1] >= 0.5, around.round(2)
    assert seen == {1, 2, 3}


def test_tumor_sizes_span_few_mm_to_about_25mm():
    diameters = [generate_case(0, i).info.get("tumor_diameter_mm") for i in range(40)]
    diameters = [d for d in diameters if d is not None]
    assert min(diameters) < 8 and 18 < max(diameters) <= 32


def test_tumor_contrast_overlaps_tissue_in_a_share_of_cases():
    """With overlap_fraction=1 the tumor's mean is within 15% of its surroundings; with 0 it stands out."""
    def contrast(config, index):
        case = generate_case(5, index, config)
        image, label = case.image.array, case.label.array
        tumor = label == 5
        ring = ndimage.binary_dilation(tumor, FACES, iterations=2) & ~tumor & (label != 0)
        return abs(image[tumor].mean() / image[ring].mean() - 1)

    typed = [i for i in range(30) if tumor_type_for(5, i, 0.75, (1, 2, 3)) == 3][:4]  # body: uniform host
    subtle = [contrast(PhantomConfig(overlap_fraction=1.0), i) for i in typed]
    clear = [contrast(PhantomConfig(overlap_fraction=0.0), i) for i in typed]
    assert max(subtle) < 0.15 < min(clear)


def test_same_seed_same_arrays_and_case_depends_only_on_seed_and_index():
    a, b = generate_case(11, 4), generate_case(11, 4)
    assert np.array_equal(a.image.array, b.image.array) and np.array_equal(a.label.array, b.label.array)
    c = generate_case(12, 4)
    assert not np.array_equal(a.image.array, c.image.array)


def test_dataset_is_parallel_and_extension_safe(tmp_path):
    config = PhantomConfig(size=(24, 24, 24))
    make_dataset(tmp_path / "serial", 6, config, seed=2, workers=1, test_fraction=0)
    make_dataset(tmp_path / "parallel", 6, config, seed=2, workers=2, test_fraction=0)
    make_dataset(tmp_path / "extension", 3, config, seed=2, start=3, test_fraction=0)
    for name in ("phantom_00000", "phantom_00004"):
        serial = read_volume(tmp_path / "serial" / "imagesTr" / f"{name}.nii.gz")
        parallel = read_volume(tmp_path / "parallel" / "imagesTr" / f"{name}.nii.gz")
        assert np.array_equal(serial.array, parallel.array)
    extended = read_volume(tmp_path / "extension" / "imagesTr" / "phantom_00004.nii.gz")
    assert np.array_equal(extended.array, read_volume(tmp_path / "serial" / "imagesTr" / "phantom_00004.nii.gz").array)


def test_class_fractions_and_balanced_test_split(tmp_path):
    path, cases, _ = make_dataset(tmp_path / "d", 40, PhantomConfig(size=(16, 16, 16)), seed=9)
    counts = np.bincount([c.tumor_type for c in cases], minlength=4)
    assert counts.min() >= 9 and counts.max() <= 11  # 0.75 tumor fraction over 3 types: 10 each
    test = [c.tumor_type for c in cases if c.split == "test"]
    assert len(test) == 8 and np.bincount(test, minlength=4).tolist() == [2, 2, 2, 2]
    again = read_datalist(path)
    assert [c.split for c in again.cases if c.name == "phantom_00003"] == [
        c.split for c in cases if c.name == "phantom_00003"]


def test_types_and_fraction_options():
    config = PhantomConfig(tumor_fraction=0.5, types=(3,))
    types = [tumor_type_for(1, i, config.tumor_fraction, config.types) for i in range(100)]
    assert set(types) == {0, 3} and 45 <= types.count(3) <= 55


def test_orientation_and_anisotropic_spacing_in_header(tmp_path):
    config = PhantomConfig(size=(20, 40, 40), spacing=(3.0, 0.8, 0.8), orientation="PIR")
    case = generate_case(0, 1, config)
    assert case.image.orientation == "PIR"
    assert sorted(case.image.spacing) == pytest.approx([0.8, 0.8, 3.0])
    canonical = generate_case(0, 1, PhantomConfig(size=(20, 40, 40), spacing=(3.0, 0.8, 0.8)))
    back = nib.as_closest_canonical(nib.Nifti1Image(case.label.array, case.label.affine))
    assert np.array_equal(np.asarray(back.dataobj), canonical.label.array)
    assert np.allclose(back.affine, canonical.label.affine)


def test_datalist_records_generator_settings(phantom_dir):
    doc = json.loads((phantom_dir / "dataset.json").read_text(encoding="utf-8"))
    assert doc["volgan"]["seed"] == 7 and doc["volgan"]["config"]["size"] == [32, 32, 32]
    assert doc["labels"]["5"] == "tumor" and doc["numTraining"] + doc["numTest"] == 12
    assert all(e["source"] == "real" and e["tumor_type"] in (0, 1, 2, 3) for e in doc["training"] + doc["test"])


def test_natural_size_anatomy_in_a_small_grid():
    """``anatomy_field_mm=96`` draws a 32³ grid at 1.5 mm as the centre of a natural-size 96 mm field: tumors are
    many times larger than with the anatomy shrunk to the 48 mm grid, and every tumor lies inside the grid."""
    shrunk = PhantomConfig(size=(32, 32, 32))
    natural = PhantomConfig(size=(32, 32, 32), anatomy_field_mm=96.0)
    sizes = {0: [], 1: []}
    for i in range(24):
        a, b = generate_case(0, i, shrunk), generate_case(0, i, natural)
        assert a.tumor_type == b.tumor_type
        assert (b.label.array == 5).any() == (b.tumor_type != 0), f"case {i}: tumor outside the grid"
        assert {1, 3, 4} <= set(np.unique(b.label.array).tolist())
        if a.tumor_type:
            sizes[0].append(int((a.label.array == 5).sum()))
            sizes[1].append(int((b.label.array == 5).sum()))
    assert np.median(sizes[1]) > 5 * np.median(sizes[0])
    with pytest.raises(ValueError, match="anatomy field"):
        PhantomConfig(anatomy_field_mm=float("nan"))


def test_the_default_field_is_the_grid_itself():
    """Without ``anatomy_field_mm`` a case is what it always was (the option changes no existing data set)."""
    a = generate_case(4, 7, PhantomConfig(size=(32, 32, 32)))
    b = generate_case(4, 7, PhantomConfig(size=(32, 32, 32), anatomy_field_mm=48.0))
    assert np.array_equal(a.label.array, b.label.array) and np.array_equal(a.image.array, b.image.array)


def test_random_contrast_draws_each_case_its_own_seeded_look():
    config = PhantomConfig(size=(32, 32, 32), contrast="random")
    looks = [generate_case(0, i, config).info for i in range(6)]
    orders = {tuple(sorted(look["contrast"], key=look["contrast"].get)) for look in looks}
    assert len(orders) == 6  # the tissues' order of brightness differs from case to case
    assert len({look["slice_blur"][0] for look in looks}) > 1 and len({look["noise"] for look in looks}) == 6
    again = generate_case(0, 3, config)
    assert again.info == looks[3] and np.array_equal(again.image.array, generate_case(0, 3, config).image.array)
    assert generate_case(1, 3, config).info["contrast"] != looks[3]["contrast"]
    clearest = max(range(6), key=lambda i: abs(looks[i]["contrast"]["cord"] - looks[i]["contrast"]["csf"]))
    case = generate_case(0, clearest, config)
    cord, csf = case.image.array[case.label.array == 3].mean(), case.image.array[case.label.array == 4].mean()
    drawn = looks[clearest]["contrast"]
    assert (cord < csf) == (drawn["cord"] < drawn["csf"])  # the drawn values are used
    assert all(abs(look["contrast"]["cord"] - look["contrast"]["csf"]) >= 0.25 for look in looks)  # cord visible


def _centre_of(mask: np.ndarray, axis: int) -> float:
    """The mask's centre of mass along ``axis``, in voxels from the grid's centre."""
    return float(np.argwhere(mask)[:, axis].mean() - (mask.shape[axis] - 1) / 2.0)


def test_region_frames_the_cervical_spine_on_its_canal():
    """Cervical: the field centred on the canal and a smaller vertebral body; auto picks it for random contrast."""
    lumbar = generate_case(0, 2, PhantomConfig(size=(48, 48, 48), tumor_fraction=0.0, region="lumbar"))
    cervical = generate_case(0, 2, PhantomConfig(size=(48, 48, 48), tumor_fraction=0.0, region="cervical"))
    canal = [np.isin(case.label.array, (CORD, CSF)) for case in (lumbar, cervical)]
    # Same draws but the framing: the canal moves 10 mm at natural size (7.5 mm in this 72 mm field) anterior.
    assert 3.5 < _centre_of(canal[1], 1) - _centre_of(canal[0], 1) < 6.5  # voxels of 1.5 mm, RAS: anterior
    bone = [(case.label.array == VERTEBRA).sum() for case in (lumbar, cervical)]
    assert bone[1] < 0.6 * bone[0]
    assert PhantomConfig(contrast="random").anatomy_region == "cervical"
    assert PhantomConfig(region="cervical").anatomy_region == "cervical"
    assert PhantomConfig().anatomy_region == "lumbar"
    with pytest.raises(ValueError, match="region"):
        PhantomConfig(region="thoracic")
