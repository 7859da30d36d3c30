"""The lazy public names of ``trackware`` and ``trackware.exporters``: every
name resolves (attribute, ``from ... import``, ``dir()``), each table and its
typing imports are in step, and ``import trackware`` (and what ``track()``
needs) imports neither httpx nor the vendor exporters nor wrapt."""

from __future__ import annotations

import ast
import importlib
import json
import pathlib
import types

import pytest

import trackware
import trackware.exporters
from tests._support import run_script

PACKAGES = [trackware, trackware.exporters]


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: p.__name__)
def test_every_public_name_resolves(package: types.ModuleType) -> None:
    for name in package.__all__:
        value = getattr(package, name)
        assert value is not None, name
        assert name in dir(package), name
        # from package import name: the same object.
        namespace: dict[str, object] = {}
        exec(f"from {package.__name__} import {name} as got", namespace)
        assert namespace["got"] is value, name


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: p.__name__)
def test_an_unknown_name_is_an_attribute_error(package: types.ModuleType) -> None:
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = package.no_such_name
    with pytest.raises(ImportError):
        exec(f"from {package.__name__} import no_such_name")


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: p.__name__)
def test_the_typing_imports_match_the_table(package: types.ModuleType) -> None:
    """What a type checker sees is what the table serves, name by name and
    module by module (a name added to one only fails here)."""
    tree = ast.parse(pathlib.Path(str(package.__file__)).read_text())
    typed: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for stmt in node.body:
                if isinstance(stmt, ast.Import):  # typing itself
                    continue
                assert isinstance(stmt, ast.ImportFrom)
                source = "." * stmt.level + (stmt.module or "")
                for alias in stmt.names:
                    assert alias.asname == alias.name  # an explicit re-export
                    typed[alias.name] = source
    table: dict[str, str] = package._EXPORTS
    assert set(typed) == set(table)
    for name, where in table.items():
        defined = importlib.import_module(where, package.__name__)
        typed_module = importlib.import_module(typed[name], package.__name__)
        expected = getattr(typed_module, name)
        if isinstance(expected, types.ModuleType):
            assert expected is defined, name
        else:
            assert getattr(defined, name) is expected, name


def test_the_vendor_packages_are_attributes_on_first_use() -> None:
    mxo = trackware.exporters.mxo
    assert mxo is importlib.import_module("trackware.exporters.mxo")
    assert "yotpo" in dir(trackware.exporters)


HEAVY = ("httpx", "httpcore", "wrapt", "asyncio", "ssl", "certifi", "decimal")


def test_import_and_track_import_nothing_heavy() -> None:
    """``import trackware``, then what ``track()`` needs (a tracker with a
    local exporter, an event tracked): no HTTP client, no vendor exporter,
    no wrapt, no asyncio, no decimal (``_json.is_decimal``). An HTTP exporter
    brings httpx when it is named."""
    result = run_script(
        """
        import json, sys
        import trackware

        def loaded():
            return sorted(
                m for m in sys.modules
                if m.split(".")[0] in ("httpx", "httpcore", "wrapt", "asyncio",
                                       "ssl", "certifi", "decimal")
                or m.startswith("trackware.exporters.")
            )

        out = {"import": loaded(), "trackware": sorted(
            m for m in sys.modules if m.startswith("trackware")),
            "typing": "typing" in sys.modules}
        from trackware.exporters import JSONLinesExporter
        tracker = trackware.Tracker([JSONLinesExporter(sys.argv[1])],
                                    dead_letter=None, register_atexit=False)
        trackware.set_tracker(tracker)
        event = trackware.track("e", {"a": 1})
        assert event is not None and len(event.event_id) == 36
        tracker.shutdown(5)
        out["track"] = loaded()
        from trackware.exporters import HTTPExporter
        out["http"] = loaded()
        print(json.dumps(out))
        """,
        "/dev/null",
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["trackware"] == ["trackware"]
    assert out["import"] == []
    assert not out["typing"]
    assert [m for m in out["track"] if m.split(".")[0] in HEAVY] == []
    assert "trackware.exporters.mxo" not in out["track"]
    assert "httpx" in out["http"] and "httpcore" in out["http"]
