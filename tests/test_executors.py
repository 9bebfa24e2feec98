"""Where the study's stages run: worker processes pinned to GPUs, a worker killed mid-stage, a simulated two-node
Ray cluster whose custom resources stand in for GPUs, a study folder a node cannot see, Ray missing."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from helpers import STUDY, manifest

from volgan.data.io import read_volume
from volgan.study.executors import LocalExecutor, _ctrl_c_held
from volgan.study.run import _partial_folder
from volgan.study.stages import Stage, StudySettings


def _rebuild_some(study: Path, out: Path, runs: int, gan: bool = False) -> list[str]:
    """A copy of the finished tiny study at ``out`` with ``runs`` spine_segcls runs, their evaluations and checks
    and the report struck from its manifest, so that the next ``volgan study`` builds exactly those again; with
    ``gan`` also the smaller pool's GAN and its synthesis, and the synthetic-quality stage. Returns the runs."""
    shutil.copytree(study, out)
    stages = manifest(out)
    struck = sorted(k for k, v in stages.items() if v["kind"] == "run")[:runs]
    for key in struck:
        suffix = key.removeprefix("run-")
        for gone in (key, f"eval-{suffix}", f"real-{suffix}"):
            stages.pop(gone, None)
    if gan:
        pool = min(int(k.removeprefix("gan-")) for k, v in stages.items() if v["kind"] == "gan")
        for gone in (f"gan-{pool}", f"synth-{pool}", "quality"):
            stages.pop(gone)
    stages.pop("report")
    (out / "manifest.json").write_text(json.dumps({"version": 1, "stages": stages}), encoding="utf-8")
    for name in ("study.json", "report.html"):
        (out / name).unlink()
    return struck


def _same_figures(first: Path, second: Path) -> None:
    a = json.loads((first / "study.json").read_text(encoding="utf-8"))
    b = json.loads((second / "study.json").read_text(encoding="utf-8"))
    assert a["results"] == b["results"] and a["findings"] == b["findings"] and a["real_mri"] == b["real_mri"]
    for quality in (a["quality"], b["quality"]):  # the same but for where the files lie
        quality.pop("real"), quality.pop("synthetic"), quality["label_consistency"].pop("model")
    assert a["quality"] == b["quality"]


def _same_synthetic_volumes(first: Path, second: Path) -> None:
    """Every synthetic image and label map of every synthesis stage of ``first`` equal, voxel for voxel, in
    ``second``."""
    folders = sorted((first / "stages").glob("synth-*/synthetic"))
    assert folders
    for folder in folders:
        files = sorted(p.relative_to(first) for p in folder.rglob("*.nii.gz"))
        assert files
        for name in files:
            assert np.array_equal(read_volume(first / name).array, read_volume(second / name).array), name


def _kill_a_building_worker(proc: subprocess.Popen, out: Path, is_worker) -> int:
    """SIGKILL worker processes (``is_worker(pid, cmdline)``) while a run stage is being built (its hidden partial
    folder exists), until one kill lands mid-stage or the study ends; returns the kills that did."""
    kills = 0
    while proc.poll() is None and not kills:
        if any(p.name.startswith(".run-") for p in (out / "stages").iterdir()):
            for entry in Path("/proc").iterdir():
                if entry.name.isdigit():
                    try:
                        cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                    except OSError:
                        continue
                    if is_worker(int(entry.name), cmdline):
                        os.kill(int(entry.name), signal.SIGKILL)
                        kills += 1
                        break
        time.sleep(0.02)
    return kills


