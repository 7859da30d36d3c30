"""Fixtures of the Redis tests: a real Redis, never a fake.

* ``redis_url`` (session): ``redis://127.0.0.1:6379/0`` (or
  ``TRACKWARE_TEST_REDIS_URL``, host and port only) when that answers
  ``PING``; else a throwaway ``redis-server`` on a free port when one is on
  ``PATH``; else every Redis test is skipped with one reason — except under
  ``CI=true``, where that is a failure.
* ``redis_namespace``: a namespace of the test's own (``trackware:{ns}:*``);
  its keys are deleted afterwards.
* ``redis_client``: a ``redis.Redis`` on ``redis_url`` (bytes replies).
* ``redis_server``: a throwaway ``redis-server`` of the test's own that the
  test can ``stop()`` and ``start()`` again on the same port (``RedisServer``),
  for the Redis-is-lost tests. Needs ``redis-server`` on ``PATH`` (skip, or
  fail under ``CI=true``).

This folder has no ``__init__.py`` on purpose: ``tests/`` is on ``sys.path``
and a package named ``redis`` there would shadow redis-py.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import typing as t
import urllib.parse
import uuid

import pytest
from _support import free_port

if t.TYPE_CHECKING:
    import redis

DEFAULT_URL = "redis://127.0.0.1:6379/0"

__all__ = [
    "RedisServer",
    "redis_client",
    "redis_namespace",
    "redis_server",
    "redis_url",
]


def _unavailable(reason: str) -> t.NoReturn:
    """Skip (once per test, one reason), or fail under CI=true."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


def _answers(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether a Redis at host:port answers PING (raw RESP: no client needed)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """A ``redis-server`` of the test's own on ``port`` (127.0.0.1), with no
    persistence except what ``stop(save=True)`` writes into ``folder`` (so a
    restart on the same port comes back with the data, as a production Redis
    with persistence would)."""

    def __init__(self, folder: str, port: int | None = None) -> None:
        self.folder = folder
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> None:
        """Start it and wait until it answers PING."""
        binary = shutil.which("redis-server")
        if binary is None:
            _unavailable("redis-server is not on PATH")
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.folder,
                "--dbfilename",
                "dump.rdb",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while not _answers("127.0.0.1", self.port):
            if self.proc.poll() is not None:
                pytest.fail(f"redis-server on port {self.port} exited early")
            if time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"redis-server on port {self.port} did not answer")
            time.sleep(0.02)

    def stop(self, save: bool = True, timeout: float = 10.0) -> None:
        """Stop it: ``SHUTDOWN SAVE`` (the data comes back on ``start()``) or,
        with ``save=False``, SIGKILL (the data is lost)."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        if not save:
            self.kill()
            return
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                s.sendall(b"SHUTDOWN SAVE\r\n")
                s.recv(64)  # the connection closes when it exits
        except OSError:
            pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"redis-server on port {self.port} did not shut down")

    def pause(self) -> None:
        """SIGSTOP: it holds every connection and answers nothing (slow Redis)."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)

    def kill(self) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            os.killpg(proc.pid, signal.SIGCONT)  # a paused one dies too
            proc.wait()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> t.Iterator[str]:
    pytest.importorskip("redis", reason="redis-py is not installed")
    url = os.environ.get("TRACKWARE_TEST_REDIS_URL") or DEFAULT_URL
    where = urllib.parse.urlsplit(url)
    host, port = where.hostname or "127.0.0.1", where.port or 6379
    if _answers(host, port):
        yield url
        return
    if shutil.which("redis-server") is None:
        _unavailable(
            f"no Redis answers on {host}:{port} and redis-server is not on PATH"
        )
    server = RedisServer(str(tmp_path_factory.mktemp("redis")))
    server.start()
    try:
        yield server.url
    finally:
        server.kill()


@pytest.fixture
def redis_client(redis_url: str) -> t.Iterator[redis.Redis]:
    from trackware._streams import connect

    client = connect(redis_url)
    yield client
    client.close()


@pytest.fixture
def redis_namespace(redis_client: redis.Redis) -> t.Iterator[str]:
    """``test-<hex>``; every ``trackware:test-<hex>:*`` key goes afterwards."""
    namespace = f"test-{uuid.uuid4().hex[:12]}"
    yield namespace
    keys = list(redis_client.scan_iter(match=f"trackware:{namespace}:*", count=1000))
    if keys:
        redis_client.delete(*keys)


@pytest.fixture
def redis_server(tmp_path: t.Any) -> t.Iterator[RedisServer]:
    """A started throwaway ``redis-server`` the test may stop and restart."""
    pytest.importorskip("redis", reason="redis-py is not installed")
    folder = tmp_path / "redis-server"
    folder.mkdir()
    server = RedisServer(str(folder))
    server.start()
    try:
        yield server
    finally:
        server.kill()
