"""agent/fleet/reports.py: the columns pulled out of real reports, and nothing raised by hostile ones."""

from __future__ import annotations

import json

from support.fleet import ORIN, RealReports

from agent.device.detect import device_section
from agent.fleet.reports import board_model, hardware, integer, measurements, number, runtimes, text


def test_measured_columns_are_the_reports_own(real: RealReports) -> None:
    found = measurements({"reports": real.host})
    assert [m.position for m in found] == list(range(len(real.host)))
    for measured, report in zip(found, real.host):
        configuration = report["backend"]["configuration"]
        assert (measured.kind, measured.status, measured.backend, measured.runtime_version) == (
            "bench", "ok", report["backend"]["name"], report["backend"]["version"])
        assert (measured.model_sha256, measured.precision) == (report["model"]["sha256"], report["model"]["precision"])
        assert measured.threads == configuration.get("threads", configuration.get("intra_op_threads"))
        assert measured.p50_ms == report["latency"]["p50_ms"] and measured.p99_ms == report["latency"]["p99_ms"]
        assert measured.peak_rss_mb == report["memory"]["peak_rss_mb"]
        assert measured.top1 == report["accuracy"]["top1"]
        assert measured.stability == report["latency"]["stability"]["verdict"]
        assert measured.top1_agreement == (report["fidelity"] or {}).get("top1_agreement")
        assert measured.board_model == (report["device"]["model"] or report["device"]["cpu"]["model"])


def test_the_hardware_of_a_jetson_and_the_runtimes_of_info(real: RealReports) -> None:
    orin = hardware(device_section(str(ORIN)).to_dict())
    assert orin is not None and (orin.kind, orin.jetpack, orin.l4t, orin.soc) == ("jetson", "6.2", "36.4.3", "tegra234")
    assert orin.board_model == "NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super"
    listed = runtimes(real.host_info)
    assert listed is not None and {r.name for r in listed} >= {"onnxruntime", "tflite"}
    assert all(r.available == (r.version is not None) for r in listed if r.name in ("onnxruntime", "tflite"))
    assert runtimes({"runtimes": None}) is None


def test_hostile_values_become_none() -> None:
    assert [text(v) for v in ("a\0b", "x" * 2000, "", 3, None)] == [None] * 5
    assert [integer(v) for v in (True, 2**40, 1.0, "3")] == [None] * 4
    assert [number(v) for v in (True, "NaN", 10**400, json.loads("1e400"), None)] == [None] * 5
    assert board_model({"model": None, "cpu": "not an object", "kind": "x86"}) == "x86"
    assert hardware([1]) is None and measurements({"reports": "x"}) == [] and measurements(None) == []
    odd = measurements({"reports": [{"backend": {"configuration": [2]}, "latency": {"p50_ms": "fast"}}, 7]})
    assert len(odd) == 1 and odd[0].threads is None and odd[0].p50_ms is None
