"""Mixing real and synthetic volumes: exact counts per training set, per epoch and within one volume per batch."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from volgan.data.datalist import read_datalist
from volgan.data.mixing import RatioBatchSampler, mix_cases, mixed_loader
from volgan.transforms import Preprocessing


def pools(phantom_dir):
    cases = read_datalist(phantom_dir).cases
    real = cases[:6]
    synthetic = [dataclasses.replace(c, source="synthetic", name=f"s_{c.name}") for c in cases[6:]]
    return real, synthetic


@pytest.mark.parametrize("share", [0.0, 0.1, 0.3, 0.5, 0.9, 1.0])
def test_fixed_size_mix_is_exact(phantom_dir, share):
    real, synthetic = pools(phantom_dir)
    mix = mix_cases(real, synthetic, synthetic_share=share, size=6, seed=1)
    assert len(mix) == 6 and sum(c.source == "synthetic" for c in mix) == round(6 * share)
    assert mix == mix_cases(real, synthetic, synthetic_share=share, size=6, seed=1)


def test_additive_mix_and_pool_limits(phantom_dir):
    real, synthetic = pools(phantom_dir)
    mix = mix_cases(real, synthetic, extra=4)
    assert sum(c.source == "real" for c in mix) == 6 and sum(c.source == "synthetic" for c in mix) == 4
    with pytest.raises(ValueError, match="pools hold"):
        mix_cases(real, synthetic, extra=7)


@pytest.mark.parametrize("n_real, n_synth, batch", [(10, 3, 4), (7, 7, 2), (9, 0, 4), (0, 5, 2), (13, 4, 5)])
def test_every_batch_keeps_the_ratio_within_one_volume(n_real, n_synth, batch):
    sources = ["real"] * n_real + ["synthetic"] * n_synth
    sampler = RatioBatchSampler(sources, batch, seed=3)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        drawn = [i for b in batches for i in b]
        assert sorted(drawn) == list(range(len(sources)))  # every volume exactly once per epoch
        share = n_synth / len(sources)
        for b in batches:
            synthetic = sum(sources[i] == "synthetic" for i in b)
            assert abs(synthetic - len(b) * share) <= 1


def test_loader_draws_the_counted_volumes_over_an_epoch(phantom_dir):
    real, synthetic = pools(phantom_dir)
    mix = mix_cases(real, synthetic, synthetic_share=0.5, size=6, seed=0)
    loader = mixed_loader(mix, batch_size=2, prep=Preprocessing(patch=(32, 32, 32)))
    counts = {"real": 0, "synthetic": 0}
    for batch in loader:
        sources = list(batch["source"])
        assert sources.count("synthetic") == 1  # 2 × 0.5 per batch, exactly
        for s in sources:
            counts[s] += 1
        assert batch["image"]["data"].shape[1:] == (1, 32, 32, 32)
    assert counts == {"real": 3, "synthetic": 3}
    assert np.isfinite(batch["image"]["data"].numpy()).all()


def test_the_bundles_own_loader_trains_on_every_case_with_the_ratio_in_every_batch(tmp_path, phantom_dir):
    """spine_segcls as the study runs it (val_fraction 0): its train loader draws exactly the datalist's
    training cases each epoch, every batch at the real:synthetic ratio, in a new order each epoch."""
    import json

    from monai.bundle import ConfigWorkflow

    from volgan.data.datalist import write_datalist

    real, synthetic = pools(phantom_dir)
    mix = [dataclasses.replace(c, split="training") for c in mix_cases(real, synthetic, synthetic_share=0.5,
                                                                        size=6, seed=0)]
    write_datalist(mix, tmp_path / "data")
    root = Path(__file__).resolve().parent.parent / "bundles" / "spine_segcls"
    workflow = ConfigWorkflow(config_file=str(root / "configs" / "train.json"), workflow_type="train",
                              meta_file=str(root / "configs" / "metadata.json"), bundle_root=str(tmp_path),
                              dataset_dir=str(tmp_path / "data"), patch=[32, 32, 32], batch_size=2,
                              val_fraction=0.0, progress=False)
    workflow.initialize()
    loader = workflow.parser.get_parsed_content("train#dataloader")
    orders = []
    for _epoch in range(2):
        names = []
        for batch in loader:
            assert list(batch["source"]).count("synthetic") == 1, list(batch["source"])
            names += list(batch["name"])
        assert sorted(names) == sorted(c.name for c in mix)
        orders.append(names)
    assert orders[0] != orders[1]
    assert json.loads(json.dumps([c.name for c in workflow.parser.get_parsed_content("split")[0]])) \
        == [c.name for c in mix]


def test_patch_training_draws_each_case_patch_samples_times_and_names_the_type_each_patch_shows(phantom_dir,
                                                                                               tmp_path):
    """spine_segcls with ``patch_samples``: each epoch holds every training case's patches, of ``sample_patch``
    voxels, through torchio's queue; a patch that shows no tumor voxel is tumor_type 0; the model card and the
    validation inferer take the sampled patch as the network's window."""
    from monai.bundle import ConfigWorkflow

    from volgan.data.datalist import write_datalist
    from volgan.labels import TUMOR_LABEL
    from volgan.segcls.train import WindowedSegClsInferer

    cases = [dataclasses.replace(c, split="training") for c in read_datalist(phantom_dir).cases[:6]]
    write_datalist(cases, tmp_path / "data")
    root = Path(__file__).resolve().parent.parent / "bundles" / "spine_segcls"
    workflow = ConfigWorkflow(config_file=str(root / "configs" / "train.json"), workflow_type="train",
                              meta_file=str(root / "configs" / "metadata.json"), bundle_root=str(tmp_path),
                              dataset_dir=str(tmp_path / "data"), patch=[32, 32, 32], sample_patch=[16, 16, 16],
                              patch_samples=3, batch_size=2, val_fraction=0.0, progress=False)
    workflow.initialize()
    assert workflow.parser.get_parsed_content("prep").patch == (16, 16, 16)
    assert isinstance(workflow.parser.get_parsed_content("validate#inferer"), WindowedSegClsInferer)
    by_name = {c.name: c.tumor_type for c in cases}
    names, types_seen = [], set()
    for batch in workflow.parser.get_parsed_content("train#dataloader"):
        assert tuple(batch["image"]["data"].shape[1:]) == (1, 16, 16, 16)
        for name, label, tumor_type in zip(batch["name"], batch["label"]["data"], batch["tumor_type"], strict=True):
            shows_tumor = bool((label == TUMOR_LABEL).any())
            assert int(tumor_type) == (by_name[name] if shows_tumor else 0)
            types_seen.add((by_name[name] > 0, shows_tumor))
        names += list(batch["name"])
    assert sorted(names) == sorted(c.name for c in cases for _ in range(3))
    assert (True, True) in types_seen  # the label sampler centres some patches on the tumor


