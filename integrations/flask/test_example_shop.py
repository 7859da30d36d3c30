"""The example shop under real gunicorn (2 workers, --preload) with the emulators.

200 requests, then SIGTERM: the MXO emulator must hold exactly 200 page
events, none lost and none duplicated.
"""

from __future__ import annotations

import os
import signal
import typing as t

import httpx
import pytest
from _support import example_env, free_port, mxo_page_ids, serving

from trackware.testing.emulators import VendorEmulator

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLES = os.path.join(ROOT, "example_apps")
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) Firefox/130"


def test_example_shop_under_gunicorn_delivers_every_page_event_once(
    emulator: VendorEmulator, tmp_path: t.Any
) -> None:
    port = free_port()
    env = example_env(emulator.url, tmp_path / "dead.jsonl")
    args = ["gunicorn", "--workers", "2", "--preload", "--bind", f"127.0.0.1:{port}"]
    args += ["--pythonpath", EXAMPLES, "flask_shop.wsgi:app"]
    paths = ["/", "/products", "/offers", "/recommendations"]
    with serving(args, env, port) as proc:
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}", headers={"User-Agent": BROWSER}
        ) as client:
            for i in range(200):
                assert client.get(paths[i % len(paths)]).status_code == 200
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, output

    ids, uris = mxo_page_ids(emulator)
    assert len(ids) == 200
    assert len(set(ids)) == 200
    assert uris == {"web://shop" + p for p in paths}
    assert not os.path.exists(tmp_path / "dead.jsonl")
