// bnserve's page: reads the service's own JSON views and draws them as plain SVG. Nothing is fetched from
// anywhere but this server. Written by hand (no chart library): a few line and bar charts do not need one.
"use strict";

const params = new URLSearchParams(location.search);
const REFRESH_MS = Math.max(500, Number(params.get("refresh") || 3000));
const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"];
const SVG = "http://www.w3.org/2000/svg";
let selection = { model: params.get("model"), version: params.get("version") }; // null: the single model
let lastRate = null;

// ---------------------------------------------------------------------------------------------- helpers

function $(id) { return document.getElementById(id); }

function fmt(v) {
  if (v === null || v === undefined) return "—";
  if (typeof v !== "number") return String(v);
  if (Number.isInteger(v)) return String(v);
  return String(Number(v.toPrecision(6)));
}

function query() {
  const q = new URLSearchParams();
  if (selection.model) q.set("model", selection.model);
  if (selection.version) q.set("version", selection.version);
  const s = q.toString();
  return s ? "?" + s : "";
}

async function getJSON(path) {
  const url = path + query();
  const r = await fetch(url, { cache: "no-store" });
  const body = await r.json().catch(() => ({ error: `${url}: answered ${r.status} without JSON` }));
  return { ok: r.ok, status: r.status, body };
}

function el(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }

function extent(values) {
  const finite = values.filter((v) => Number.isFinite(v));
  if (!finite.length) return [0, 1];
  let lo = Math.min(...finite), hi = Math.max(...finite);
  if (lo === hi) { lo -= Math.abs(lo) * 0.1 || 1; hi += Math.abs(hi) * 0.1 || 1; }
  return [lo, hi];
}

// Round tick values (1, 2 or 5 times a power of ten) covering [lo, hi].
function niceTicks(lo, hi, n) {
  const raw = (hi - lo) / n;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const norm = raw / mag;
  const step = (norm < 1.5 ? 1 : norm < 3 ? 2 : norm < 7 ? 5 : 10) * mag;
  const out = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) out.push(Number(t.toPrecision(12)));
  return out;
}

function tickText(v) { return String(Number(v.toPrecision(4))); }

// A frame with axes and a legend row on top; gives back the x and y mappers. log: y on a log10 axis.
function frame(svg, xs, ys, { log = false, xlabel = "", ylabel = "", yMin = null, names = [], xTicks = true } = {}) {
  clear(svg);
  const box = svg.viewBox.baseVal;
  const W = box && box.width ? box.width : 520, H = box && box.height ? box.height : 240;
  const m = { l: 64, r: 12, t: names.length ? 22 : 10, b: 34 };
  const ty = (v) => (log ? Math.log10(Math.max(v, 1e-12)) : v);
  const [x0, x1] = extent(xs);
  let [y0, y1] = extent(ys.map(ty));
  if (yMin !== null) y0 = Math.min(y0, yMin);
  const pad = (y1 - y0) * 0.05;
  if (yMin === null || y0 !== yMin) y0 -= pad;
  y1 += pad;
  const X = (v) => m.l + ((v - x0) / (x1 - x0 || 1)) * (W - m.l - m.r);
  const Yt = (t) => H - m.b - ((t - y0) / (y1 - y0 || 1)) * (H - m.t - m.b);
  const Y = (v) => Yt(ty(v));
  // On a log axis: the powers of ten in range, or round values when fewer than two decades show.
  let yTicks = niceTicks(y0, y1, 4);
  if (log) {
    const decades = yTicks.filter((t) => Number.isInteger(t));
    yTicks = decades.length >= 2 ? decades : niceTicks(10 ** y0, 10 ** y1, 4).filter((v) => v > 0).map(Math.log10);
  }
  for (const t of yTicks) {
    svg.append(el("line", { x1: m.l, x2: W - m.r, y1: Yt(t), y2: Yt(t), class: "grid" }));
    svg.append(el("text", { x: m.l - 4, y: Yt(t) + 4, "text-anchor": "end" }, tickText(log ? 10 ** t : t)));
  }
  const integerX = xs.every((v) => Number.isInteger(v));
  for (const t of xTicks ? niceTicks(x0, x1, 5).filter((t) => !integerX || Number.isInteger(t)) : []) {
    svg.append(el("text", { x: X(t), y: H - m.b + 14, "text-anchor": "middle" }, tickText(t)));
  }
  svg.append(el("line", { x1: m.l, x2: m.l, y1: m.t, y2: H - m.b, class: "axis" }));
  svg.append(el("line", { x1: m.l, x2: W - m.r, y1: H - m.b, y2: H - m.b, class: "axis" }));
  svg.append(el("text", { x: (W + m.l) / 2, y: H - 4, "text-anchor": "middle" }, xlabel));
  svg.append(el("text", { x: 10, y: (H - m.b + m.t) / 2, transform: `rotate(-90 10 ${(H - m.b + m.t) / 2})`, "text-anchor": "middle" }, ylabel));
  let x = m.l;
  names.forEach((name, i) => {
    svg.append(el("rect", { x, y: 8, width: 12, height: 3, fill: COLORS[i % COLORS.length] }));
    svg.append(el("text", { x: x + 16, y: 13, class: "legend" }, name));
    x += 24 + name.length * 6.2;
  });
  return { X, Y, W, H, m };
}