def test_patches_of_a_map_that_leaves_the_tumor_unannotated_keep_the_volumes_tumor_type(phantom_dir):
    """A cord-only map of a tumor-bearing volume says nothing of where its tumor lies: its patches keep the volume's
    type; a fully annotated map's tumor-free patches are type 0."""
    from volgan.data.loader import segcls_dataset, subjects_loader
    from volgan.labels import TUMOR_LABEL
    from volgan.transforms import Preprocessing, preprocessing

    case = next(c for c in read_datalist(phantom_dir).cases if c.tumor_type)
    prep = preprocessing(Preprocessing(spacing=(4.0,) * 3, patch=(32,) * 3))
    for annotated, keeps_type in ((None, False), (("cord", "csf"), True)):
        dataset = segcls_dataset([dataclasses.replace(case, annotated=annotated)] * 2, prep)
        seen = set()
        for batch in subjects_loader(dataset, batch_size=1, patch_samples=8, patch=(8, 8, 8)):
            shows_tumor = bool((batch["label"]["data"] == TUMOR_LABEL).any())
            seen.add(shows_tumor)
            assert int(batch["tumor_type"][0]) == (case.tumor_type if keeps_type or shows_tumor else 0)
        assert False in seen, annotated  # some patches show no tumor voxel


def test_the_windowed_validation_inferer_equals_the_network_on_one_window():
    """One window the size of the volume: the network's own outputs (log-probabilities for the head); smaller
    windows give the same shapes."""
    import torch

    from volgan.errors import VolganInputError
    from volgan.segcls.network import SegClsNet
    from volgan.segcls.train import WindowedSegClsInferer, training_window

    torch.manual_seed(0)
    network = SegClsNet(channels=(4, 8)).eval()
    x = torch.randn(2, 1, 16, 16, 16)
    with torch.no_grad():
        seg, cls = network(x)
        whole_seg, whole_cls = WindowedSegClsInferer((16, 16, 16))(x, network)
        part_seg, part_cls = WindowedSegClsInferer((8, 8, 8))(x, network)
    torch.testing.assert_close(whole_seg, seg)
    torch.testing.assert_close(whole_cls, torch.log_softmax(cls, dim=1))
    assert part_seg.shape == seg.shape and part_cls.shape == cls.shape
    assert training_window([64] * 3, 0, [32] * 3) == [64] * 3
    assert training_window([64] * 3, 8, [32] * 3) == [32] * 3
    with pytest.raises(VolganInputError, match="--sample_patch"):
        training_window([32] * 3, 8, [64] * 3)


def test_a_shuffled_pass_is_ordered_by_the_seed_and_the_epoch_alone():
    """Each pass a new order; the order of pass N is the same in a loader that starts at N (a resumed training),
    as MONAI's engines set the epoch before each pass."""
    from volgan.data.loader import EpochShuffle

    uninterrupted = EpochShuffle(range(20), seed=5)
    passes = [list(uninterrupted) for _ in range(3)]
    assert all(sorted(p) == list(range(20)) for p in passes) and passes[0] != passes[1] != passes[2]
    resumed = EpochShuffle(range(20), seed=5)
    resumed.set_epoch(2)
    assert list(resumed) == passes[2] and list(EpochShuffle(range(20), seed=6)) != passes[0]
