"""The example store under real uvicorn (2 workers) with the vendor emulators.

500 requests, at most 50 at a time, then SIGTERM: the MXO emulator must hold
exactly 500 page events, none lost and none duplicated.
"""

from __future__ import annotations

import asyncio
import pathlib
import signal

import httpx
import pytest
from _support import example_env, free_port, mxo_page_ids, serving

from trackware.testing.emulators import VendorEmulator

pytestmark = pytest.mark.slow

ROOT = pathlib.Path(__file__).resolve().parents[2]
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) Firefox/130"
PATHS = ["/", "/recommendations", "/products/p-100", "/products/p-300"]


async def load(url: str, total: int, concurrency: int) -> list[int]:
    gate = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(
        base_url=url, headers={"User-Agent": BROWSER}, timeout=30
    ) as client:

        async def one(i: int) -> int:
            async with gate:
                return (await client.get(PATHS[i % len(PATHS)])).status_code

        return list(await asyncio.gather(*(one(i) for i in range(total))))


def test_example_store_under_uvicorn_delivers_every_page_event_once(
    emulator: VendorEmulator, tmp_path: pathlib.Path
) -> None:
    port = free_port()
    env = example_env(emulator.url, tmp_path / "dead.jsonl")
    args = ["uvicorn", "--app-dir", str(ROOT / "example_apps")]
    args += ["--host", "127.0.0.1", "--port", str(port), "--workers", "2"]
    args += ["--no-access-log", "asgi_store.asgi:app"]
    with serving(args, env, port) as proc:
        statuses = asyncio.run(load(f"http://127.0.0.1:{port}", 500, 50))
        assert statuses == [200] * 500
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=120)
        # uvicorn re-raises SIGTERM after a clean shutdown.
        assert proc.returncode in (0, -signal.SIGTERM), output
        assert output.count("Application shutdown complete") == 2, output

    ids, uris = mxo_page_ids(emulator)
    assert len(ids) == 500
    assert len(set(ids)) == 500
    assert uris == {
        "web://shop/",
        "web://shop/recommendations",
        "web://shop/products/{product_id}",
    }
    assert not (tmp_path / "dead.jsonl").exists()
