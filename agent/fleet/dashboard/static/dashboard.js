// edge-agent fleet dashboard: charts from the JSON a page embeds (vendored Chart.js), sortable tables, and a
// fleet job followed live over server-sent events. No inline scripts (the pages' Content-Security-Policy).
"use strict";

window.edgeCharts = {};
const PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4b5563"];

function embedded(id) {
  const node = document.getElementById(id);
  return node ? JSON.parse(node.textContent) : null;
}

function clock(ms) {
  const date = new Date(ms);
  return date.toISOString().slice(11, 19);
}

function timeChart(canvas, series, unit) {
  return new Chart(canvas, {
    type: "line",
    data: { datasets: series.map((line, index) => ({
      label: line.label, data: line.points.map(([x, y]) => ({ x, y })), borderColor: PALETTE[index % PALETTE.length],
      backgroundColor: PALETTE[index % PALETTE.length], pointRadius: 0, borderWidth: 1.5 })) },
    options: { animation: false, maintainAspectRatio: false, parsing: false,
      scales: { x: { type: "linear", ticks: { callback: clock, maxTicksLimit: 8 }, title: { display: true, text: "UTC" } },
                y: { title: { display: true, text: unit } } },
      plugins: { tooltip: { callbacks: { title: (items) => items.length ? clock(items[0].parsed.x) + " UTC" : "" } } } },
  });
}

function percentileChart(canvas, rows) {
  const labels = rows.map((row) => row.label);
  const marker = (key, color, style) => ({ type: "line", label: key.replace("_ms", ""), showLine: false,
    data: rows.map((row) => row.values[key]), borderColor: color, backgroundColor: color, pointStyle: style, pointRadius: 6 });
  return new Chart(canvas, {
    type: "bar",
    data: { labels, datasets: [
      { label: "min–max", data: rows.map((row) => [row.values.min_ms, row.values.max_ms]),
        backgroundColor: "rgba(37,99,235,0.18)", borderColor: "#2563eb", borderWidth: 1, barPercentage: 0.5 },
      marker("p50_ms", "#16a34a", "rect"), marker("p90_ms", "#d97706", "triangle"), marker("p99_ms", "#dc2626", "crossRot")] },
    options: { animation: false, maintainAspectRatio: false,
      scales: { y: { type: "logarithmic", title: { display: true, text: "latency, ms (log)" } },
                x: { ticks: { autoSkip: false, maxRotation: 60, minRotation: 30 } } } },
  });
}

function decade(value) {
  // A log axis labelled at powers of ten only.
  const power = Math.log10(value);
  return Math.abs(power - Math.round(power)) < 1e-9 ? (value >= 1 ? String(value) : value.toPrecision(1)) : "";
}

function rooflineChart(canvas, roof) {
  const xs = roof.points.map((point) => point[1]);
  const low = Math.min(0.01, ...xs) / 2, high = Math.max(1000, ...xs) * 2;
  const top = Math.max(...Object.values(roof.compute));
  const datasets = [];
  let color = 0;
  for (const [name, gbs] of Object.entries(roof.memory)) {
    datasets.push({ type: "line", label: `${name} ${gbs.toFixed(0)} GB/s`, data: [{ x: low, y: gbs * low }, { x: top / gbs, y: top }],
      borderColor: PALETTE[color++ % PALETTE.length], borderDash: [4, 3], pointRadius: 0, borderWidth: 1 });
  }
  for (const [name, gflops] of Object.entries(roof.compute)) {
    datasets.push({ type: "line", label: `${name} ${gflops.toFixed(0)} GFLOP/s`, data: [{ x: low, y: gflops }, { x: high, y: gflops }],
      borderColor: PALETTE[color++ % PALETTE.length], pointRadius: 0, borderWidth: 1.5 });
  }
  datasets.push({ type: "scatter", label: "layers", data: roof.points.map(([name, x, y]) => ({ x, y, name })),
    backgroundColor: "#111827", pointRadius: 4 });
  return new Chart(canvas, {
    type: "scatter", data: { datasets },
    options: { animation: false, maintainAspectRatio: false,
      scales: { x: { type: "logarithmic", min: low, max: high, ticks: { callback: decade },
                     title: { display: true, text: "intensity, FLOP/byte" } },
                y: { type: "logarithmic", ticks: { callback: decade }, title: { display: true, text: "GFLOP/s" } } },
      plugins: { tooltip: { callbacks: { label: (item) => item.raw.name ? `${item.raw.name}: ${item.raw.y.toPrecision(3)} GFLOP/s at ${item.raw.x.toPrecision(3)} FLOP/B` : item.dataset.label } } } },
  });
}