function path(points) {
  return points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y))
    .map(([x, y], i) => `${i ? "L" : "M"}${x.toFixed(1)},${y.toFixed(1)}`).join("");
}

// series: [{name, x: [], y: [], lo?: [], hi?: []}]
function lineChart(svg, series, opts) {
  const xs = series.flatMap((s) => s.x);
  const ys = series.flatMap((s) => [...s.y, ...(s.lo || []), ...(s.hi || [])]);
  const { X, Y } = frame(svg, xs, ys, { ...opts, names: series.map((s) => s.name) });
  series.forEach((s, i) => {
    const color = COLORS[i % COLORS.length];
    if (s.lo && s.hi) {
      const upper = s.x.map((x, j) => [X(x), Y(s.hi[j])]);
      const lower = s.x.map((x, j) => [X(x), Y(s.lo[j])]).reverse();
      svg.append(el("path", { d: path(upper) + path(lower).replace(/^M/, "L") + "Z", fill: color, opacity: 0.18, class: "band" }));
    }
    svg.append(el("path", { d: path(s.x.map((x, j) => [X(x), Y(s.y[j])])), fill: "none", stroke: color, "stroke-width": 1.6, class: "series", "data-name": s.name, "data-points": s.y.length }));
  });
}

// bars: [{label, value}]; a dashed line at threshold
function barChart(svg, bars, threshold, empty) {
  if (!bars.length) {
    clear(svg);
    svg.append(el("text", { x: 260, y: 120, "text-anchor": "middle" }, empty));
    return;
  }
  const values = bars.map((b) => (Number.isFinite(b.value) ? b.value : 0));
  const { X, Y, H, m } = frame(svg, [0, Math.max(bars.length, 1)], [...values, threshold || 0, 0], { yMin: 0, xTicks: false, ylabel: "score" });
  const width = (X(1) - X(0)) * 0.8;
  bars.forEach((b, i) => {
    const v = Number.isFinite(b.value) ? b.value : 0;
    const bar = el("rect", { x: X(i) + width * 0.125, y: Y(v), width, height: Math.max(Y(0) - Y(v), 0), fill: v > threshold ? "#c62828" : "#1f77b4", class: "bar", "data-label": b.label, "data-value": v });
    bar.append(el("title", {}, `${b.label}: ${fmt(b.value)}`));
    svg.append(bar);
    if (bars.length <= 12) svg.append(el("text", { x: X(i) + width * 0.6, y: H - m.b + 26, "text-anchor": "middle" }, b.label));
  });
  if (threshold) {
    svg.append(el("line", { x1: m.l, x2: X(bars.length), y1: Y(threshold), y2: Y(threshold), stroke: "#555", "stroke-dasharray": "4 3" }));
  }
}

// ---------------------------------------------------------------------------------------------- views

function showError(message) {
  const p = $("page-error");
  p.hidden = !message;
  p.textContent = message || "";
}

function renderCard(meta, stats) {
  $("title-model").textContent = `· ${meta.name}`;
  document.title = `bnserve · ${meta.name}`;
  $("card-name").textContent = meta.name;
  $("card-task").textContent = meta.task;
  $("card-feature-count").textContent = `${meta.feature_names.length} features`;
  const list = $("card-features");
  list.replaceChildren(...meta.feature_names.map((f) => Object.assign(document.createElement("li"), { textContent: f })));
  $("card-classes").textContent = meta.class_labels ? meta.class_labels.join(", ") : "— (regression: " + (meta.target_name || "value") + ")";
  $("card-sha256").textContent = meta.artifact_sha256;
  $("card-fingerprint").textContent = meta.bn_fingerprint;
  const same = stats.fingerprint === stats.artifact_fingerprint;
  const check = $("card-fingerprint-check");
  check.textContent = same ? "✓ the live statistics match the artifact" : "✗ the live statistics differ from the artifact";
  check.className = same ? "ok" : "bad";
  $("card-statistics").textContent = `${stats.statistics}, mode ${stats.mode}`;
  $("card-created").textContent = meta.created_at;
  const body = $("card-metrics").tBodies[0];
  body.replaceChildren(...Object.entries(meta.metrics).map(([k, v]) => {
    const tr = document.createElement("tr");
    tr.dataset.metric = k;
    tr.innerHTML = "<td></td><td></td>";
    tr.cells[0].textContent = k;
    tr.cells[1].textContent = fmt(v);
    return tr;
  }));
}

