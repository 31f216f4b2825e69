"""A real Prometheus (Debian's package) scrapes the coordinator's /metrics, served by a real uvicorn over a
real store, and a metric is read back through Prometheus's own HTTP query API."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest
from support.broker import free_port
from support.coordinator import served_api, wait_for
from support.fleet import RealReports, at, bench_result, status

from agent.fleet.api import make_app
from agent.fleet.ingest import ingest
from agent.fleet.settings import ApiSettings
from agent.fleet.store.database import Store

PROMETHEUS = shutil.which("prometheus")
pytestmark = pytest.mark.skipif(PROMETHEUS is None, reason="prometheus is not installed (apt-get install prometheus)")


@pytest.fixture
def prometheus(tmp_path: Path, store: Store) -> Iterator[str]:
    """Prometheus scraping the API every second; its base URL."""
    with served_api(make_app(store, ApiSettings())) as api:  # no tokens: /metrics stays public
        target = api.base.replace("http://", "")
        config = tmp_path / "prometheus.yml"
        config.write_text(f"global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: coordinator\n"
                          f"    static_configs:\n      - targets: ['{target}']\n")
        port = free_port()
        with open(tmp_path / "prometheus.log", "wb") as log:
            process = subprocess.Popen([str(PROMETHEUS), f"--config.file={config}",
                                        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                        f"--web.listen-address=127.0.0.1:{port}"],
                                       stdout=subprocess.DEVNULL, stderr=log)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            process.terminate()
            process.wait(timeout=30)


def query(base: str, expression: str) -> Any:
    """The result vector of an instant query, or None while Prometheus is not up."""
    try:
        with urllib.request.urlopen(f"{base}/api/v1/query?query={urllib.parse.quote(expression)}", timeout=5) as answer:
            return json.loads(answer.read())["data"]["result"]
    except OSError:
        return None


def test_prometheus_reads_the_fleet_back(store: Store, real: RealReports, prometheus: str) -> None:
    for device in ("board-a", "board-b"):
        ingest(store, *status(device, "online"), received_at=at(0))
    ingest(store, *status("board-c", "offline"), received_at=at(0))
    ingest(store, *bench_result("board-a", real.orin[0], "cmd-1", seconds=1), received_at=at(1))
    online = wait_for("a scraped sample", lambda: query(prometheus, 'edge_fleet_boards{state="online"}'), timeout=60)
    assert float(online[0]["value"][1]) == 2 and online[0]["metric"]["job"] == "coordinator"
    p50 = query(prometheus, 'edge_fleet_latency_p50_ms{device="board-a"}')
    expected = sorted(item["latency"]["p50_ms"] for item in real.orin[0] if item["status"] == "ok")
    assert sorted(float(sample["value"][1]) for sample in p50) == pytest.approx(expected)
