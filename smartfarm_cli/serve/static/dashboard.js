// smartfarm live dashboard: polls the server's /api endpoints (the CLI's queries) and draws
// the trend with the vendored uPlot. Every value from the server goes into the page as text
// (textContent), never as HTML: device ids and spike details come from untrusted devices.
"use strict";

const METRICS = ["temperature", "humidity", "co2"];
const LIVE_MS = 2000;     // latest + spikes
const TREND_MS = 30000;   // trend charts
const COLORS = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02",
                "#a6761d", "#666666", "#1f78b4", "#b2df8a"];
const charts = {};
let lastOk = 0;

function cell(row, text) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "-" : String(text);
  row.appendChild(td);
}

function num(value, digits) {
  return typeof value === "number" ? value.toFixed(digits) : "-";
}

function clock(iso) {
  return iso ? iso.replace("T", " ").replace(/\.\d+Z$/, "").replace("Z", "") : "-";
}

async function getJSON(url) {
  const response = await fetch(url, {cache: "no-store"});
  if (!response.ok) {
    let message = response.statusText;
    try { message = (await response.json()).message || message; } catch (e) { /* not JSON */ }
    throw new Error(url + ": " + response.status + " " + message);
  }
  return response.json();
}

function fill(tableId, rows, build) {
  const body = document.querySelector("#" + tableId + " tbody");
  const fresh = document.createElement("tbody");
  if (rows.length === 0) {
    const tr = document.createElement("tr");
    const td = document.createElement("td");
    td.colSpan = 8; td.className = "empty"; td.textContent = "nothing yet";
    tr.appendChild(td); fresh.appendChild(tr);
  }
  rows.forEach((row) => fresh.appendChild(build(row)));
  body.replaceWith(fresh);
  // the footnote of the `*` marks: shown while a synthetic row is listed
  document.getElementById(tableId + "-synthetic").hidden = !rows.some((r) => r.synthetic);
}

// A synthetic reading's device (simulate, demo, backfill) carries a `*`, as in `farmctl watch`.
function marked(row) {
  return row.synthetic ? row.device_id + "*" : row.device_id;
}

async function refreshLatest() {
  const data = await getJSON("/api/latest");
  fill("latest", data.devices, (d) => {
    const tr = document.createElement("tr");
    tr.dataset.greenhouse = d.greenhouse_id;
    tr.dataset.device = d.device_id;
    if (d.severity) tr.classList.add(d.severity);
    if (d.live) tr.classList.add("live");
    if (d.synthetic) tr.classList.add("synthetic");
    [d.greenhouse_id, marked(d), clock(d.timestamp), num(d.temperature, 1),
     num(d.humidity, 1), num(d.co2, 0), d.error_code, d.rule || ""].forEach((v) => cell(tr, v));
    return tr;
  });
}

async function refreshSpikes() {
  const data = await getJSON("/api/spikes?since=24h&limit=50");
  fill("spikes", data.rows, (s) => {
    const tr = document.createElement("tr");
    tr.classList.add(s.severity);
    tr.dataset.greenhouse = s.greenhouse_id;
    tr.dataset.device = s.device_id;
    tr.dataset.rule = s.rule;
    if (s.synthetic) tr.classList.add("synthetic");
    [clock(s.timestamp), s.greenhouse_id, marked(s), s.rule, s.metric, s.severity,
     s.detail].forEach((v) => cell(tr, v));
    return tr;
  });
}

function seriesFor(rows) {
  const greenhouses = [...new Set(rows.map((r) => r.greenhouse_id))].sort();
  const xs = [...new Set(rows.map((r) => Date.parse(r.bucket) / 1000))].sort((a, b) => a - b);
  const at = new Map(xs.map((x, i) => [x, i]));
  const ys = greenhouses.map(() => new Array(xs.length).fill(null));
  rows.forEach((r) => {
    ys[greenhouses.indexOf(r.greenhouse_id)][at.get(Date.parse(r.bucket) / 1000)] = r.avg;
  });
  return {greenhouses, data: [xs, ...ys]};
}

function draw(metric, rows) {
  const box = document.getElementById("chart-" + metric);
  const {greenhouses, data} = seriesFor(rows);
  box.dataset.greenhouses = greenhouses.join(",");
  box.dataset.points = String(data[0].length);
  if (charts[metric]) { charts[metric].destroy(); delete charts[metric]; }
  const width = Math.max(320, Math.min(600, (document.body.clientWidth - 150) / 3));
  const options = {
    width: width, height: 220,
    scales: {x: {time: true}},
    series: [{}].concat(greenhouses.map((g, i) => ({
      label: g, stroke: COLORS[i % COLORS.length], width: 1.5, spanGaps: false,
    }))),
    axes: [{}, {size: 55}],
  };
  charts[metric] = new uPlot(options, data, box);
}

async function refreshTrend() {
  const days = document.getElementById("days").value;
  const results = await Promise.all(METRICS.map(
    (m) => getJSON("/api/trend?metric=" + m + "&days=" + encodeURIComponent(days))));
  results.forEach((result, i) => draw(METRICS[i], result.rows));
  document.getElementById("trend-note").textContent =
    "(last " + days + " d, average per " + results[0].every + ", sensor errors and impossible values left out)";
}

function showStatus(error) {
  const status = document.getElementById("status");
  if (error) {
    status.classList.add("stale");
    status.textContent = "server not answering; last update " +
      (lastOk ? new Date(lastOk).toISOString().slice(11, 19) + " UTC" : "never");
  } else {
    lastOk = Date.now();
    status.classList.remove("stale");
    status.textContent = "updated " + new Date(lastOk).toISOString().slice(11, 19) + " UTC";
  }
}

async function tick(work) {
  try { await work(); showStatus(null); } catch (e) { showStatus(e); }
}

function loop(work, every) {
  const run = async () => { await tick(work); setTimeout(run, every); };
  run();
}

document.getElementById("days").addEventListener("change", () => tick(refreshTrend));
loop(async () => { await Promise.all([refreshLatest(), refreshSpikes()]); }, LIVE_MS);
loop(refreshTrend, TREND_MS);
