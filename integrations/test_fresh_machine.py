"""The README's first hour on a fresh machine, scripted.

Build the wheel, make a new virtual environment, ``pip install`` the wheel
with the extras the README's install lines name (and check what was
installed: the one version, ``trackware --version``, the licence, the project
URLs, only user-facing extras), write the README's Flask
(``shop.py``) and FastAPI (``store.py``) quick starts to files, and run the
README's commands as written: its ``$ export`` lines, ``trackware emulate``,
gunicorn and uvicorn on the ports it gives, and its ``curl`` lines. Each block
of curl lines must make the emulator accept events (counted in the JSON
listing it serves at ``/_emulator/received``).

The README conventions this reads:

* a ```python block right after ``<!-- file: shop.py -->`` (Flask, its app
  object ``app``) and one right after ``<!-- file: store.py -->`` (FastAPI);
* ```console blocks whose command lines start with ``$ ``: ``export NAME=value``,
  ``trackware emulate``, ``gunicorn ...``, ``uvicorn ...``, ``curl ...`` and any
  other command (run, and expected to succeed); ``pip install`` lines give the
  extras and the servers to install; ``pip``, ``python``/``python3`` (making a
  virtual environment), ``source``, ``make``, ``git`` and ``cd`` lines are not
  run (this test makes its own environment).

curl is run as written plus ``--fail --show-error --max-time 20``; on a
machine without curl, the same request is made with urllib (the options the
README uses: ``-s``, ``-S``, ``-i``, ``-L``, ``-A``, ``-H``, ``-X``, ``-d``).

Nothing here reads the repository at run time beyond README.md and the wheel
built from it; every process it starts is stopped in ``finally`` (SIGTERM,
then SIGKILL after a bounded wait).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
#: Where `trackware emulate` lists what it received, as JSON.
RECEIVED_PATH = "/_emulator/received"


#: Commands a reader runs to get a machine ready, which this test does itself.
_SETUP_COMMANDS = ("pip", "pip3", "python", "python3", "source", ".", "make", "git")
_SETUP_COMMANDS += ("cd",)
#: Long-running commands: started in the background, stopped at the end.
_SERVERS = ("trackware", "gunicorn", "uvicorn")


# -- reading the README --------------------------------------------------------


@dataclasses.dataclass
class Block:
    lang: str
    text: str
    line: int  # README line of the opening fence
    marker: str | None  # the <!-- file: NAME --> right before it, if any


_FENCE = re.compile(r"^(`{3,}|~{3,})\s*([\w+-]*)[^\n]*$")
_MARKER = re.compile(r"^<!--\s*file:\s*(\S+)\s*-->\s*$")
_COMMENT = re.compile(r"^<!--.*-->$")  # other markers may stand in between


def readme_blocks(text: str) -> list[Block]:
    """The fenced code blocks of ``text``, in order, each with the file marker
    (an HTML comment on the line before, blank lines allowed) it carries."""
    blocks: list[Block] = []
    lines = text.splitlines()
    i = 0
    last_marker: tuple[str, int] | None = None
    while i < len(lines):
        line = lines[i]
        marker = _MARKER.match(line.strip())
        if marker:
            last_marker = (marker.group(1), i)
            i += 1
            continue
        fence = _FENCE.match(line.strip())
        if not fence:
            if line.strip() and not _COMMENT.match(line.strip()):
                last_marker = None  # a marker names only the block right after it
            i += 1
            continue
        close = fence.group(1)
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith(close):
            body.append(lines[j])
            j += 1
        blocks.append(
            Block(
                lang=fence.group(2).lower(),
                text="\n".join(body) + "\n",
                line=i + 1,
                marker=last_marker[0] if last_marker else None,
            )
        )
        last_marker = None
        i = j + 1
    return blocks


def quick_start(blocks: list[Block], name: str) -> str:
    found = [b for b in blocks if b.marker == name]
    if not found:
        pytest.fail(
            f"README.md has no quick start file {name}: expected a ```python block "
            f"right after the line <!-- file: {name} -->"
        )
    if len(found) > 1 or found[0].lang != "python":
        lines = ", ".join(f"line {b.line} ({b.lang or 'no language'})" for b in found)
        pytest.fail(
            f"README.md: <!-- file: {name} --> must mark exactly one ```python "
            f"block; it marks {lines}"
        )
    return found[0].text


@dataclasses.dataclass
class Command:
    argv: list[str]
    env: dict[str, str]  # NAME=value prefixes of this command only
    line: str
    block: int  # README line of its block's fence


def console_commands(blocks: list[Block]) -> list[Command]:
    """The ``$ `` lines of the README's console blocks (continuations joined)."""
    commands: list[Command] = []
    for block in blocks:
        if block.lang not in ("console", "shell-session"):
            continue
        raw = block.text.splitlines()
        k = 0
        while k < len(raw):
            line = raw[k].rstrip()
            k += 1
            if not line.startswith("$ "):
                continue  # output shown in the block, or a comment
            line = line[2:]
            while line.endswith("\\") and k < len(raw):
                line = line[:-1] + " " + raw[k].strip()
                k += 1
            argv = shlex.split(line, comments=True)
            if argv and argv[-1] == "&":
                argv.pop()
            env: dict[str, str] = {}
            while argv and re.fullmatch(r"[A-Za-z_]\w*=.*", argv[0]):
                name, _, value = argv.pop(0).partition("=")
                env[name] = value
            if argv or env:
                commands.append(Command(argv, env, line, block.line))
    return commands


