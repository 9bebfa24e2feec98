"""Where the study's stages are built: :class:`LocalExecutor` (worker processes on this machine, one per GPU or per
share of a GPU, or per share of the CPU cores) and :class:`RayExecutor` (Ray Core tasks on a Ray cluster, each asking
for a GPU, a fraction of one, or CPU cores). Both run :func:`build_task` on a stage record and the study's settings;
the study's driver (:func:`volgan.study.run.run_study`) keeps the manifest, the progress lines and the rule that a
stage is published whole or not at all.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from volgan.errors import StageLost, VolganInputError

if TYPE_CHECKING:  # imported where used: a local worker must set its thread counts before numpy loads
    from volgan.study.stages import Stage, StudySettings

RAY_GPU_RESOURCE = "VOLGAN_RAY_GPU_RESOURCE"  # environment: the Ray resource a stage asks for instead of "GPU"
RAY_INSTALL = 'pip install "volgan[ray]"'


def empty_folder(folder: Path) -> None:
    """Make ``folder`` an empty folder, removing what an earlier attempt left in it (a stage's hidden partial folder:
    every attempt starts afresh, see :func:`build_task`).

    Parameters
    ----------
    folder : Path
        the folder (created with its parents where missing).
    """
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)


def visible_gpus() -> list[str]:
    """The CUDA devices this process may use, as the names ``CUDA_VISIBLE_DEVICES`` gives them to a worker.

    Returns
    -------
    list[str]
        one entry per device (empty without CUDA).
    """
    import torch

    if not torch.cuda.is_available():
        return []
    listed = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    return listed[:torch.cuda.device_count()] if listed else [str(i) for i in range(torch.cuda.device_count())]


def stages_per_gpu(gpu_share: float) -> int:
    """How many stages share one GPU when each takes ``gpu_share`` of it.

    Parameters
    ----------
    gpu_share : float
        the fraction of a GPU per stage, in (0, 1].

    Returns
    -------
    int
        ``floor(1 / gpu_share)``.
    """
    if not 0 < gpu_share <= 1:
        raise VolganInputError(None, f"--gpu-share must be in (0, 1] (a fraction of a GPU per stage), got {gpu_share}")
    return max(1, int(1 / gpu_share + 1e-9))


def build_task(stage: Stage, settings: StudySettings, partial: str, threads: int | None) -> tuple[str, object, dict]:
    """Build one stage in a worker (a local worker process or a Ray task): the body every executor runs.

    Every stage starts from an empty ``partial`` folder (what a lost attempt left is removed), the GAN too: its
    bundle resumes exactly only on the machine and thread count it started with, and an attempt may continue on
    another worker, node or thread count, whose arithmetic differs, so a study's figures would depend on whether
    and where it was interrupted.

    Parameters
    ----------
    stage : Stage
        the stage record.
    settings : StudySettings
        the study's settings.
    partial : str
        the folder to build in (renamed into place by the driver when the stage is done).
    threads : int | None
        torch threads (None: leave the worker's).

    Returns
    -------
    tuple[str, object, dict]
        ``("done", seconds, where)`` or ``("error", exception, where)``; ``where`` names the host, the Ray node, the
        GPUs and the wall-clock start and end (s since the epoch) of the attempt.
    """
    from volgan.study.build import build_stage
    from volgan.study.stages import Progress

    where = {"host": socket.gethostname(), "pid": os.getpid(), "start": time.time(),
             "gpus": os.environ.get("CUDA_VISIBLE_DEVICES")}
    ray = sys.modules.get("ray")  # loaded in a Ray task; a local worker never imports it just to ask
    if ray is not None and ray.is_initialized():
        context = ray.get_runtime_context()
        where["node"] = context.get_node_id()
        where["resources"] = context.get_assigned_resources()
    try:
        if threads:
            import torch

            torch.set_num_threads(threads)
        folder = Path(partial)
        empty_folder(folder)
        start = time.perf_counter()
        build_stage(stage, folder, settings, Progress(quiet=True))
        result: tuple[str, object] = ("done", time.perf_counter() - start)
    except (Exception, SystemExit) as exc:  # a NaN stop, an input error: raised again by the driver
        result = ("error", exc)
    where["end"] = time.time()
    return (*result, where)

# --------------------------------------------------------------------------------------------------------
# On this machine


THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _local_worker(device: str | None, threads: int | None) -> None:
    """A local worker process: pinned to ``device`` (set before CUDA starts, so that ``cuda:0`` is that GPU), on
    ``threads`` threads for torch and for numpy's BLAS (set before either loads, as Ray sets them for a task of that
    many cores, so a stage computes the same figures under either executor); it leaves Ctrl-C to the driver, which
    stops it, and ends when the driver is gone."""
    import signal
    import threading

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if device is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = device
    if threads:
        os.environ.update({name: str(threads) for name in THREAD_VARIABLES})
    parent = os.getppid()

    def end_with_parent() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=end_with_parent, daemon=True).start()
    if threads:
        import torch

        torch.set_num_threads(threads)


class LocalExecutor:
    """Stages in spawned worker processes on this machine: with GPUs, ``stages_per_gpu(gpu_share)`` workers pinned to
    each visible GPU; without, ``jobs`` workers with an equal share of the torch threads. A stage whose worker dies
    (killed, out of memory) is built again in a fresh worker, ``retries`` times.

    Parameters
    ----------
    jobs : int
        workers on a CPU-only machine.
    gpu_share : float
        the fraction of a GPU per stage (1: one stage per GPU).
    retries : int
        attempts after a lost worker.
    """

    name = "local"

    def __init__(self, jobs: int, gpu_share: float = 1.0, retries: int = 3):
        gpus = visible_gpus()
        if gpus:
            per = stages_per_gpu(gpu_share)
            self._lanes = [(gpu, per, None) for gpu in gpus]
        else:
            self._lanes = [(None, jobs, max(1, (os.cpu_count() or 1) // jobs))]
        self.slots = sum(per for _, per, _ in self._lanes)
        self.retries = retries
        self._pools: list = [None] * len(self._lanes)
        self._running: dict = {}  # future -> (lane, stage, settings, partial, attempt)

    def describe(self) -> str:
        gpus = [gpu for gpu, _, _ in self._lanes if gpu is not None]
        return (f"{self.slots} stage(s) at a time on GPU(s) {', '.join(gpus)}" if gpus
                else f"{self.slots} stage(s) at a time on {os.cpu_count()} CPU core(s)")

    def _pool(self, lane: int):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        if self._pools[lane] is None:
            device, per, threads = self._lanes[lane]
            self._pools[lane] = ProcessPoolExecutor(per, multiprocessing.get_context("spawn"), _local_worker,
                                                    (device, threads))
        return self._pools[lane]

    def _start(self, lane: int, stage: Stage, settings: StudySettings, partial: Path, attempt: int) -> None:
        future = self._pool(lane).submit(build_task, stage, settings, str(partial), None)
        self._running[future] = (lane, stage, settings, partial, attempt)

    def submit(self, stage: Stage, settings: StudySettings, partial: Path) -> None:
        busy = [0] * len(self._lanes)
        for lane, *_ in self._running.values():
            busy[lane] += 1
        self._start(min(range(len(self._lanes)), key=lambda i: busy[i] / self._lanes[i][1]), stage, settings,
                    partial, 0)

    def wait(self) -> tuple[str, str, object, dict]:
        """The next stage to finish: (key, "done" or "error", seconds or exception, where)."""
        from concurrent.futures import FIRST_COMPLETED
        from concurrent.futures import wait as wait_futures
        from concurrent.futures.process import BrokenProcessPool

        while True:
            done, _ = wait_futures(list(self._running), timeout=1.0, return_when=FIRST_COMPLETED)
            for future in done:
                lane, stage, settings, partial, attempt = self._running.pop(future)
                try:
                    status, value, where = future.result()
                except BrokenProcessPool:  # a worker of this lane died: its stages start again in a fresh pool
                    if attempt >= self.retries:
                        raise StageLost(f"stage {stage.key}: its worker died in each of {attempt + 1} attempts") \
                            from None
                    if self._pools[lane] is not None and getattr(self._pools[lane], "_broken", False):
                        self._pools[lane].shutdown(wait=False, cancel_futures=True)
                        self._pools[lane] = None
                    self._start(lane, stage, settings, partial, attempt + 1)
                    continue
                return stage.key, status, value, where

    def stop(self) -> None:
        for pool in self._pools:
            if pool is not None:
                for process in list(getattr(pool, "_processes", {}).values()):  # shutdown() waits for running work
                    process.terminate()
                pool.shutdown(wait=False, cancel_futures=True)
        self._running.clear()

    def close(self) -> None:
        for pool in self._pools:
            if pool is not None:
                pool.shutdown()

# --------------------------------------------------------------------------------------------------------
# On a Ray cluster


def _ray():
    try:
        import ray
    except ImportError:
        raise VolganInputError(None, f"--executor ray needs Ray, which is not installed: {RAY_INSTALL}") from None
    return ray


@contextlib.contextmanager
def _ctrl_c_held():
    """Hold a Ctrl-C that arrives inside a call into Ray and raise it as ``KeyboardInterrupt`` when the call returns:
    raised inside Ray's own code, it could come out as an error of a stage's task instead (a study interrupted on Ray
    then exited 1, not 130: once in five runs of the two-node test); a call that fails after a Ctrl-C raises the
    ``KeyboardInterrupt`` too. Only where Ctrl-C raises ``KeyboardInterrupt`` (the main thread, Python's default
    handler); each call it wraps returns within a second or so."""
    if threading.current_thread() is not threading.main_thread() \
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    except Exception:
        if received:  # the call failed after a Ctrl-C: report the interruption, as the user asked
            raise KeyboardInterrupt from None
        raise
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


def _see_marker(marker: str, token: str, node: str) -> bool:
    """On one node: whether the driver's ``marker`` file holds ``token``; if so, write ``marker.<node>`` back."""
    path = Path(marker)
    try:
        if path.read_text(encoding="utf-8") != token:
            return False
        Path(f"{marker}.{node}").write_text(token, encoding="utf-8")
        return True
    except OSError:
        return False