function compareChart(canvas, sides) {
  const keys = ["min_ms", "p50_ms", "p90_ms", "p99_ms", "max_ms"];
  return new Chart(canvas, {
    type: "bar",
    data: { labels: keys.map((key) => key.replace("_ms", "")), datasets: sides.map((side, index) => ({
      label: side.label, data: keys.map((key) => side.latency[key]), backgroundColor: PALETTE[index] })) },
    options: { animation: false, maintainAspectRatio: false, scales: { y: { title: { display: true, text: "ms" } } } },
  });
}

const BUILDERS = { time: (canvas, data) => timeChart(canvas, data, canvas.dataset.unit || ""),
                   percentiles: percentileChart, roofline: rooflineChart, compare: compareChart };

function drawCharts() {
  if (typeof Chart === "undefined") return;
  for (const canvas of document.querySelectorAll("canvas[data-chart]")) {
    try {  // one bad chart must not stop the others, the sorting or a job's stream
      const data = embedded(canvas.dataset.source);
      if (data !== null) window.edgeCharts[canvas.id] = BUILDERS[canvas.dataset.chart](canvas, data);
    } catch (error) {
      console.error(`chart ${canvas.id}:`, error);
    }
  }
}

function sortable(table) {
  const heads = table.tHead ? Array.from(table.tHead.rows[0].cells) : [];
  heads.forEach((head, column) => head.addEventListener("click", () => {
    const ascending = !head.classList.contains("sorted-asc");
    heads.forEach((other) => other.classList.remove("sorted-asc", "sorted-desc"));
    head.classList.add(ascending ? "sorted-asc" : "sorted-desc");
    const body = table.tBodies[0];
    const key = (row) => {
      const cell = row.cells[column];
      const raw = cell.dataset.sort !== undefined ? cell.dataset.sort : cell.textContent.trim();
      const value = parseFloat(raw);
      return Number.isNaN(value) || raw === "" ? raw : value;
    };
    const rows = Array.from(body.rows).sort((a, b) => {
      const x = key(a), y = key(b);
      const order = typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y));
      return ascending ? order : -order;
    });
    rows.forEach((row) => body.appendChild(row));
  }));
}

function followJob(panel) {
  const status = document.getElementById("job-status");
  const stream = new EventSource(panel.dataset.stream);
  stream.addEventListener("job", (event) => {
    const job = JSON.parse(event.data);
    for (const board of job.boards) {
      const row = panel.querySelector(`tr[data-device="${CSS.escape(board.device_id)}"]`);
      if (!row) continue;
      const badge = row.querySelector(".state");
      badge.textContent = board.state;
      badge.className = `badge state ${board.state}`;
      const bar = row.querySelector("progress");
      if (board.progress !== null) bar.value = board.progress;
      if (board.state === "done") bar.value = 1;
      row.querySelector(".detail").textContent = board.detail || "";
      const link = row.querySelector(".result");
      if (board.state === "done" || board.state === "failed") link.hidden = false;
    }
    document.getElementById("job-counts").textContent =
      Object.entries(job.counts).map(([state, count]) => `${count} ${state}`).join(" · ");
    status.textContent = "live";
  });
  stream.addEventListener("end", () => { status.textContent = "finished"; panel.dataset.finished = "yes"; stream.close(); });
  stream.onerror = () => {
    if (panel.dataset.finished === "yes") return;
    // A closed stream is one the server refused (the session expired or was logged out): it will not retry.
    status.textContent = stream.readyState === EventSource.CLOSED ? "stopped: log in again and reload" : "reconnecting…";
  };
}

document.addEventListener("DOMContentLoaded", () => {
  drawCharts();
  document.querySelectorAll("table.sortable").forEach(sortable);
  const job = document.getElementById("job-live");
  if (job && job.dataset.finished !== "yes") followJob(job);
});