def install_requirements(blocks: list[Block], wheel: Path) -> list[str]:
    """What the README's ``pip install`` lines install, with trackware taken
    from ``wheel`` (extras merged)."""
    extras: set[str] = set()
    others: list[str] = []
    named_trackware = False
    for block in blocks:
        for line in block.text.splitlines():
            match = re.search(r"\bpip3? install\s+(.*)$", line)
            if not match:
                continue
            for arg in shlex.split(match.group(1), comments=True):
                if arg.startswith("-") or arg in ("-e", "."):
                    continue
                req = re.fullmatch(r"trackware(?:\[([\w,\s-]*)\])?", arg)
                if req:
                    named_trackware = True
                    extras.update(e.strip() for e in (req.group(1) or "").split(","))
                elif arg not in others and not arg.startswith((".", "/")):
                    others.append(arg)
    if not named_trackware:
        pytest.fail('README.md has no `pip install "trackware[...]"` line')
    extras.discard("")
    spec = "trackware"
    if extras:
        spec += "[" + ",".join(sorted(extras)) + "]"
    return [f"{spec} @ {wheel.as_uri()}", *others]


# -- running it ----------------------------------------------------------------


@dataclasses.dataclass
class Server:
    name: str
    line: str
    proc: subprocess.Popen[bytes]
    log: Path
    host: str
    port: int

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def option(argv: list[str], *names: str) -> str | None:
    """The value of the last ``--name value`` / ``--name=value`` in argv."""
    value = None
    for k, arg in enumerate(argv):
        for name in names:
            if arg == name and k + 1 < len(argv):
                value = argv[k + 1]
            elif name.startswith("--") and arg.startswith(name + "="):
                value = arg.partition("=")[2]
    return value


def address(argv: list[str]) -> tuple[str, int]:
    """Where a server command listens, by each server's own defaults."""
    program = argv[0]
    if program == "gunicorn":
        bind = option(argv, "-b", "--bind") or "127.0.0.1:8000"
        host, _, port = bind.rpartition(":")
        return (host or "127.0.0.1"), int(port)
    if program == "uvicorn":
        default_port = 8000
    else:  # trackware emulate
        default_port = 8900
    host = option(argv, "--host") or "127.0.0.1"
    return host, int(option(argv, "--port") or default_port)


def listening(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), 0.5):
        return True
    return False


