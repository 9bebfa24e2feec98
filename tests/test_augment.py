"""Augmentation and artifacts: volgan's fast elastic deformation and bias field give torchio's output; the
study's artifacts are reproducible and grow with severity."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchio as tio
from scipy.ndimage import gaussian_filter

from volgan.transforms import (
    ElasticDeformation,
    RandomBiasField,
    RandomElasticDeformation,
    RandomFieldOfView,
    RandomIntensityCurve,
    artifacts,
    augmentation,
    axis_permutation,
    bspline_weights,
    corrupt,
    intensity_curve,
)

OBLIQUE = np.array([[0, -0.8, 0, 10], [1.2, 0, 0, -5], [0, 0, 3, 2], [0, 0, 0, 1.0]])


def subject(shape, affine) -> tio.Subject:
    image = gaussian_filter(np.random.default_rng(0).random(shape), 2).astype(np.float32)[None] * 10
    label = (image > np.median(image)).astype(np.int64) + (image > np.percentile(image, 80))
    return tio.Subject(image=tio.ScalarImage(tensor=torch.from_numpy(image), affine=affine),
                       label=tio.LabelMap(tensor=torch.from_numpy(label), affine=affine))


@pytest.mark.parametrize("shape, affine", [((40, 36, 28), np.diag([1.5, 1.5, 1.5, 1])), ((33, 40, 17), OBLIQUE)])
def test_elastic_deformation_matches_torchio(shape, affine):
    s = subject(shape, affine)
    torch.manual_seed(5)
    expected = tio.RandomElasticDeformation(num_control_points=(5, 6, 7), max_displacement=4)(s)
    torch.manual_seed(5)
    got = RandomElasticDeformation(num_control_points=(5, 6, 7), max_displacement=4)(s)
    assert float((expected.image.data - got.image.data).abs().max()) < 1e-4
    assert float((expected.image.data - s.image.data).abs().mean()) > 0.005  # it did deform
    assert float((expected.label.data == got.label.data).float().mean()) > 0.999


def test_an_oblique_grid_goes_to_torchio():
    """The torch path handles axis-aligned grids only; on an oblique one the transform must hand over to
    torchio (SimpleITK) and give its result."""
    c, s_ = np.cos(0.5), np.sin(0.5)
    oblique = np.array([[1.5 * c, -2 * s_, 0, 1], [1.5 * s_, 2 * c, 0, 2], [0, 0, 3, 0], [0, 0, 0, 1]])
    assert axis_permutation(oblique) is None
    s = subject((20, 16, 12), oblique)
    control = np.random.default_rng(1).uniform(-2, 2, (5, 6, 7, 3))
    expected = tio.ElasticDeformation(control_points=control, max_displacement=(4, 4, 4))(s)
    transform = ElasticDeformation(control_points=control, max_displacement=(4, 4, 4))
    got = transform(s)
    assert torch.equal(expected.image.data, got.image.data)
    assert not torch.allclose(got.image.data, s.image.data)  # the field did move the image
    with pytest.raises(ValueError, match="axes lie along the world axes"):  # the torch path, forced, refuses it
        transform._sampling_grid(np.array(control), oblique, (20, 16, 12))


def test_bspline_weights_sum_to_one():
    weights = bspline_weights(np.arange(37) * 1.2, -0.8, 9.0, 8)  # inside [-0.8, -0.8 + 5 × 9]
    assert weights.shape == (37, 8) and np.allclose(weights.sum(1), 1.0)


@pytest.mark.parametrize("shape", [(32, 32, 32), (17, 20, 9)])
def test_bias_field_matches_torchio(shape):
    s = subject(shape, np.eye(4))
    torch.manual_seed(2)
    expected = tio.RandomBiasField(coefficients=0.5)(s)
    torch.manual_seed(2)
    got = RandomBiasField(coefficients=0.5)(s)
    assert torch.allclose(expected.image.data, got.image.data, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(expected.image.data, s.image.data)


def test_the_classical_preset_uses_the_fast_transforms_one_alteration_at_a_time():
    steps = augmentation("classical").transforms
    choice = next(t for t in steps if isinstance(t, tio.OneOf))
    kinds = [type(t) for t in choice.transforms_dict]
    assert RandomElasticDeformation in kinds and RandomBiasField in kinds and len(kinds) == 8
    assert choice.probability == 0.5


def test_a_study_run_that_augments_is_keyed_on_the_classical_recipe():
    from volgan.study.plan import Arm, training_config
    from volgan.study.profiles import PROFILES
    from volgan.transforms import CLASSICAL_RECIPE

    plain = Arm("augmentation", "none", 0, ("a",), (), "none", real_pool=1)
    augmented = Arm("augmentation", "classical", 0, ("a",), (), "classical", real_pool=1)
    assert "augment_recipe" not in training_config(plain, PROFILES["tiny"])
    assert training_config(augmented, PROFILES["tiny"])["augment_recipe"] == CLASSICAL_RECIPE


def test_artifacts_are_reproducible_and_grow_with_severity():
    image = gaussian_filter(np.random.default_rng(1).random((32, 32, 32)), 1).astype(np.float32) * 100
    assert artifacts(0) is None and corrupt(image, np.eye(4), 0, seed=3) is image
    errors = []
    for severity in (1, 2, 3):
        a = corrupt(image, np.eye(4), severity, seed=3)
        assert np.array_equal(a, corrupt(image, np.eye(4), severity, seed=3))
        assert not np.array_equal(a, corrupt(image, np.eye(4), severity, seed=4))
        errors.append(float(np.abs(a - image).mean()))
    assert errors[0] < errors[1] < errors[2]
    with pytest.raises(ValueError):
        artifacts(4)


def test_the_intensity_curve_gives_each_presentation_its_own_contrast_order():
    """Four flat tissues: the curve re-draws their brightness, order included; air stays the darkest; the label
    is untouched; torch's seed fixes the draw."""
    tissues = np.zeros((1, 20, 20, 20), dtype=np.float32)
    for k, value in enumerate((0.3, 0.55, 0.8, 1.0)):  # four tissues in slabs, air (0) in the first slab
        tissues[:, 4 * (k + 1): 4 * (k + 2)] = value
    s = tio.Subject(image=tio.ScalarImage(tensor=torch.from_numpy(tissues)),
                    label=tio.LabelMap(tensor=torch.from_numpy((tissues * 4).astype(np.int64))))
    curve = RandomIntensityCurve(knots=5)
    orders = set()
    for seed in range(12):
        torch.manual_seed(seed)
        out = curve(s)
        levels = [float(out.image.data[0, 4 * k + 1].mean()) for k in range(5)]
        assert levels[0] == pytest.approx(0.0, abs=1e-6) and min(levels) >= -1e-6 and max(levels) <= 1.0 + 1e-6
        assert torch.equal(out.label.data, s.label.data)
        orders.add(tuple(np.argsort(levels[1:])))
    assert len(orders) >= 6  # not one monotone map: the tissues change places
    torch.manual_seed(3)
    first = curve(s).image.data
    torch.manual_seed(3)
    assert torch.equal(first, curve(s).image.data)
    assert torch.allclose(intensity_curve(torch.from_numpy(tissues), torch.tensor([0.0, 1.0])),
                          torch.from_numpy(tissues / tissues.max()), atol=1e-6)  # the identity curve


