"""trackware.metrics imports without prometheus-client and opentelemetry;
each function names the extra to install when its library is missing."""

from __future__ import annotations

from _support import run_script

SCRIPT = r"""
import sys
sys.modules["prometheus_client"] = None  # as if not installed
sys.modules["opentelemetry"] = None
import trackware, trackware.metrics
from trackware.exporters import HTTPExporter

tracker = trackware.Tracker(
    [HTTPExporter("http://127.0.0.1:9/x")], register_atexit=False, dead_letter=None
)
for make, extra in [
    (trackware.metrics.prometheus, "pip install 'trackware[prometheus]'"),
    (trackware.metrics.opentelemetry, "pip install 'trackware[opentelemetry]'"),
]:
    try:
        make(tracker)
    except trackware.ConfigurationError as exc:
        assert extra in str(exc), exc
        print("named", extra)
    else:
        raise SystemExit("no ConfigurationError")
assert not trackware.signals.export_attempted.receivers
"""


def test_each_function_names_its_extra() -> None:
    result = run_script(SCRIPT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("named") == 2, result.stdout
