"""Where units of work run: in this process one after the other (``local``), or on Ray
(``ray``: a local Ray started on the fly, or an existing cluster at ``ray_address``).

Two shapes, the ones Ray recommends for them:

- :func:`map_tasks`: independent jobs as Ray tasks (fold jobs: one fold of one seed each),
  one GPU per task where the cluster has GPUs;
- :func:`map_actors`: jobs streamed through an actor pool with Ray Data's ``map_batches``
  (plate jobs: each actor loads the model once and profiles plate after plate).

Results come back in the order of the jobs. Every job sets the same number of torch threads
as the driver would use, so numbers computed on Ray equal the local ones exactly. Ray is an
optional dependency (``pip install 'cellmorph[ray]'``); the run folder and tile cache must lie
on storage every node sees.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import socket
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from cellmorph.errors import CellmorphError
from cellmorph.log import get_logger

log = get_logger(__name__)
J = TypeVar("J")
R = TypeVar("R")


def ray_module():
    """The ``ray`` package, or a clear error saying how to get it."""
    try:
        import ray
    except ImportError:
        raise CellmorphError("executor: ray needs Ray: pip install 'cellmorph[ray]'") from None
    return ray


def check_ray(address: str | None) -> None:
    """Check, before a run creates anything, that Ray is installed and that something answers
    at ``address`` (a cluster's ``HOST:PORT`` or ``ray://HOST:PORT``) within seconds; Ray's own
    connection attempts retry for minutes."""
    ray_module()
    if not address or address == "auto":  # a local Ray, or the one `ray start` runs here
        return
    client = address.startswith("ray://")
    if client and importlib.util.find_spec("grpc") is None:
        raise CellmorphError(f"ray_address {address}: a ray:// address needs Ray's client: "
                             "pip install 'ray[client]' (or use the cluster's HOST:6379 "
                             "address on one of its nodes)")
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise CellmorphError(f"ray_address {address!r}: write it as HOST:PORT, ray://HOST:PORT "
                             "or auto")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as exc:
        raise CellmorphError(
            f"nothing answered at ray_address {address} ({exc.strerror or exc}); start a "
            "cluster there with `ray start --head` (its address is then HOST:6379), or leave "
            "ray_address unset to start a local Ray") from None


def connect(address: str | None = None, *, num_cpus: int | None = None) -> Any:
    """Connect to the Ray cluster at ``address`` (None: start a local one; 'auto': the one
    `ray start` runs on this machine)."""
    ray = ray_module()
    if ray.is_initialized():
        return ray
    kwargs: dict[str, Any] = {"ignore_reinit_error": True, "include_dashboard": False,
                              "log_to_driver": False, "configure_logging": False}
    if address:
        kwargs["address"] = address
    else:
        kwargs["num_cpus"] = num_cpus or os.cpu_count()
    try:
        ray.init(**kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise CellmorphError(f"cannot reach Ray at {address or 'a new local cluster'} ({exc}); "
                             "check ray_address (e.g. auto after `ray start --head`, or "
                             "ray://HOST:10001)") from None
    log.info("Ray: %s", ray.cluster_resources())
    return ray


def _cluster_cpus(ray) -> int:
    nodes = [n.get("Resources", {}).get("CPU", 0) for n in ray.nodes() if n.get("Alive")]
    return int(max(nodes)) if nodes else 1


def task_resources(threads: int, use_gpu: bool, ray) -> dict[str, float]:
    """What one job asks Ray for: its threads (capped by the largest node) and a GPU."""
    return {"num_cpus": float(min(threads, _cluster_cpus(ray))),
            "num_gpus": 1.0 if use_gpu else 0.0}


def map_tasks(fn: Callable[[J], R], jobs: Sequence[J], *, threads: int, use_gpu: bool,
              address: str | None = None) -> list[R]:
    """``[fn(job) for job in jobs]``, each call a Ray task."""
    if not jobs:
        return []
    ray = connect(address, num_cpus=threads if address is None else None)
    remote = ray.remote(**task_resources(threads, use_gpu, ray))(_with_threads)
    refs = [remote.remote(fn, job, threads) for job in jobs]
    try:
        return ray.get(refs)
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, CellmorphError):  # bad input found on a worker: one line
            raise CellmorphError(str(exc.cause)) from None
        raise


def _with_threads(fn: Callable[[J], R], job: J, threads: int) -> R:
    import torch

    torch.set_num_threads(threads)
    return fn(job)


def map_actors(worker: type, jobs: Sequence[dict], *, constructor: dict, threads: int,
               use_gpu: bool, address: str | None = None, actors: int | None = None
               ) -> list[dict]:
    """Stream ``jobs`` (dicts of plain values) through a pool of ``worker`` actors with Ray
    Data's ``map_batches``; each actor is built once with ``constructor`` and called with
    batches of one job. Returns one result row per job, in job order."""
    if not jobs:
        return []
    ray = connect(address, num_cpus=threads if address is None else None)
    from ray import data as ray_data

    resources = task_resources(threads, use_gpu, ray)
    total = ray.cluster_resources()
    by_cpu = int(total.get("CPU", 1) // max(resources["num_cpus"], 1))
    by_gpu = int(total.get("GPU", 0)) if use_gpu else by_cpu
    pool = max(1, min(actors or len(jobs), by_cpu, by_gpu, len(jobs)))
    ctx = ray_data.DataContext.get_current()
    ctx.enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # its own progress chatter
    # ... and its warning that progress bars are off, which they are on purpose (the run's
    # own log says how far it got).
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
    rows = [{**job, "_order": i} for i, job in enumerate(jobs)]
    dataset = ray_data.from_items(rows, override_num_blocks=len(rows)).map_batches(
        worker, batch_size=1, batch_format="pandas",
        compute=ray_data.ActorPoolStrategy(size=pool),
        fn_constructor_kwargs={**constructor, "threads": threads}, **resources)
    try:
        out = dataset.take_all()
    except Exception as exc:  # Ray Data wraps worker errors in its own types
        message = str(exc)
        marker = "CellmorphError: "
        if marker in message:
            raise CellmorphError(message.split(marker, 1)[1].splitlines()[0]) from None
        raise
    return sorted(out, key=lambda r: r["_order"])