def test_random_contrast_phantoms_train_with_the_contrast_agnostic_recipe_by_default():
    from volgan.data.datalist import Datalist
    from volgan.segcls.train import recipe_default

    random = Datalist([], meta={"volgan": {"config": {"contrast": "random"}}})
    settings = ("augment", "patch_samples", "tumor_weight")
    assert [recipe_default(random, k, None) for k in settings] == ["contrast", 8, 1.0]
    assert recipe_default(Datalist([], meta={"volgan": {"config": {"contrast": "t2"}}}), "augment", "light") == "light"
    assert recipe_default(Datalist([]), "tumor_weight", 5.0) == 5.0  # a user's own datalist
    preset = augmentation("contrast")
    assert {RandomIntensityCurve, RandomFieldOfView} <= {type(t) for t in preset.transforms}


def test_the_random_field_of_view_crops_about_the_centre_and_blanks_the_rest():
    """Each draw keeps a box of 50–100% per axis holding the centre; outside, the image takes its minimum and the
    label background; torch's seed fixes the box."""
    shape = (40, 32, 24)
    image = torch.rand((1, *shape)) + 2.0
    s = tio.Subject(image=tio.ScalarImage(tensor=image), label=tio.LabelMap(tensor=torch.full((1, *shape), 3)))
    boxes = set()
    for seed in range(10):
        torch.manual_seed(seed)
        out = RandomFieldOfView(extent=(0.5, 1.0), margin=0.12)(s)
        kept = out.label.data[0] == 3
        corners = kept.nonzero()
        low, high = corners.min(0).values, corners.max(0).values + 1
        assert int(kept.sum()) == int(torch.prod(high - low))  # one box
        for axis, n in enumerate(shape):
            assert 0.5 * n - 1 <= int(high[axis] - low[axis]) <= n
            assert low[axis] <= round(0.38 * n) and high[axis] >= round(0.62 * n)  # the centre is kept
        assert torch.equal(out.image.data[0][kept], image[0][kept])
        assert bool((out.image.data[0][~kept] == image.min()).all()) and bool((out.label.data[0][~kept] == 0).all())
        boxes.add((*low.tolist(), *high.tolist()))
    assert len(boxes) == 10
    torch.manual_seed(4)
    first = RandomFieldOfView()(s).label.data
    torch.manual_seed(4)
    assert torch.equal(first, RandomFieldOfView()(s).label.data)
    with pytest.raises(ValueError, match="extent"):
        RandomFieldOfView(extent=(0.0, 1.0))