def _ctrl_c_as_in_a_terminal() -> None:
    """In the child before it starts: SIGINT handled by default, as in a terminal, even when this test runs in a
    background job of a shell without job control (which starts it with SIGINT ignored, and Python keeps that)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _task_processes() -> list[int]:
    """Ray workers running a stage now (their process title names the task)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "cmdline").read_bytes().startswith(b"ray::build_task"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def _children(pid: int) -> set[int]:
    found, todo = set(), [pid]
    while todo:
        parent = todo.pop()
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
                if ppid == parent and int(entry.name) not in found:
                    found.add(int(entry.name))
                    todo.append(int(entry.name))
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to find the worker")
def test_a_local_worker_killed_mid_stage_is_rebuilt_with_the_same_result(study, tmp_path):
    out = tmp_path / "study"
    struck = _rebuild_some(study, out, runs=3)
    proc = subprocess.Popen([*STUDY, "--out", str(out), "--jobs", "2"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, encoding="utf-8")
    kills = _kill_a_building_worker(proc, out, lambda pid, cmd: "spawn_main" in cmd and pid in _children(proc.pid))
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    assert kills == 1, "no worker was caught mid-stage"
    assert all(key in manifest(out) for key in struck)
    _same_figures(study, out)


def test_a_ctrl_c_inside_a_call_into_ray_is_raised_when_the_call_returns():
    """Ctrl-C during a wrapped Ray call does not interrupt it (Ray could report the interrupted call as a task's
    error): the ``KeyboardInterrupt`` comes when the call is done, and Python's handler is back."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal (pytest may run with it off)
    finished = []
    try:
        with pytest.raises(KeyboardInterrupt):
            with _ctrl_c_held():
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.2)  # Python runs a handler between bytecodes: an unheld Ctrl-C would be raised here
                finished.append(True)
        assert finished and signal.getsignal(signal.SIGINT) is signal.default_int_handler
        with pytest.raises(KeyboardInterrupt):  # a call that fails after a Ctrl-C: the interruption is reported
            with _ctrl_c_held():
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.2)
                raise RuntimeError("the task was cancelled")
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_gan_an_earlier_attempt_left_half_built_is_trained_afresh(study, tmp_path):
    """A GAN resumes exactly only on the machine and thread count it started with, so a study never resumes one: an
    earlier attempt's checkpoint in the stage's hidden folder (here the finished GAN's, set back one epoch with its
    averaged weights perturbed, which a resumed run would train on from) is discarded, and the synthetic volumes
    equal the uninterrupted study's."""
    import torch

    out = tmp_path / "study"
    stages = manifest(study)
    key = min((k for k, v in stages.items() if v["kind"] == "gan"), key=lambda k: int(k.removeprefix("gan-")))
    _rebuild_some(study, out, runs=0, gan=True)
    partial = _partial_folder(SimpleNamespace(key=key, hash=stages[key]["hash"]), out)  # where the study looks
    (partial / "models").mkdir(parents=True)
    (finished,) = (study / "stages" / key / "models").glob("checkpoint_*.pt")
    saved = torch.load(finished, weights_only=True)
    saved["trainer"]["iteration"] -= saved["trainer"]["epoch_length"]
    checkpoint = partial / "models" / "checkpoint_checkpoint_epoch=1.pt"
    for name in ("label_ema", "image_ema"):
        saved[name] = {k: v + 0.5 if v.is_floating_point() else v for k, v in saved[name].items()}
    torch.save(saved, checkpoint)
    result = subprocess.run([*STUDY, "--out", str(out)], capture_output=True, encoding="utf-8", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not partial.exists() and key in manifest(out)
    _same_synthetic_volumes(study, out)
    _same_figures(study, out)


def test_a_study_resumed_on_a_local_ray_cluster_reports_the_local_figures(study, tmp_path):
    """The fixture's study ran on the local executor; a copy with one run struck, resumed with ``--executor ray``
    and no address (a local Ray cluster of one node, which this command starts), reports the same figures."""
    out = tmp_path / "study"
    struck = _rebuild_some(study, out, runs=1)
    result = subprocess.run([*STUDY, "--out", str(out), "--executor", "ray"], capture_output=True, encoding="utf-8",
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "stage(s) at a time" in result.stderr and ", 1 Ray node(s)" in result.stderr, result.stderr[:3000]
    assert all(key in manifest(out) for key in struck)
    _same_figures(study, out)


def test_local_workers_are_pinned_to_their_gpu(monkeypatch, tmp_path):
    """Two visible GPUs, half a GPU per stage: four workers, two on each device; a worker sees only its own device
    (CUDA_VISIBLE_DEVICES set in the worker before CUDA starts). A stage of no known kind reports its error and where
    it ran."""
    monkeypatch.setattr("volgan.study.executors.visible_gpus", lambda: ["3", "5"])
    executor = LocalExecutor(jobs=2, gpu_share=0.5)
    assert executor.slots == 4
    settings = StudySettings(Path("."), None)
    try:
        for i in range(4):
            executor.submit(Stage(f"probe-{i}", "no-such-kind", "probe", {}, ()), settings, tmp_path / f"probe-{i}")
        seen = [executor.wait() for _ in range(4)]
    finally:
        executor.close()
    assert all(status == "error" and isinstance(value, (KeyError, OSError)) for _, status, value, _ in seen)
    assert sorted(where["gpus"] for *_, where in seen) == ["3", "3", "5", "5"]


@pytest.fixture(scope="module")
def two_node_cluster():
    """A real Ray cluster of two nodes on this machine, one core and one stand-in GPU (a custom resource) each
    (the test that adds a third node stops it before it ends)."""
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "resources": {"stand_in_gpu": 1}})
    cluster.add_node(num_cpus=1, resources={"stand_in_gpu": 1})
    cluster.wait_for_nodes()
    yield cluster
    ray.shutdown()
    cluster.shutdown()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to find the worker")
def test_a_two_node_cluster_places_one_stage_per_gpu_and_retries_a_killed_worker(study, tmp_path, two_node_cluster):
    """Ctrl-C first: every task stops and the finished stages stay; then the same command, with one worker killed
    mid-stage, finishes with the figures of the local executor's study (the fixture's, killed once and resumed):
    the runs, one GAN with its synthetic volumes, and the synthetic-quality report, rebuilt on Ray, equal the local
    ones."""
    out = tmp_path / "study"
    struck = _rebuild_some(study, out, runs=4, gan=True)
    env = {**os.environ, "VOLGAN_RAY_GPU_RESOURCE": "stand_in_gpu"}
    command = [*STUDY, "--out", str(out), "--executor", "ray", "--address", two_node_cluster.address]
    kept = set(manifest(out))
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, encoding="utf-8", env=env,
                            preexec_fn=_ctrl_c_as_in_a_terminal)
    while proc.poll() is None and not any(p.name.startswith(".run-") for p in (out / "stages").iterdir()):
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "finished stages are kept" in err and "Traceback" not in err, err[-4000:]
    assert kept <= set(manifest(out))
    time.sleep(1.0)
    assert not _task_processes(), "a stage's task outlived Ctrl-C"
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, encoding="utf-8", env=env)
    kills = _kill_a_building_worker(proc, out, lambda pid, cmd: cmd.startswith("ray::build_task"))
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    assert "2 stage(s) at a time on 2 stand_in_gpu(s) (1 per stand_in_gpu), 2 Ray node(s)" in err
    assert kills == 1, "no Ray worker was caught mid-stage"
    stages = manifest(out)
    built = [stages[k]["built_on"] for k in stages if k in struck or k.removeprefix("eval-") in
             {s.removeprefix("run-") for s in struck}]
    assert len(built) == 2 * len(struck) and all(b["resources"].get("stand_in_gpu") == 1.0 for b in built)
    assert len({b["node"] for b in built}) == 2, "both nodes' stand-in GPUs were used"
    for node in {b["node"] for b in built}:  # one stage at a time on each stand-in GPU
        spans = sorted((b["start"], b["end"]) for b in built if b["node"] == node)
        assert all(end <= next_start + 0.05 for (_, end), (next_start, _) in zip(spans, spans[1:], strict=False))
    _same_figures(study, out)
    _same_synthetic_volumes(study, out)