class RayExecutor:
    """Stages as Ray Core tasks: each asks for ``gpu_share`` of a GPU (of the resource named by
    ``$VOLGAN_RAY_GPU_RESOURCE``, default ``GPU``) where the cluster has one, else ``cpus`` cores. A task whose worker
    or node is lost is retried (``retries`` times) on any node; the study's folder must be on a filesystem every node
    mounts, which :meth:`check_shared` verifies.

    Parameters
    ----------
    address : str | None
        a running cluster's address (``auto``: the one this machine belongs to); None starts a local one.
    gpu_share : float
        the fraction of a GPU per stage.
    cpus : int | None
        cores per stage on a cluster without GPUs (None: half the cores of its smallest node, at least 1).
    retries : int
        attempts after a lost worker or node.
    """

    name = "ray"

    def __init__(self, address: str | None = None, gpu_share: float = 1.0, cpus: int | None = None,
                 retries: int = 3):
        import logging

        ray = self._ray = _ray()
        per = stages_per_gpu(gpu_share)
        self._started = not ray.is_initialized()
        if self._started:
            try:
                ray.init(address=address, include_dashboard=False, log_to_driver=False,
                         logging_level=logging.WARNING, configure_logging=False)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise VolganInputError(None, f"--address {address}: no Ray cluster there ({exc})".split("\n")[0]) \
                    from None
        self._nodes = [n for n in ray.nodes() if n.get("Alive")]
        resource = os.environ.get(RAY_GPU_RESOURCE, "GPU")
        gpus = ray.cluster_resources().get(resource, 0.0)
        smallest = min(n["Resources"].get("CPU", 1.0) for n in self._nodes)
        if gpus:
            self._options = {"num_cpus": 1, "resources": {resource: 1.0 / per}} if resource != "GPU" \
                else {"num_cpus": 1, "num_gpus": 1.0 / per}
            self.slots = int(sum(n["Resources"].get(resource, 0.0) for n in self._nodes) + 1e-9) * per
            self._threads = None
            self._what = f"{self.slots} stage(s) at a time on {gpus:g} {resource}(s) ({per} per {resource})"
        else:
            cores = cpus or max(1, int(smallest) // 2)
            self._options = {"num_cpus": cores}
            self.slots = max(1, sum(int(n["Resources"].get("CPU", 0.0)) // cores for n in self._nodes))
            self._threads = cores
            self._what = f"{self.slots} stage(s) at a time of {cores} core(s) each"
        self._what += f", {len(self._nodes)} Ray node(s)"
        self._task = ray.remote(build_task).options(max_retries=retries, **self._options)
        self._running: dict = {}

    def describe(self) -> str:
        return self._what

    def check_shared(self, out: Path) -> None:
        """Refuse, in one line, a study folder that a node of the cluster cannot read and write: a task on each node
        reads a marker this process wrote there and writes one back, which this process reads.

        Parameters
        ----------
        out : Path
            the study folder (it exists).
        """
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        ray = self._ray
        token = uuid.uuid4().hex
        marker = out / f".volgan-nodes-{token[:12]}"
        marker.write_text(token, encoding="utf-8")
        probe = ray.remote(_see_marker)
        try:
            pending = {node["NodeID"]: probe.options(num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(
                node["NodeID"], soft=False)).remote(str(marker), token, node["NodeID"]) for node in self._nodes}
            blind = []
            for node in self._nodes:
                seen = ray.get(pending[node["NodeID"]], timeout=120)
                back = Path(f"{marker}.{node['NodeID']}")
                if not (seen and back.is_file() and back.read_text(encoding="utf-8") == token):
                    blind.append(node.get("NodeManagerAddress", node["NodeID"]))
        finally:
            for path in out.glob(f"{marker.name}*"):
                path.unlink(missing_ok=True)
        if blind:
            raise VolganInputError(out, f"is not shared with {len(blind)} of the cluster's {len(self._nodes)} Ray "
                                        f"node(s) ({', '.join(sorted(blind))}): --out must be on a filesystem every "
                                        "node mounts at the same path")

    def submit(self, stage: Stage, settings: StudySettings, partial: Path) -> None:
        with _ctrl_c_held():
            self._running[self._task.remote(stage, settings, str(partial), self._threads)] = stage.key

    def wait(self) -> tuple[str, str, object, dict]:
        """The next stage to finish: (key, "done" or "error", seconds or exception, where)."""
        ray = self._ray
        ready: list = []
        while not ready:
            with _ctrl_c_held():
                ready, _ = ray.wait(list(self._running), num_returns=1, timeout=1.0)
        key = self._running.pop(ready[0])
        try:
            with _ctrl_c_held():
                status, value, where = ray.get(ready[0])
        except ray.exceptions.RayError as exc:  # retries spent: the worker or its node kept dying
            raise StageLost(f"stage {key}: its worker was lost on every attempt "
                            f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None
        return key, status, value, where

    def stop(self) -> None:
        """End the stages in flight. A connection this executor opened is shut down, and the tasks it owns end with
        it (Ray kills the workers of a task whose owner is gone), without ``ray.cancel``: a forced cancel that races a
        task's completion crashed the driver inside Ray 2.60's task manager (``An unexpected system state has
        occurred``, exit 1, in one of seven interrupted two-node studies). A connection someone else opened stays up,
        so its tasks are cancelled."""
        if not self._started:
            for ref in list(self._running):
                self._ray.cancel(ref, force=True)
        self._running.clear()
        self.close()

    def close(self) -> None:
        if self._started and self._ray.is_initialized():
            self._ray.shutdown()


def make_executor(name: str, jobs: int, gpu_share: float = 1.0, address: str | None = None):
    """The executor ``volgan study --executor NAME`` asked for.

    Parameters
    ----------
    name : str
        ``"local"`` or ``"ray"``.
    jobs : int
        workers of the local executor on a CPU-only machine (1: the driver builds every stage itself).
    gpu_share : float
        the fraction of a GPU per stage.
    address : str | None
        the Ray cluster's address (None: a local one).

    Returns
    -------
    LocalExecutor | RayExecutor | None
        None where the driver builds every stage itself (local, one at a time, no GPU sharing).
    """
    if name == "ray":
        return RayExecutor(address, gpu_share)
    if name != "local":
        raise VolganInputError(None, f"--executor must be local or ray, got {name}")
    if address is not None:
        raise VolganInputError(None, "--address is for --executor ray")
    executor = LocalExecutor(jobs, gpu_share)
    return executor if executor.slots > 1 else None
