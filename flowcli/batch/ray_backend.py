"""The ``--ray`` backend: one Ray actor per worker, each running whole videos.

Its own module because Ray is optional and different: ``ray`` itself is imported
only when a batch uses it.
"""
from __future__ import annotations

import contextlib
import os
import socket
import time
from pathlib import Path
from typing import Any

from ..errors import FlowcliError
from .discovery import VideoItem
from .ledger import _Books, _describe
from .runner import BatchSpec, VideoRunner
from .workers import STOP_TIMEOUT, _failed


class _RayWorker:
    """A Ray actor: loads the model once, runs whole videos (decoding here, writing to shared storage)."""

    def __init__(self, spec: BatchSpec, threads: int, out_root: str):
        self.out_root = out_root
        self.error = None
        try:
            self.runner = VideoRunner(spec, threads)
        except Exception as exc:  # noqa: BLE001
            self.runner = None
            self.error = f"on {socket.gethostname()}: {_describe(exc)}"

    def run(self, item: VideoItem) -> dict:
        if self.runner is None:
            return {"status": "fatal", "error": self.error}
        try:
            return self.runner.run(item, self.out_root)
        except KeyboardInterrupt:
            return {"status": "interrupted", "video": item.path}

    def progress(self) -> int:
        return self.runner.pairs_done if self.runner is not None else 0

    def stop(self) -> None:
        if self.runner is not None:
            self.runner.stop_requested = True


def _ray_init(address: str | None, quiet: bool):
    import logging

    import ray
    if ray.is_initialized():
        return ray, False
    kwargs: dict[str, Any] = {"log_to_driver": True}
    if quiet:
        kwargs["logging_level"] = logging.ERROR
    if address in (None, "", "local") and (address == "local" or not os.environ.get("RAY_ADDRESS")):
        kwargs["include_dashboard"] = False
    ray.init(address=address or None, **kwargs)
    return ray, True


def _run_ray(spec: BatchSpec, todo: list[VideoItem], out_root: Path, address: str | None, workers: int | None,
             threads: int | None, books: _Books) -> tuple[int, int]:
    import importlib.util
    if importlib.util.find_spec("ray") is None:
        raise FlowcliError("--ray needs Ray: pip install 'flowcli[ray]'")
    ray, started = _ray_init(address, books.quiet)
    actors: list = []
    inflight: dict = {}
    try:
        per = threads or 1
        cpus = int(ray.cluster_resources().get("CPU", 1))
        n = max(1, min(workers or max(1, cpus // per), len(todo)))
        opts: dict[str, Any] = {"num_cpus": per, "max_concurrency": 2}
        if spec.device == "cuda":
            opts["num_gpus"] = 1
        actor_cls = ray.remote(**opts)(_RayWorker)
        out = str(out_root)

        def new_actor():
            return actor_cls.remote(spec, per, out)

        actors = [new_actor() for _ in range(n)]
        tasks = list(todo)
        tasks.reverse()

        def dispatch(slot):
            item = tasks.pop()
            books.summary.ran += 1
            inflight[actors[slot].run.remote(item)] = (slot, item)

        for slot in range(n):
            if tasks:
                dispatch(slot)
        last_poll = 0.0
        show = books.bar is not None and not getattr(books.bar, "disable", True)
        while inflight:
            done, _ = ray.wait(list(inflight), num_returns=1, timeout=0.5)
            for ref in done:
                slot, item = inflight.pop(ref)
                try:
                    rec = ray.get(ref)
                except ray.exceptions.RayActorError as exc:
                    rec = _failed(item, spec, f"Ray worker died ({_describe(exc)})")
                    with contextlib.suppress(Exception):
                        ray.kill(actors[slot])
                    actors[slot] = new_actor()
                except ray.exceptions.RayTaskError as exc:
                    rec = _failed(item, spec, _describe(exc))
                if rec.get("status") == "fatal":
                    raise FlowcliError(f"Ray worker could not start {rec['error']}")
                books.result(rec)
                if tasks:
                    dispatch(slot)
            if show and time.monotonic() - last_poll > 1.0 and inflight:
                last_poll = time.monotonic()
                with contextlib.suppress(Exception):
                    books.pairs(sum(ray.get([a.progress.remote() for a in actors], timeout=2)))
        return n, per
    except BaseException:
        # ask the actors to stop after their current pair; record what still finishes
        for a in actors:
            with contextlib.suppress(Exception):
                a.stop.remote()
        deadline = time.monotonic() + STOP_TIMEOUT
        while inflight and time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                done, _ = ray.wait(list(inflight), num_returns=len(inflight), timeout=0.5)
                for ref in done:
                    inflight.pop(ref, None)
                    with contextlib.suppress(Exception):
                        rec = ray.get(ref)
                        if rec.get("status") in ("done", "failed"):
                            books.result(rec)
        raise
    finally:
        for a in actors:
            with contextlib.suppress(Exception):
                ray.kill(a)
        if started:
            with contextlib.suppress(Exception):
                ray.shutdown()