def test_a_study_folder_a_node_cannot_see_is_refused(tmp_path, two_node_cluster):
    """A third node whose mount namespace covers the study's parent folder with an empty tmpfs: the folder is on
    no filesystem that node shares, so the study refuses in one line and creates nothing."""
    hidden = tmp_path / "mounted_here_only"
    hidden.mkdir()
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                            f"mount -t tmpfs tmpfs {hidden} && true"], capture_output=True)
    if probe.returncode:
        pytest.skip(f"no private mount namespace here (unshare: {probe.stderr.decode(errors='replace').strip()})")
    ray_bin = Path(sys.executable).with_name("ray")
    node = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c",
                             f"mount -t tmpfs tmpfs {hidden} && exec {ray_bin} start --address "
                             f"{two_node_cluster.address} --num-cpus 1 --block"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        import ray

        ray.init(address=two_node_cluster.address)
        deadline = time.time() + 60
        while sum(n["Alive"] for n in ray.nodes()) < 3 and time.time() < deadline:
            time.sleep(0.5)
        assert sum(n["Alive"] for n in ray.nodes()) == 3, "the third node did not join"
        ray.shutdown()
        out = hidden / "study"
        result = subprocess.run([*STUDY, "--out", str(out), "--executor", "ray", "--address",
                                 two_node_cluster.address], capture_output=True, encoding="utf-8", timeout=300)
    finally:
        node.send_signal(signal.SIGTERM)
        node.wait(timeout=60)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("volgan study: error")]
    assert len(lines) == 1 and "is not shared with 1 of the cluster's 3 Ray node(s)" in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()


def test_ray_missing_is_one_line(tmp_path, monkeypatch, cli):
    monkeypatch.setitem(sys.modules, "ray", None)  # what an environment without the extra gives: ImportError
    result = cli("study", "--profile", "tiny", "--out", tmp_path / "study", "--executor", "ray")
    assert result.code == 2
    assert result.err.strip() == ('volgan study: error: --executor ray needs Ray, which is not installed: '
                                  'pip install "volgan[ray]"')
    assert not (tmp_path / "study").exists()
