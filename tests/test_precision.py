"""Training precision: spine_cgan and spine_segcls train to finite weights in bfloat16 at 16³ and 32³ and in
float32 at 16³, bfloat16 on both of oneDNN's kernel paths (AMX, and AVX512-BF16 without AMX, which
``ONEDNN_MAX_CPU_ISA`` selects on a CPU that has both); a non-finite loss stops training at once and keeps the last
finite checkpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from volgan.data.phantom import PhantomConfig, make_dataset
from volgan.errors import NonFiniteTraining
from volgan.training import onednn_bf16

ROOT = Path(__file__).resolve().parent.parent
CGAN = ROOT / "bundles" / "spine_cgan"
AVX512_ONLY = {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16"}  # oneDNN's bf16 kernels without AMX


def python(code: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, encoding="utf-8",
                          errors="replace", timeout=timeout, env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


@pytest.mark.skipif(not onednn_bf16(), reason="oneDNN runs no bfloat16 on this CPU")
def test_small_input_convolutions_leave_bf16_and_their_gradients_stay_finite():
    """The kernel case behind the 16³ NaN: a 3³ convolution on a 2³ map, with freed memory full of NaN."""
    proc = python("""
        import torch, torch.nn.functional as F
        from volgan.training import SmallInputFp32Conv3d, fp32_small_convs
        torch.manual_seed(0)
        conv = torch.nn.utils.spectral_norm(torch.nn.Conv3d(16, 8, 3, padding=1))
        keys = list(conv.state_dict())
        fp32_small_convs(torch.nn.Sequential(conv))
        assert type(conv) is SmallInputFp32Conv3d and list(conv.state_dict()) == keys
        x = torch.randn(4, 16, 2, 2, 2)
        for _ in range(10):
            junk = [torch.full((1 << 16,), float("nan")) for _ in range(200)]; del junk
            conv.zero_grad()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                y = conv(x)
            assert y.dtype == torch.float32  # left autocast: the input is smaller than the kernel
            (y.float() * torch.randn_like(y)).sum().backward()
            assert torch.isfinite(conv.weight_orig.grad).all(), "NaN weight gradient"
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert conv(torch.randn(1, 16, 4, 4, 4)).dtype == torch.bfloat16  # large enough: bf16 as before
        print("ok")
    """, AVX512_ONLY)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-3000:]


@pytest.fixture(scope="module")
def real_data(tmp_path_factory) -> dict[int, Path]:
    folders = {}
    for size in (16, 32):
        out = tmp_path_factory.mktemp(f"real{size}") / "data"
        make_dataset(out, 8, PhantomConfig(size=(size,) * 3, spacing=(48 / size,) * 3), seed=5, test_fraction=0.0)
        folders[size] = out
    return folders


# float32 at 16³ (the control beside bf16 where its hazard lives; every other training test runs float32 at 32³
# on a CPU without native bfloat16), bfloat16 on both kernel paths at 16³ and 32³
PRECISIONS = [pytest.param("false", {}, 16, id="fp32-16")] + [
    pytest.param("true", env, size, id=f"{name}-{size}") for size in (16, 32)
    for name, env in (("bf16", {}), ("bf16-avx512", AVX512_ONLY))]


@pytest.mark.parametrize("amp, env, size", PRECISIONS)
def test_gan_trains_to_finite_weights(tmp_path, real_data, size, amp, env):
    if amp == "true" and not onednn_bf16():
        pytest.skip("oneDNN runs no bfloat16 on this CPU")
    epochs = 6 if size == 16 else 2
    proc = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/train.json", "--bundle_root",
         str(tmp_path), "--dataset_dir", str(real_data[size]), "--size", str(size), "--spacing",
         f"[{48 / size},{48 / size},{48 / size}]", "--base", "4", "--batch_size", "4", "--max_epochs", str(epochs),
         "--amp", amp, "--progress", "false"], cwd=CGAN, capture_output=True, encoding="utf-8", errors="replace",
        timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1", **env})
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = torch.load(tmp_path / "models" / "generator.pt", weights_only=True)
    assert state["epoch"] == epochs
    for key in ("label_generator", "image_generator"):
        assert all(torch.isfinite(v).all() for v in state[key].values() if v.is_floating_point()), key


def test_a_nan_stops_training_at_once_and_keeps_the_last_finite_checkpoint(tmp_path, real_data):
    from ignite.engine import Events
    from monai.bundle import ConfigWorkflow

    from volgan.gan.checkpoints import checkpoints

    workflow = ConfigWorkflow(config_file=str(CGAN / "configs" / "train.json"), workflow_type="train",
                              meta_file=str(CGAN / "configs" / "metadata.json"), bundle_root=str(tmp_path),
                              dataset_dir=str(real_data[16]), size=16, spacing=[3.0, 3.0, 3.0], base=4, batch_size=4,
                              max_epochs=4, amp="false", progress=False)
    workflow.initialize()
    trainer = workflow.parser.get_parsed_content("train#trainer")

    def poison(_engine) -> None:  # a weight goes NaN in the second epoch, as a diverging run's would
        with torch.no_grad():
            trainer.image_generator.out[1].weight.fill_(float("nan"))

    trainer.add_event_handler(Events.EPOCH_STARTED(once=2), poison)
    with pytest.raises(NonFiniteTraining) as stopped:
        workflow.run()
    message = stopped.value.message
    assert message.startswith("spine_cgan: training stopped at epoch 2") and "d_loss is not finite" in message
    assert "\n" not in message and "last finite checkpoint is kept" in message
    assert [epoch for epoch, _ in checkpoints(tmp_path / "models")] == [1]
    saved = torch.load(checkpoints(tmp_path / "models")[0][1], weights_only=False)
    for name in ("label_discriminator", "image_discriminator", "label_generator", "image_generator"):
        assert all(torch.isfinite(v).all() for v in saved[name].values() if v.is_floating_point()), name
    generator = torch.load(tmp_path / "models" / "generator.pt", weights_only=True)
    assert generator["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in generator["image_generator"].values() if v.is_floating_point())


def test_the_bundle_command_ends_a_nan_run_with_one_line(tmp_path, real_data):
    proc = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/train.json", "--bundle_root",
         str(tmp_path), "--dataset_dir", str(real_data[16]), "--size", "16", "--spacing", "[3,3,3]", "--base", "4",
         "--batch_size", "4", "--max_epochs", "2", "--g_lr", "1e38", "--d_lr", "1e38", "--progress", "false"],
        cwd=CGAN, capture_output=True, encoding="utf-8", errors="replace", timeout=300)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]  # learning rates of 1e38 overflow a loss term at once
    assert last.startswith("spine_cgan: training stopped at epoch 1, iteration 1: ")
    assert last.endswith("is not finite (NaN or Inf); no checkpoint was written")
    assert not list((tmp_path / "models").glob("*.pt"))


def test_checkpoint_savers_refuse_non_finite_weights(tmp_path):
    from ignite.handlers import DiskSaver

    from volgan.training import ReplaceAfterSave

    saver = ReplaceAfterSave(DiskSaver(str(tmp_path), require_empty=False))
    saver({"model": {"w": torch.ones(3)}}, "good.pt")
    with pytest.raises(NonFiniteTraining, match="bad.pt: not written"):
        saver({"model": {"w": torch.tensor([1.0, float("inf")])}}, "bad.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.pt"]


def test_auto_precision_is_bf16_only_where_shown_to_train(monkeypatch):
    from volgan import training
    from volgan.training import bf16_autocast, native_bf16_cpu

    assert bf16_autocast("auto", "cpu") is native_bf16_cpu()
    assert not native_bf16_cpu() or onednn_bf16()
    # oneDNN says yes on an AVX512 CPU without AVX512-BF16 or AMX (it emulates bfloat16, 2.7–2.9× slower): fp32
    monkeypatch.setattr(training.torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    for avx512_bf16, amx, expected in ((False, False, False), (True, False, True), (False, True, True)):
        monkeypatch.setattr(training.torch.cpu, "_is_avx512_bf16_supported", lambda value=avx512_bf16: value)
        monkeypatch.setattr(training.torch.cpu, "_is_amx_tile_supported", lambda value=amx: value)
        assert bf16_autocast("auto", "cpu") is expected and native_bf16_cpu() is expected
    monkeypatch.setattr(training.torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    assert bf16_autocast("auto", "cpu") is False  # no bfloat16 kernels at all
    assert bf16_autocast("auto", "cuda") is False  # not yet shown on a GPU: fp32 unless asked
    assert bf16_autocast("true", "cuda") is True and bf16_autocast("false", "cpu") is False


SEGCLS = ROOT / "bundles" / "spine_segcls"


@pytest.mark.parametrize("amp, env, size", PRECISIONS)
def test_segcls_trains_to_finite_weights(tmp_path, real_data, size, amp, env):
    """spine_segcls under its own bf16 autocast (train#inferer); at 16³ its bottleneck is 2³ under a 3³ kernel."""
    if amp == "true" and not onednn_bf16():
        pytest.skip("oneDNN runs no bfloat16 on this CPU")
    proc = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/train.json", "--bundle_root",
         str(tmp_path), "--dataset_dir", str(real_data[size]), "--spacing", f"[{48 / size},{48 / size},{48 / size}]",
         "--patch", f"[{size},{size},{size}]", "--channels", "[4,8,16,32]", "--val_fraction", "0", "--max_epochs",
         "3", "--amp", amp, "--progress", "false"], cwd=SEGCLS, capture_output=True, encoding="utf-8",
        errors="replace", timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1", **env})
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = torch.load(tmp_path / "models" / "model_final.pt", weights_only=True)
    state = state.get("model", state)
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    card = json.loads((tmp_path / "models" / "model.json").read_text(encoding="utf-8"))
    assert card["training_arithmetic"] == ("bf16" if amp == "true" else "fp32")


