"""A real server keeps serving, delivering and stopping when its inspector is
hung (accepts connections, never answers) or refuses connections: the example
shop under gunicorn (2 workers, --preload) with ``TRACKWARE_INSPECTOR``
pointing at such an inspector."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import typing as t

import httpx
import pytest
from _support import example_env, free_port, mxo_page_ids, serving

from trackware.testing.emulators import VendorEmulator

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLES = os.path.join(ROOT, "example_apps")
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) Firefox/130"


@contextlib.contextmanager
def bad_inspector(kind: str) -> t.Iterator[str]:
    if kind == "refusing":
        yield f"http://127.0.0.1:{free_port()}"  # nothing listens there
        return
    with socket.socket() as listener:  # the kernel accepts; nobody answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


@pytest.mark.parametrize("kind", ["hung", "refusing"])
def test_the_shop_serves_delivers_and_stops_whatever_its_inspector_does(
    kind: str, emulator: VendorEmulator, tmp_path: t.Any
) -> None:
    port = free_port()
    env = example_env(emulator.url, tmp_path / "dead.jsonl")
    args = ["gunicorn", "--workers", "2", "--preload", "--bind", f"127.0.0.1:{port}"]
    args += ["--pythonpath", EXAMPLES, "flask_shop.wsgi:app"]
    paths = ["/", "/products", "/offers", "/recommendations"]
    with bad_inspector(kind) as url:
        env["TRACKWARE_INSPECTOR"] = url
        with serving(args, env, port) as proc:
            with httpx.Client(
                base_url=f"http://127.0.0.1:{port}",
                headers={"User-Agent": BROWSER},
                timeout=10,
            ) as client:
                statuses = [client.get(paths[i % 4]).status_code for i in range(100)]
            assert statuses == [200] * 100
            proc.send_signal(signal.SIGTERM)
            output, _ = proc.communicate(timeout=60)
            assert proc.returncode == 0, output
    # Every page event reached the vendor, once; the inspector cost nothing
    # but its copies (one warning per process, no traceback).
    ids, _ = mxo_page_ids(emulator)
    assert len(ids) == 100 and len(set(ids)) == 100
    assert not (tmp_path / "dead.jsonl").exists()
    assert "Traceback" not in output
    assert f"the inspector at {url} is" in output
