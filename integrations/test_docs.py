"""Every code sample of README.md and docs/**/*.md runs (issue 12, item 2).

Each fenced block is collected and named by file:line:

* ```python blocks run in a fresh interpreter (this venv's), in a temporary
  directory, against the vendor emulators started here, with the
  ``TRACKWARE_*`` variables the docs use pointing at them. A sample must exit 0
  and leave no dead letter (a vendor refusing what a sample sends fails it).
* A block preceded by ``<!-- file: NAME.py -->`` is an app module: it is written
  to NAME.py, imported, and, if it defines ``app``, driven with the framework's
  test client (``GET /``, or the requests named by a following
  ``<!-- requests: GET /a, POST /b -->`` line); every answer must be below 400.
  Its ``tracker`` (if any) is flushed and must have sent something.
* A block preceded by ``<!-- sample: fragment -->`` is only compiled.
* ```console, ```sh, ```bash, ```text and unlabelled blocks are not Python and
  are skipped here (a separate test starts the servers they describe).

The README's two quick starts (shop.py, store.py) also pass ``mypy --strict``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re
import subprocess
import sys
import textwrap
import typing as t

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
SHELL = {"console", "sh", "bash", "shell", "text", ""}
TIMEOUT = 60

FENCE = re.compile(r"^```(\S*)\s*$")
MARKER = re.compile(r"^<!--\s*(file|sample|requests):\s*(.*?)\s*-->\s*$")


@dataclasses.dataclass
class Block:
    path: pathlib.Path
    line: int  # of the opening fence
    lang: str
    code: str
    markers: dict[str, str]

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def blocks(path: pathlib.Path) -> list[Block]:
    """The fenced blocks of one Markdown file, with the markers just above."""
    found: list[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        start, lang = i, m.group(1).lower()
        markers: dict[str, str] = {}
        j = start - 1
        while j >= 0 and (mm := MARKER.match(lines[j])):
            markers.setdefault(mm.group(1), mm.group(2))
            j -= 1
        i += 1
        body: list[str] = []
        while i < len(lines) and not lines[i].startswith("```"):
            body.append(lines[i])
            i += 1
        assert i < len(lines), f"{path}:{start + 1}: unclosed code block"
        i += 1
        found.append(Block(path, start + 1, lang, "\n".join(body) + "\n", markers))
    return found


ALL = [b for p in DOCS for b in blocks(p)]
PYTHON = [b for b in ALL if b.lang not in SHELL]


def test_every_block_has_a_known_language() -> None:
    unknown = [b.id for b in PYTHON if b.lang not in {"python", "py"}]
    assert not unknown, f"blocks with a language this test cannot run: {unknown}"


def test_the_readme_quick_starts_are_there() -> None:
    files = {b.markers.get("file") for b in blocks(ROOT / "README.md")}
    assert {"shop.py", "store.py"} <= files


LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_every_relative_link_points_at_a_file() -> None:
    """A page the docs point to exists (the README once pointed at a
    vendor-apis.md that was not in the repository)."""
    broken = []
    for path in DOCS:
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for target in LINK.findall(line):
                if re.match(r"[a-z]+:", target) or target.startswith("#"):
                    continue  # a URL or an anchor in the same page
                file = (path.parent / target.partition("#")[0]).resolve()
                if not file.exists():
                    broken.append(f"{path.relative_to(ROOT)}:{n}: {target}")
    assert not broken, "links to files that do not exist:\n" + "\n".join(broken)


@pytest.fixture(scope="module")
def vendors() -> t.Iterator[t.Any]:
    from trackware.testing.emulators import VendorEmulator

    with VendorEmulator() as emu:
        yield emu


def sample_env(url: str, tmp: pathlib.Path) -> dict[str, str]:
    """The environment the docs tell a reader to export, pointed at ``url``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("TRACKWARE_") and k != "PYTHONPATH"
    }
    env.update(
        HOME=str(tmp),
        SECRET_KEY="docs-test-cookie-key",
        TRACKWARE_DEAD_LETTER_PATH=str(tmp / "dead-letter.jsonl"),
        TRACKWARE_EMULATOR_URL=url,
        TRACKWARE_SYNERISE_API_KEY="test-synerise-api-key",
        TRACKWARE_SYNERISE_BASE_URL=url,
        TRACKWARE_CARDLYTICS_BASE_URL=url,
        TRACKWARE_CARDLYTICS_CLIENT_ID="cardlytics-test-client",
        TRACKWARE_CARDLYTICS_CLIENT_SECRET="cardlytics-test-secret",
        TRACKWARE_CARDLYTICS_CUSTOMER_ID_KEY="docs-hmac-key",
        TRACKWARE_MXO_BASE_URL=url,
        TRACKWARE_MXO_CLIENT_ID="mxo-client-id",
        TRACKWARE_MXO_CLIENT_SECRET="mxo-client-secret",
        TRACKWARE_MXO_SITE_KEY="ONE-NX8P2RSAAU-1813",
        TRACKWARE_MXO_TOUCHPOINT="web://docs",
        TRACKWARE_YOTPO_BASE_URL=url,
        TRACKWARE_YOTPO_STORE_ID="yotpo-test-store",
        TRACKWARE_YOTPO_SECRET="yotpo-test-secret-0001",
        PYTHONPATH=str(tmp),
    )
    return env