def test_autocast_inferer_runs_bf16_and_returns_fp32():
    from volgan.segcls.network import SegClsNet
    from volgan.training import AutocastInferer

    network = SegClsNet(channels=(4, 8, 16, 32))
    x = torch.randn(1, 1, 16, 16, 16)
    seen = []
    network.seg_head.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    seg, cls = AutocastInferer(enabled=True)(x, network)
    assert seen == [torch.bfloat16] and seg.dtype == cls.dtype == torch.float32
    seg, cls = AutocastInferer(enabled=False)(x, network)
    assert seen[-1] == torch.float32


def test_tumor_weight_and_batch_dice():
    from volgan.segcls.train import SegClsLoss

    torch.manual_seed(0)
    seg = torch.randn(2, 6, 8, 8, 8)
    cls = torch.randn(2, 4)
    label = torch.zeros(2, 1, 8, 8, 8, dtype=torch.long)
    label[0, 0, 2:5, 2:5, 2:5] = 5  # the second volume has no tumor
    target = (label, torch.tensor([1, 0]))
    plain = SegClsLoss()((seg, cls), target)
    assert SegClsLoss(tumor_weight=5.0)((seg, cls), target) > plain
    # per-volume Dice scores the tumor-free volume's empty tumor map on its own; batch Dice pools it
    assert SegClsLoss(batch_dice=True)((seg, cls), target) != pytest.approx(float(plain))
