"""Every tracker's shutdown says, in one INFO line, what happened to its events."""

from __future__ import annotations

import logging
import typing as t

import pytest

import trackware
from trackware import Event, MemoryDeadLetter
from trackware.exporters import BaseExporter, ExportResult
from trackware.testing import InMemoryExporter


class Refusing(BaseExporter):
    """Refuses every event, as a vendor answering 400 would."""

    default_name = "refusing"

    def export(self, events: t.Sequence[Event], /) -> ExportResult:
        return ExportResult.rejected_all(events, "vendor said no", status=400)


def summaries(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "trackware" and "shut down" in r.getMessage()
    ]


def test_shutdown_logs_one_line_of_what_happened(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="trackware")
    tracker = trackware.Tracker(
        [InMemoryExporter(), Refusing()],
        dead_letter=MemoryDeadLetter(),
        sample_rates={"noise": 0.0},
        register_atexit=False,
    )
    tracker.track("offer.viewed", {"offer_id": "o-1"})
    tracker.track("offer.clicked")
    tracker.track("noise")  # sampled out
    tracker.track("bad", {"k": float("nan")})  # invalid
    assert tracker.shutdown(10)

    (line,) = summaries(caplog)
    assert "tracked 2, dropped: invalid 1, sampled 1" in line
    assert (
        "memory: sent 2, rejected 0, failed 0, dropped: none, dead-lettered 0, "
        "still queued 0"
    ) in line
    assert (
        "refusing: sent 0, rejected 2, failed 0, dropped: none, dead-lettered 2, "
        "still queued 0"
    ) in line
    # Idempotent shutdown: one line per tracker, not per call.
    assert tracker.shutdown(10)
    assert len(summaries(caplog)) == 1


def test_the_summary_is_info_only(caplog: pytest.LogCaptureFixture) -> None:
    """At the default WARNING level an orderly exit prints nothing."""
    caplog.set_level(logging.WARNING, logger="trackware")
    tracker = trackware.Tracker([InMemoryExporter()], register_atexit=False)
    tracker.track("offer.viewed")
    assert tracker.shutdown(10)
    assert summaries(caplog) == []
