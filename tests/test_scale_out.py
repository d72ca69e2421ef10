"""Two orchestrators in separate processes, one simulator, one Redis (the real server).

Each worker (tests/_scale_worker.py) is its own process with its own event loop. They share
cached answers, stay together under one rate limit, send an identical request once, and keep
answering when their Redis is killed mid-run (a private redis-server, never the shared one).
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from claude_force._shared_limits import organisation
from claude_force.testing import Fault, RateLimits, Simulator

from ._support import scratch_namespace
from .conftest import API_KEY
from .test_cache_redis import URL, server  # noqa: F401  (the fixture)


@pytest.fixture
def namespace(server: redis.Redis) -> Iterator[str]:  # noqa: F811
    yield from scratch_namespace(server)


ROOT = Path(__file__).resolve().parent.parent
SECRET = "scale-out-secret-0123456789abcdef"
AGENT = "code-reviewer"


class Worker:
    """One orchestrator process; :meth:`ask` sends a command and reads its one-line answer."""

    def __init__(self, home: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ANTHROPIC_")}
        env.update(
            XDG_CACHE_HOME=str(home / "cache"),
            XDG_CONFIG_HOME=str(home / "config"),
            XDG_DATA_HOME=str(home / "data"),
            CLAUDE_CACHE_SECRET=SECRET,
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests._scale_worker"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def send(self, cmd: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()

    def read(self, timeout: float = 60.0) -> dict[str, Any]:
        assert self.proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            if not sel.select(timeout):
                raise TimeoutError(f"worker gave no answer within {timeout}s")
        line = self.proc.stdout.readline()
        assert line, f"worker exited with {self.proc.wait()}"
        answer: dict[str, Any] = json.loads(line)
        return answer

    def ask(self, cmd: dict[str, Any], timeout: float = 60.0) -> dict[str, Any]:
        self.send(cmd)
        return self.read(timeout)

    def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Worker, Worker]]:
    pair = (
        Worker(tmp_path_factory.mktemp("worker-a")),
        Worker(tmp_path_factory.mktemp("worker-b")),
    )
    yield pair
    for worker in pair:
        worker.stop()


def open_both(
    pair: tuple[Worker, Worker],
    project: Path,
    tmp: Path,
    *,
    base_url: str,
    namespace: str,
    redis_url: str = URL,
    api_key: str = API_KEY,
    **options: Any,
) -> None:
    for name, worker in zip("ab", pair, strict=True):
        worker.send(
            {
                "op": "open",
                "config": str(project),
                "options": {
                    "api_key": api_key,
                    "base_url": base_url,
                    "redis_url": redis_url,
                    "enable_tracking": False,
                    # Recall of earlier tasks would make B's requests differ from A's.
                    "enable_memory": False,
                    **options,
                },
                "cache": {
                    "cache_dir": str(tmp / f"cache-{name}"),
                    "redis_url": redis_url,
                    "namespace": namespace,
                    "cache_secret": SECRET,
                },
            }
        )
    for worker in pair:
        assert worker.read() == {"opened": True}


def close_both(pair: tuple[Worker, Worker]) -> None:
    for worker in pair:
        assert worker.ask({"op": "close"}) == {"closed": True}


def tasks(n: int, chars: int = 40) -> list[list[str]]:
    tag = uuid.uuid4().hex
    return [[AGENT, f"{tag} {i} " + "x" * chars] for i in range(n)]


def test_a_process_hits_what_another_stored(
    workers: tuple[Worker, Worker], project: Path, sim: Simulator, namespace: str, tmp_path: Path
) -> None:
    a, b = workers
    open_both(workers, project, tmp_path, base_url=sim.base_url, namespace=namespace)
    try:
        work = tasks(3)
        first = a.ask({"op": "run", "tasks": work})
        second = b.ask({"op": "run", "tasks": work})
    finally:
        close_both(workers)
    assert [(r["success"], r["cached"]) for r in first["results"]] == [(True, False)] * 3
    assert [(r["success"], r["tier"]) for r in second["results"]] == [(True, "redis")] * 3
    assert len(sim.message_requests) == 3  # B sent nothing


def test_an_identical_request_in_flight_elsewhere_is_sent_once(
    workers: tuple[Worker, Worker], project: Path, namespace: str, tmp_path: Path
) -> None:
    a, b = workers
    with Simulator() as slow:
        open_both(workers, project, tmp_path, base_url=slow.base_url, namespace=namespace)
        try:
            # A's request is held upstream until B is seen waiting for it.
            slow.script(Fault.hang())
            work = tasks(1)
            a.ask({"op": "start", "tasks": work})
            assert slow.wait_for_in_flight(1, timeout=30)
            b.ask({"op": "start", "tasks": work})
            for _ in range(3000):  # bounded polling of B's own counts
                if b.ask({"op": "stats"})["flight"]["waited"] == 1:
                    break
            else:
                raise AssertionError("B never waited for A's request")
            slow.release_hangs()
            second = b.ask({"op": "collect"})
            first = a.ask({"op": "collect"})
        finally:
            slow.release_hangs()
            close_both(workers)
        upstream = len(slow.message_requests)
    assert first["results"][0]["success"] and not first["results"][0]["cached"]
    assert second["results"][0]["success"] and second["results"][0]["tier"] == "redis"
    assert upstream == 1
    assert first["flight"]["led"] == 1
    assert second["flight"]["waited"] == 1 and second["flight"]["answered_elsewhere"] == 1


def test_two_processes_stay_under_one_limit_together(
    workers: tuple[Worker, Worker],
    project: Path,
    namespace: str,
    tmp_path: Path,
    server: redis.Redis,  # noqa: F811
) -> None:
    # 42 requests of about 2,130 input tokens per process: 1.05 times the per-minute limit,
    # so the last 5% can only go out as the bucket refills (about 3 s), whoever sends them.
    limit = 170_000
    limits = RateLimits(input_tokens_per_minute=limit, requests_per_minute=10_000)
    api_key = f"sk-test-{uuid.uuid4().hex}"  # its own organisation: its own shared buckets
    with Simulator(rate_limits=limits) as limited:
        open_both(
            workers,
            project,
            tmp_path,
            base_url=limited.base_url,
            namespace=namespace,
            api_key=api_key,
            enable_cache=False,
        )
        try:
            started = time.monotonic()
            for worker in workers:
                worker.send({"op": "run", "tasks": tasks(42, chars=6000)})
            answers = [worker.read(timeout=120) for worker in workers]
            elapsed = time.monotonic() - started
        finally:
            close_both(workers)
            org = organisation(api_key, limited.base_url)
            names = list(server.scan_iter(match=f"claude-force:limits:{org}:*"))
            assert names  # the buckets were shared through Redis
            server.delete(*names)
        stats: dict[str, Any] = dict(limited.rate_limit_stats)
    results = [r for answer in answers for r in answer["results"]]
    assert len(results) == 84 and all(r["success"] for r in results)
    charged = int(stats["input_tokens"])
    assert charged > limit  # more than one minute's allowance went through...
    assert elapsed >= 60 * (charged - limit) / limit * 0.9  # ...only as fast as it refilled
    assert int(stats["rejected"]) <= 1, stats  # and almost never a 429


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def private_redis() -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """A redis-server of this test's own, so that killing it disturbs no other test."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed; the outage test starts and kills its own")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    try:
        for _ in range(200):  # bounded: the server is up within a few ms
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.02)
        yield proc, f"redis://127.0.0.1:{port}/0"
    finally:
        client.close()
        proc.kill()
        proc.wait()


def test_redis_killed_mid_run_every_request_is_still_answered(
    workers: tuple[Worker, Worker],
    project: Path,
    tmp_path: Path,
    private_redis: tuple[subprocess.Popen[bytes], str],
) -> None:
    proc, url = private_redis
    with Simulator(latency_ms=20) as sim:
        open_both(
            workers, project, tmp_path, base_url=sim.base_url, namespace="outage", redis_url=url
        )
        try:
            before = [w.ask({"op": "run", "tasks": tasks(5)}) for w in workers]
            for worker in workers:
                worker.send({"op": "start", "tasks": tasks(40)})
            for worker in workers:
                assert worker.read() == {"started": True}
            assert sim.wait_for_in_flight(1, timeout=30)
            proc.kill()  # mid-run
            proc.wait()
            during = [w.ask({"op": "collect"}) for w in workers]
            after = [w.ask({"op": "run", "tasks": tasks(5)}) for w in workers]
        finally:
            close_both(workers)
    for answer in before + during + after:
        assert all(r["success"] for r in answer["results"]), answer
    assert sum(len(a["results"]) for a in before + during + after) == 100
    for answer in after:
        assert answer["fallbacks"] >= 1
        assert answer["redis_warnings"] == 1  # one warning per process, however many calls