const SUMMARY_FIELDS = ["running_mean", "running_var", "weight", "bias"];

function renderBN(stats) {
  const root = $("bn-layers");
  root.replaceChildren();
  for (const layer of stats.layers) {
    const section = document.createElement("div");
    section.className = "bn-layer";
    section.dataset.layer = layer.name;
    const h = document.createElement("h3");
    h.textContent = `${layer.name}: BatchNorm${layer.kind}, ${layer.num_features} channels, momentum ${fmt(layer.momentum)}, eps ${fmt(layer.eps)}, ${layer.num_batches_tracked} batches tracked`;
    const table = document.createElement("table");
    table.innerHTML = "<thead><tr><th></th><th>min</th><th>max</th><th>mean</th></tr></thead><tbody></tbody>";
    for (const field of SUMMARY_FIELDS.filter((f) => layer.summary[f])) {
      const tr = document.createElement("tr");
      tr.innerHTML = "<td></td>" + ["min", "max", "mean"].map((s) => `<td data-field="${field}.${s}"></td>`).join("");
      tr.cells[0].textContent = field;
      ["min", "max", "mean"].forEach((s, i) => { tr.cells[i + 1].textContent = fmt(layer.summary[field][s]); });
      table.tBodies[0].append(tr);
    }
    const charts = document.createElement("div");
    charts.className = "charts";
    const statsSvg = el("svg", { viewBox: "0 0 520 240", class: "chart chart-stats", "data-channels": layer.num_features });
    const affineSvg = el("svg", { viewBox: "0 0 520 240", class: "chart chart-affine", "data-channels": layer.num_features });
    charts.append(figure(statsSvg, "running mean ± one running std, per channel"), figure(affineSvg, "gamma (weight) and beta (bias), per channel"));
    section.append(h, table, charts);
    root.append(section);
    const ch = layer.running_mean.map((_, i) => i);
    const std = layer.running_var.map((v) => Math.sqrt(v));
    lineChart(statsSvg, [{ name: "running mean ± std", x: ch, y: layer.running_mean, lo: layer.running_mean.map((v, i) => v - std[i]), hi: layer.running_mean.map((v, i) => v + std[i]) }], { xlabel: "channel" });
    if (layer.weight) {
      lineChart(affineSvg, [{ name: "gamma (weight)", x: ch, y: layer.weight }, { name: "beta (bias)", x: ch, y: layer.bias }], { xlabel: "channel" });
    }
  }
}

function figure(svg, caption) {
  const f = document.createElement("figure");
  const c = document.createElement("figcaption");
  c.textContent = caption;
  f.append(c, svg);
  return f;
}

function renderCurves(answer) {
  const missing = $("curves-missing");
  if (!answer.ok) {
    missing.hidden = false;
    missing.textContent = answer.body.error || "no training history";
    clear($("chart-loss"));
    clear($("chart-metric"));
    return;
  }
  missing.hidden = true;
  const h = answer.body.history;
  const epochs = h.epochs.map((e) => e.epoch);
  lineChart($("chart-loss"), [
    { name: "train (running)", x: epochs, y: h.epochs.map((e) => e.train.loss) },
    { name: "validation", x: epochs, y: h.epochs.map((e) => e.val.loss) },
  ], { log: true, xlabel: "epoch", ylabel: "loss" });
  const series = [{ name: `validation ${h.metric}`, x: epochs, y: h.epochs.map((e) => e.val[h.metric]) }];
  if (h.epochs.every((e) => h.metric in e.train)) series.unshift({ name: `train ${h.metric} (running)`, x: epochs, y: h.epochs.map((e) => e.train[h.metric]) });
  lineChart($("chart-metric"), series, { xlabel: "epoch", ylabel: h.metric });
  $("metric-caption").textContent = `${h.metric} per epoch`;
}

const VERDICT_TEXT = { ok: "OK", drift: "DRIFT", insufficient_data: "NOT ENOUGH DATA", error: "ERROR", disabled: "OFF" };

