"""The emulators read the vendor contracts on their own; their tables agree
with the exporters'.

An emulator that imported an exporter's tables would agree with any mistake in
them, so no emulator module imports ``trackware.exporters``; these tests check
that the two independent copies still say the same thing.
"""

from __future__ import annotations

import ast
import pathlib
import uuid

import pytest

import trackware.testing.emulators as emulators
from trackware.exporters import cardlytics as cardlytics_exporter
from trackware.exporters import mxo as mxo_exporter
from trackware.exporters import synerise as synerise_exporter
from trackware.exporters import yotpo as yotpo_exporter
from trackware.testing.emulators import _cardlytics_rules as cardlytics_rules
from trackware.testing.emulators import _synerise_rules as synerise_rules
from trackware.testing.emulators import _yotpo_rules as yotpo_rules
from trackware.testing.emulators._cardlytics import CardlyticsAPI
from trackware.testing.emulators._mxo import MXOAPI
from trackware.testing.emulators._yotpo import YotpoAPI

EMULATORS = pathlib.Path(emulators.__file__).parent


def imported_modules(path: pathlib.Path) -> set[str]:
    """Every module ``path`` imports, relative imports resolved against
    ``trackware.testing.emulators``."""
    package = ["trackware", "testing", "emulators"]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *(node.module or "").split(".")]).strip(".")
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def test_no_emulator_module_imports_an_exporter() -> None:
    modules = sorted(EMULATORS.glob("*.py"))
    assert len(modules) >= 10
    for path in modules:
        leaks = sorted(
            m
            for m in imported_modules(path)
            if m == "trackware.exporters" or m.startswith("trackware.exporters.")
        )
        assert leaks == [], f"{path.name} imports {leaks}"


def test_the_import_check_sees_relative_imports_of_exporters(
    tmp_path: pathlib.Path,
) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("from ...exporters.yotpo import MAX_NAME_LENGTH\n")
    assert "trackware.exporters.yotpo" in imported_modules(sample)


# --- Cardlytics ----------------------------------------------------------------------
def test_cardlytics_tables_agree_and_are_separate_copies() -> None:
    assert cardlytics_rules.CLIENT_EVENTS == dict(
        cardlytics_exporter.CLIENT_EVENT_TYPES
    )
    assert cardlytics_rules.CLIENT_EVENTS is not cardlytics_exporter.CLIENT_EVENT_TYPES
    assert set(cardlytics_exporter.CLIENT_EVENT_TYPES.values()) == set(
        cardlytics_rules.CLIENT_EVENT_TYPES
    )
    assert cardlytics_rules.AD_EVENT_TYPES == cardlytics_exporter.AD_EVENT_TYPES
    assert cardlytics_rules.CHANNELS == cardlytics_exporter.CHANNELS
    assert cardlytics_rules.SECTIONS == cardlytics_exporter.SECTIONS
    assert cardlytics_rules.NO_USER == cardlytics_exporter.NO_USER
    assert set(cardlytics_exporter.DEFAULT_MAPPING.values()) <= set(
        cardlytics_rules.CLIENT_EVENTS
    )


@pytest.mark.parametrize(
    "event", sorted(cardlytics_exporter.CLIENT_EVENT_TYPES), ids=str
)
def test_the_strict_cardlytics_emulator_accepts_every_pairing_the_exporter_knows(
    event: str,
) -> None:
    kind = cardlytics_exporter.CLIENT_EVENT_TYPES[event]
    metadata = (
        {
            "serveToken": "serve-token",
            "section": sorted(cardlytics_exporter.SECTIONS)[0],
            "channel": sorted(cardlytics_exporter.CHANNELS)[0],
        }
        if kind in cardlytics_exporter.AD_EVENT_TYPES
        else None
    )
    item = {
        "clientEventId": str(uuid.uuid4()),
        "clientEventType": kind,
        "clientEvent": event,
        "clientEventTimestamp": "2026-11-24T06:00:00Z",
        "clientEventMetadata": metadata,
    }
    assert CardlyticsAPI(strict=True).validate({"clientEvents": [item]}) == []
    wrong = "AdImpression" if kind != "AdImpression" else "SessionAction"
    if (wrong, event) not in cardlytics_rules.DOCUMENTED_VARIANTS:
        errors = CardlyticsAPI(strict=True).validate(
            {"clientEvents": [{**item, "clientEventType": wrong}]}
        )
        assert errors != []


# --- Synerise ------------------------------------------------------------------------
def test_synerise_tables_agree() -> None:
    assert synerise_rules.AI_EVENT_TYPES == synerise_exporter.AI_EVENT_TYPES
    assert synerise_rules.API_VERSION == synerise_exporter.API_VERSION
    assert synerise_exporter.TRANSACTION_ACTION in synerise_rules.RESERVED_ACTIONS
    for action in synerise_exporter.DEFAULT_ACTIONS.values():
        errors: list[str] = []
        synerise_rules.check_action({"action": action}, "", errors, strict=True)
        assert errors == [], action


# --- MXO -----------------------------------------------------------------------------
def test_mxo_paths_and_limits_agree() -> None:
    api = MXOAPI()
    routes = {route.name: route.pattern for route in api.routes}
    assert routes["mxo.token"].fullmatch(mxo_exporter.TOKEN_PATH)
    assert routes["mxo.interaction"].fullmatch(mxo_exporter.INTERACTION_PATH)
    assert routes["mxo.offline_batch"].fullmatch(mxo_exporter.OFFLINE_BATCH_PATH)
    lightweight = mxo_exporter.LIGHTWEIGHT_PATH.format(sk="ONE-ABCDEFGHIJ-1234")
    assert routes["mxo.lightweight"].fullmatch(lightweight)
    assert api.max_offline_batch == mxo_exporter.MAX_OFFLINE_BATCH


# --- Yotpo ---------------------------------------------------------------------------
FIELD_MAP_NAMES = (
    "path",
    "method",
    "envelope",
    "source",
    "event_name",
    "timestamp",
    "id",
    "customer",
    "properties",
    "external_id",
    "phone_number",
    "email",
    "customer_properties",
    "version",
)


def test_yotpo_placeholder_field_maps_agree_and_are_separate_copies() -> None:
    ours, theirs = yotpo_rules.DEFAULT_FIELD_MAP, yotpo_exporter.DEFAULT_FIELD_MAP
    assert ours is not theirs
    assert {n: getattr(ours, n) for n in FIELD_MAP_NAMES} == {
        n: getattr(theirs, n) for n in FIELD_MAP_NAMES
    }
    assert YotpoAPI().field_map is ours
    assert yotpo_rules.MAX_NAME_LENGTH == yotpo_exporter.MAX_NAME_LENGTH
    token_route = next(r for r in YotpoAPI().routes if r.name == "yotpo.token")
    assert token_route.pattern.fullmatch(
        yotpo_exporter.TOKEN_PATH.format(store_id="store-1")
    )


def test_the_yotpo_emulator_reads_any_field_map_of_the_same_shape() -> None:
    """The exporter's map (or any object with these names) drives the emulator."""
    renamed = yotpo_exporter.DEFAULT_FIELD_MAP.replace(event_name="name")
    body = {
        "source": "trackware",
        "name": "order_shipped",
        "timestamp": "2026-11-24T06:00:00.000Z",
        "id": str(uuid.uuid4()),
        "customer": {"external_id": "c-1"},
    }
    assert YotpoAPI().validate(body, renamed)["name"] == "order_shipped"
    ours = yotpo_rules.PlaceholderFieldMap(event_name="name")
    assert YotpoAPI().validate(body, ours)["name"] == "order_shipped"