def wait_listening(server: Server, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not listening(server.host, server.port):
        if server.proc.poll() is not None:
            pytest.fail(
                f"`{server.line}` exited ({server.proc.returncode}) before it "
                f"listened on {server.port}:\n{server.output()}"
            )
        if time.monotonic() > deadline:
            pytest.fail(
                f"`{server.line}` did not listen on {server.host}:{server.port} "
                f"within {timeout:.0f} s:\n{server.output()}"
            )
        time.sleep(0.1)


def stop(server: Server, timeout: float = 20.0) -> None:
    """SIGTERM, then SIGKILL to its whole process group after ``timeout``."""
    proc = server.proc
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
    # Workers left behind (a gunicorn worker whose master died) share the group.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)


def accepted_events(emulator: Server) -> int:
    """How many events the emulator accepted, all vendors together, from the
    JSON listing it serves (the page `trackware emulate` points at)."""
    url = f"http://{emulator.host}:{emulator.port}{RECEIVED_PATH}"
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            received = json.load(answer)
        return sum(int(info["events"]) for info in received["vendors"].values())
    except (OSError, ValueError, KeyError, TypeError) as exc:
        pytest.fail(
            f"the emulator's listing {url} did not answer JSON with "
            f"vendors.<name>.events ({exc!r}):\n{emulator.output()}"
        )


def run_curl(command: Command, env: dict[str, str], cwd: Path) -> None:
    curl = shutil.which("curl")
    if curl is None:
        fetch_like_curl(command)
        return
    # An HTTP error answer fails the line, and a hung server cannot hang the test.
    argv = [curl, "--fail", "--show-error", "--max-time", "20", *command.argv[1:]]
    result = subprocess.run(
        argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=30
    )
    if result.returncode != 0:
        pytest.fail(
            f"README line `$ {command.line}` failed ({result.returncode}):\n"
            f"{result.stdout}\n{result.stderr}"
        )


def fetch_like_curl(command: Command) -> None:
    """The request a curl line makes, by urllib (a machine without curl)."""
    url, method, data = None, None, None
    headers = {"User-Agent": "curl/8.5.0"}
    args = iter(command.argv[1:])
    for arg in args:
        if arg in ("-s", "--silent", "-S", "--show-error", "-i", "-L", "-f"):
            continue
        if arg in ("-A", "--user-agent"):
            headers["User-Agent"] = next(args)
        elif arg in ("-H", "--header"):
            name, _, value = next(args).partition(":")
            headers[name.strip()] = value.strip()
        elif arg in ("-X", "--request"):
            method = next(args)
        elif arg in ("-d", "--data", "--data-raw"):
            data = next(args).encode()
            headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
        elif not arg.startswith("-") and url is None:
            url = arg
        else:
            pytest.fail(f"curl is not installed, and `$ {command.line}` uses {arg}")
    if url is None:
        pytest.fail(f"README line `$ {command.line}` names no URL")
    request = urllib.request.Request(url, data, headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=20) as answer:
            answer.read()
    except OSError as exc:
        pytest.fail(f"README line `$ {command.line}` failed: {exc}")


def check_installed_package(bin_dir: Path, wheel: Path) -> None:
    """The installed distribution: the version written once in
    trackware/__init__.py (in the wheel's name, its metadata and
    ``trackware --version``), the licence, the project URLs, and only the
    user-facing extras (the dev tools and test frameworks are dependency
    groups, not published)."""
    match = re.search(
        r'^__version__ = "([^"]+)"$',
        (ROOT / "trackware" / "__init__.py").read_text(encoding="utf-8"),
        re.MULTILINE,
    )
    assert match, "trackware/__init__.py sets no __version__"
    version = match.group(1)
    assert wheel.name.startswith(f"trackware-{version}-")
    shown = subprocess.run(
        [bin_dir / "trackware", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert shown.stdout.strip() == f"trackware {version}"
    code = (
        "import importlib.metadata as m, json; d = m.metadata('trackware'); "
        "print(json.dumps({'version': d['Version'], "
        "'license': d['License-Expression'], "
        "'extras': d.get_all('Provides-Extra'), 'urls': d.get_all('Project-URL')}))"
    )
    found = json.loads(
        subprocess.run(
            [bin_dir / "python", "-c", code],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
    )
    assert found["version"] == version
    assert found["license"] == "MIT"
    assert set(found["extras"]) == {
        "flask",
        "asgi",
        "redis",
        "phone",
        "prometheus",
        "opentelemetry",
        "orjson",
        "all",
    }
    labels = {url.partition(",")[0] for url in found["urls"]}
    assert labels == {"Homepage", "Documentation", "Changelog", "Issues"}


@pytest.mark.slow
def test_readme_quick_starts_on_a_fresh_machine(tmp_path: Path) -> None:
    text = README.read_text(encoding="utf-8")
    blocks = readme_blocks(text)
    files = {name: quick_start(blocks, name) for name in ("shop.py", "store.py")}
    commands = console_commands(blocks)
    programs = {c.argv[0] for c in commands if c.argv}
    for needed in ("trackware", "gunicorn", "uvicorn", "curl"):
        if needed not in programs:
            pytest.fail(f"README.md has no `$ {needed} ...` line in a ```console block")

    # The wheel, and a new environment with the machine's Python.
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", dist, ROOT],
        check=True,
        timeout=300,
    )
    (wheel,) = dist.glob("trackware-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True, timeout=120)
    bin_dir = venv / "bin"
    requirements = install_requirements(blocks, wheel)
    subprocess.run(
        [bin_dir / "python", "-m", "pip", "install", "-q", *requirements],
        check=True,
        timeout=600,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )

    check_installed_package(bin_dir, wheel)

    app_dir = tmp_path / "app"
    app_dir.mkdir()
    for name, code in files.items():
        (app_dir / name).write_text(code, encoding="utf-8")

    # A new shell: none of this process's trackware settings or import paths,
    # the new environment's commands first on PATH, and unbuffered output so
    # the emulator's log lines are on disk as they happen.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("TRACKWARE_")
        and k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")
    }
    env.update(
        PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
        VIRTUAL_ENV=str(venv),
        PYTHONUNBUFFERED="1",
    )

    servers: list[Server] = []
    emulator: Server | None = None
    # The block of curl lines being run: its fence line, the emulator's
    # accepted lines counted before its first curl, and its lines.
    pending: tuple[int, int, list[str]] | None = None

    def await_accepted() -> None:
        """The emulator accepts events after the pending block of curl lines
        (the trackers deliver in the background, within about a second)."""
        nonlocal pending
        if pending is None or emulator is None:
            return
        _, count, lines = pending
        pending = None
        deadline = time.monotonic() + 30
        while accepted_events(emulator) <= count:
            if time.monotonic() > deadline:
                logs = "\n".join(f"--- $ {s.line}\n{s.output()}" for s in servers)
                pytest.fail(
                    "the emulator accepted no events after the README lines\n  "
                    + "\n  ".join(f"$ {line}" for line in lines)
                    + f"\nserver output:\n{logs}"
                )
            time.sleep(0.2)

    try:
        for command in commands:
            if pending is not None and pending[0] != command.block:
                await_accepted()
            argv = command.argv
            if not argv:
                env.update(command.env)  # NAME=value alone sets it in the shell
                continue
            program = argv[0]
            if program == "export":
                for assignment in argv[1:]:
                    name, eq, value = assignment.partition("=")
                    if eq:
                        env[name] = value
                continue
            if program in _SETUP_COMMANDS:
                continue
            cmd_env = {**env, **command.env}
            if program in _SERVERS and (program != "trackware" or "emulate" in argv):
                host, port = address(argv)
                if listening(host, port):
                    pytest.fail(
                        f"port {port} is already in use: `$ {command.line}` needs "
                        "it (this test runs the README's commands on its ports)"
                    )
                log = tmp_path / f"{program}-{port}.log"
                with log.open("wb") as out:
                    proc = subprocess.Popen(
                        [bin_dir / program, *argv[1:]],
                        cwd=app_dir,
                        env=cmd_env,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                server = Server(program, command.line, proc, log, host, port)
                servers.append(server)
                if program == "trackware":
                    emulator = server
                wait_listening(server)
                continue
            if program == "curl":
                if emulator is None:
                    pytest.fail(
                        f"README line `$ {command.line}` comes before "
                        "`trackware emulate`"
                    )
                if pending is None:
                    seen = accepted_events(emulator)
                    pending = (command.block, seen, [])
                pending[2].append(command.line)
                run_curl(command, cmd_env, app_dir)
                continue
            result = subprocess.run(
                argv,
                cwd=app_dir,
                env=cmd_env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            if result.returncode != 0:
                pytest.fail(
                    f"README line `$ {command.line}` failed ({result.returncode}):"
                    f"\n{result.stdout}\n{result.stderr}"
                )
        await_accepted()
    finally:
        for server in reversed(servers):
            stop(server)


# -- the reading itself, without installing anything --------------------------

_SAMPLE = """\
<!-- file: shop.py -->
<!-- requests: GET / -->
```python
app = 1
```

```console
$ pip install "trackware[flask]" gunicorn  # Flask
$ export A=1 B='two words'
$ trackware emulate &
$ C=3 gunicorn shop:app \\
    --bind 127.0.0.1:8000
output, not a command
$ make test
```
"""


def test_the_readme_reading_finds_files_commands_and_requirements() -> None:
    blocks = readme_blocks(_SAMPLE)
    assert quick_start(blocks, "shop.py") == "app = 1\n"
    commands = console_commands(blocks)
    assert [c.argv for c in commands] == [
        ["pip", "install", "trackware[flask]", "gunicorn"],
        ["export", "A=1", "B=two words"],
        ["trackware", "emulate"],
        ["gunicorn", "shop:app", "--bind", "127.0.0.1:8000"],
        ["make", "test"],
    ]
    assert commands[3].env == {"C": "3"}
    assert address(commands[3].argv) == ("127.0.0.1", 8000)
    assert address(commands[2].argv) == ("127.0.0.1", 8900)
    assert address(["uvicorn", "store:app", "--port=8001"]) == ("127.0.0.1", 8001)
    wheel = Path("/w/trackware-0.1.0-py3-none-any.whl")
    assert install_requirements(blocks, wheel) == [
        f"trackware[flask] @ {wheel.as_uri()}",
        "gunicorn",
    ]


def test_a_readme_without_the_quick_starts_fails_clearly() -> None:
    text = _SAMPLE.replace("<!-- file: shop.py -->", "")
    with pytest.raises(pytest.fail.Exception, match=r"<!-- file: shop.py -->"):
        quick_start(readme_blocks(text), "shop.py")
    # A marker names only the block right after it.
    text = _SAMPLE.replace("<!-- requests: GET / -->", "Some prose.")
    with pytest.raises(pytest.fail.Exception, match=r"no quick start file shop.py"):
        quick_start(readme_blocks(text), "shop.py")
    with pytest.raises(pytest.fail.Exception, match="pip install"):
        install_requirements(readme_blocks("```console\n$ ls\n```\n"), Path("/w"))