function renderDrift(d) {
  const v = $("drift-verdict");
  v.dataset.verdict = d.verdict;
  v.textContent = VERDICT_TEXT[d.verdict] || d.verdict;
  $("drift-message").textContent = d.message;
  $("drift-score").textContent = fmt(d.score);
  $("drift-threshold").textContent = fmt(d.threshold);
  $("drift-rows").textContent = fmt(d.rows);
  $("drift-min-rows").textContent = fmt(d.min_rows);
  if (d.enabled === false) return;
  const layers = [];
  if (d.input) layers.push({ label: "input", value: d.input.score });
  for (const l of d.layers || []) layers.push({ label: l.name, value: l.score });
  barChart($("drift-layers"), layers, d.threshold, "no rows in the window yet");
  const features = (d.input && d.input.features) || [];
  barChart($("drift-features"), features.map((f) => ({ label: f.feature, value: f.score })), d.threshold, "no rows in the window yet");
}

// Prometheus text: the sum of one series over the label sets that contain every given label.
function metricSum(text, name, labels) {
  let total = 0;
  for (const line of text.split("\n")) {
    if (!line.startsWith(name + "{") && !line.startsWith(name + " ")) continue;
    if (!Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) continue;
    total += Number(line.slice(line.lastIndexOf(" ") + 1));
  }
  return total;
}

async function refreshRate() {
  const r = await fetch("/metrics", { cache: "no-store" });
  if (!r.ok) return;
  const text = await r.text();
  const now = performance.now() / 1000;
  const requests = metricSum(text, "bnserve_requests_total", { route: "/predict" });
  const rows = metricSum(text, "bnserve_predict_rows_sum", {});
  if (lastRate) {
    const dt = now - lastRate.t;
    $("rate-requests").textContent = fmt(Math.max(requests - lastRate.requests, 0) / dt);
    $("rate-rows").textContent = fmt(Math.max(rows - lastRate.rows, 0) / dt);
  }
  $("requests-total").textContent = fmt(requests);
  lastRate = { t: now, requests, rows };
}

async function refreshLive() {
  try {
    const d = await getJSON("/drift");
    if (d.ok) renderDrift(d.body);
    await refreshRate();
    const u = $("drift-updated");
    u.dataset.count = String(Number(u.dataset.count) + 1);
    u.textContent = new Date().toLocaleTimeString();
  } catch (e) {
    showError(`could not refresh the live view: ${e}`);
  }
}

async function loadModel() {
  const [meta, stats, hist] = await Promise.all([getJSON("/metadata"), getJSON("/bn-stats"), getJSON("/history")]);
  if (!meta.ok || !stats.ok) {
    showError((meta.body.error || stats.body.error || "the model is not ready") + " (reload to try again)");
    return false;
  }
  showError("");
  renderCard(meta.body, stats.body);
  renderBN(stats.body);
  renderCurves(hist);
  return true;
}

// GET /models (a model repository) lets the user pick; with one model in one version, or without it (404),
// the page shows the single model.
async function setupPicker() {
  let answer;
  try {
    const r = await fetch("/models", { cache: "no-store" });
    if (!r.ok) return;
    answer = await r.json();
  } catch (e) {
    return;
  }
  const models = answer.models || [];
  if (!models.length || (models.length === 1 && models[0].versions.length <= 1)) return;
  const modelSelect = $("model-select"), versionSelect = $("version-select");
  if (!selection.model) selection.model = answer.default || models[0].name;
  const fillVersions = () => {
    const m = models.find((x) => x.name === selection.model) || models[0];
    versionSelect.replaceChildren(...m.versions.map((v) => new Option(`${v.version} (${v.state})`, v.version)));
    if (!m.versions.some((v) => v.version === selection.version)) {
      const ready = m.versions.filter((v) => v.state === "READY");
      selection.version = (ready.length ? ready[ready.length - 1] : m.versions[m.versions.length - 1] || {}).version || null;
    }
    versionSelect.value = selection.version;
    const chosen = m.versions.find((v) => v.version === selection.version);
    $("picker-state").textContent = chosen && chosen.state !== "READY" ? `${chosen.state}: ${chosen.reason || ""}` : "";
  };
  modelSelect.replaceChildren(...models.map((m) => new Option(m.name, m.name)));
  modelSelect.value = selection.model;
  fillVersions();
  const changed = async () => {
    window.history.replaceState(null, "", query() || location.pathname);
    lastRate = null;
    await loadModel();
    await refreshLive();
  };
  modelSelect.addEventListener("change", async () => { selection.model = modelSelect.value; selection.version = null; fillVersions(); await changed(); });
  versionSelect.addEventListener("change", async () => { selection.version = versionSelect.value; fillVersions(); await changed(); });
  $("picker").hidden = false;
}

async function main() {
  $("refresh-seconds").textContent = fmt(REFRESH_MS / 1000);
  await setupPicker();
  await loadModel();
  await refreshLive();
  document.body.dataset.ready = "1"; // what the browser tests wait for
  setInterval(refreshLive, REFRESH_MS);
}

main();