# Imports an app module and drives it; argv: module name, JSON list of requests.
DRIVER = textwrap.dedent(
    """
    import importlib, json, sys

    module = importlib.import_module(sys.argv[1])
    requests = json.loads(sys.argv[2])
    app = getattr(module, "app", None)
    if app is not None:
        if hasattr(app, "test_client"):  # Flask
            client = app.test_client()
        else:  # ASGI
            from starlette.testclient import TestClient

            client = TestClient(app).__enter__()
        for method, path in requests:
            if hasattr(app, "test_client"):
                response = client.open(path, method=method)
            else:
                response = client.request(method, path)
            status = response.status_code
            assert status < 400, f"{method} {path} answered {status}"
            print(method, path, status)
        if hasattr(client, "__exit__"):
            client.__exit__(None, None, None)
    tracker = getattr(module, "tracker", None)
    if tracker is not None:
        assert tracker.flush(timeout=20), "tracker.flush() did not settle"
        stats = tracker.stats()
        print(json.dumps(stats, default=str))
        sent = sum(d["sent"] for d in stats["destinations"].values())
        assert sent > 0, f"nothing was sent: {stats}"
    """
)


def run(argv: list[str], env: dict[str, str], cwd: pathlib.Path) -> None:
    proc = subprocess.run(
        argv,
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert proc.returncode == 0, (
        f"exit {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    )


def requests_of(block: Block) -> list[tuple[str, str]]:
    spec = block.markers.get("requests", "GET /")
    out = []
    for item in spec.split(","):
        method, path = item.split()
        out.append((method.upper(), path))
    return out


def check(block: Block, url: str, tmp_path: pathlib.Path) -> None:
    """Run one block as its kind says (see the module docstring)."""
    compile(block.code, block.id, "exec")  # a syntax error fails every kind
    if block.markers.get("sample") == "fragment":
        return
    env = sample_env(url, tmp_path)
    name = block.markers.get("file")
    if name:
        (tmp_path / name).write_text(block.code, encoding="utf-8")
        (tmp_path / "_drive.py").write_text(DRIVER, encoding="utf-8")
        argv = [
            sys.executable,
            "_drive.py",
            name.removesuffix(".py"),
            json.dumps(requests_of(block)),
        ]
    else:
        (tmp_path / "sample.py").write_text(block.code, encoding="utf-8")
        argv = [sys.executable, "sample.py"]
    run(argv, env, tmp_path)
    dead = tmp_path / "dead-letter.jsonl"
    letters = dead.read_text(encoding="utf-8") if dead.exists() else ""
    assert not letters.strip(), f"the sample left dead letters:\n{letters}"


@pytest.mark.slow
@pytest.mark.parametrize("block", PYTHON, ids=[b.id for b in PYTHON])
def test_sample_runs(block: Block, vendors: t.Any, tmp_path: pathlib.Path) -> None:
    check(block, vendors.url, tmp_path)


BROKEN_APP = """
import os

from flask import Flask

import trackware
from trackware.exporters.synerise import SyneriseExporter
from trackware.integrations.flask import Trackware

app = Flask(__name__)
app.secret_key = os.environ["SECRET_KEY"]
tracker = trackware.Tracker([SyneriseExporter.from_env()])
Trackware(app, tracker=tracker)


@app.get("/")
def home() -> str:
    raise RuntimeError("a view that broke")
"""

REFUSED = """
import trackware
from trackware.exporters.synerise import SyneriseExporter

tracker = trackware.Tracker([SyneriseExporter.from_env(api_key="not-a-known-key")])
tracker.track("offer.viewed", user_id="c-42")
tracker.shutdown()
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    ("code", "markers", "expected"),
    [
        ("raise SystemExit(3)\n", {}, "exit 3"),
        ("print(undefined_name)\n", {}, "NameError"),
        ("def broken(:\n", {"sample": "fragment"}, "SyntaxError"),
        (REFUSED, {}, "dead letters"),
        (BROKEN_APP, {"file": "broken.py"}, "GET / answered 500"),
    ],
    ids=["exit-status", "exception", "fragment-syntax", "refused", "app-500"],
)
def test_a_broken_sample_fails(
    code: str,
    markers: dict[str, str],
    expected: str,
    vendors: t.Any,
    tmp_path: pathlib.Path,
) -> None:
    block = Block(ROOT / "docs" / "broken.md", 1, "python", code, markers)
    with pytest.raises((AssertionError, SyntaxError)) as failure:
        check(block, vendors.url, tmp_path)
    assert expected in f"{failure.typename}: {failure.value}"


@pytest.mark.slow
def test_quick_starts_pass_mypy_strict(tmp_path: pathlib.Path) -> None:
    for block in blocks(ROOT / "README.md"):
        name = block.markers.get("file")
        if name:
            (tmp_path / name).write_text(block.code, encoding="utf-8")
    files = sorted(p.name for p in tmp_path.glob("*.py"))
    assert files == ["shop.py", "store.py"]
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", *files],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
