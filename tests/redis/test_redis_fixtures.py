"""The Redis test fixtures themselves: no Redis and no redis-server means one
skip reason, or a failure under CI=true. (The throwaway server, RedisServer,
is exercised by every test using the redis_server fixture.)"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import typing as t

import pytest
from _support import free_port

HERE = os.path.dirname(os.path.abspath(__file__))

_TEST = """
def test_uses_redis(redis_url):
    import redis
    client = redis.Redis.from_url(redis_url)
    assert client.ping()
    client.close()
"""


def run_pytest(tmp_path: t.Any, env_changes: dict[str, str | None]) -> str:
    """pytest on a one-test file next to a copy of tests/redis/conftest.py."""
    shutil.copy(os.path.join(HERE, "conftest.py"), tmp_path / "conftest.py")
    (tmp_path / "test_one.py").write_text(_TEST)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.path.dirname(HERE)
    for key, value in env_changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-rs",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:randomly",
            "--rootdir",
            str(tmp_path),
            "-c",
            os.devnull,
            "--import-mode=importlib",
            str(tmp_path / "test_one.py"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
    )
    return proc.stdout + proc.stderr


def no_redis_env(tmp_path: t.Any) -> dict[str, str | None]:
    """Nothing answers on the Redis URL and PATH has no redis-server."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    os.symlink(sys.executable, bindir / "python")
    return {
        "TRACKWARE_TEST_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "PATH": str(bindir),
    }


@pytest.mark.slow
def test_no_redis_anywhere_skips_with_one_reason(tmp_path: t.Any) -> None:
    out = run_pytest(tmp_path, {**no_redis_env(tmp_path), "CI": None})
    assert "1 skipped" in out, out
    assert "redis-server is not on PATH" in out, out


@pytest.mark.slow
def test_no_redis_anywhere_fails_under_ci(tmp_path: t.Any) -> None:
    out = run_pytest(tmp_path, {**no_redis_env(tmp_path), "CI": "true"})
    assert "1 error" in out or "1 failed" in out, out
    assert "CI=true and no Redis answers" in out, out
