// meshd dashboard: reads /api/state every second and redraws. No
// libraries, nothing from the network.
"use strict";

const $ = (sel) => document.querySelector(sel);
const svgNS = "http://www.w3.org/2000/svg";

function el(tag, attrs, text) {
  const e = tag.startsWith("svg:") ? document.createElementNS(svgNS, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function row(cells, attrs) {
  const tr = el("tr", attrs);
  for (const c of cells) {
    const td = typeof c === "object" ? el("td", c.attrs, c.text) : el("td", {}, c);
    tr.appendChild(td);
  }
  return tr;
}

function fill(tbody, rows, empty, cols) {
  tbody.replaceChildren(...(rows.length ? rows : [row([{ text: empty, attrs: { colspan: cols, class: "muted" } }])]));
}

function until(t) {
  const s = (new Date(t) - Date.now()) / 1000;
  if (s <= 0) return "expired";
  if (s < 120) return Math.round(s) + "s";
  if (s < 7200) return Math.round(s / 60) + "m";
  if (s < 172800) return Math.round(s / 3600) + "h";
  return Math.round(s / 86400) + "d";
}

const fmt = {
  rate: (r) => r.toFixed(1) + "/s",
  p99: (ms) => (ms < 0 ? "–" : ms < 1 ? ms.toFixed(2) + " ms" : ms.toFixed(1) + " ms"),
  err: (e) => (e * 100).toFixed(1) + "%",
};

function app(spiffe) {
  const m = /\/ns\/([^/]+)\/([^/]+)$/.exec(spiffe || "");
  return m ? m[2] + "." + m[1] : spiffe || "(no identity)";
}

function drawTopology(s) {
  const svg = $("#topology");
  const apps = [...new Set([...s.sidecars.map((x) => x.appId), ...s.edges.flatMap((e) => [e.from, e.to])])].sort();
  const pos = {};
  const cx = 320, cy = 150, r = apps.length > 1 ? 110 : 0;
  apps.forEach((a, i) => {
    const th = (2 * Math.PI * i) / apps.length - Math.PI / 2;
    pos[a] = [cx + r * Math.cos(th) * 1.8, cy + r * Math.sin(th)];
  });
  const defs = el("svg:defs");
  const marker = el("svg:marker", { id: "arrow", viewBox: "0 0 10 10", refX: "10", refY: "5", markerWidth: "7", markerHeight: "7", orient: "auto-start-reverse" });
  marker.appendChild(el("svg:path", { d: "M 0 0 L 10 5 L 0 10 z", fill: "#2f6fdf" }));
  defs.appendChild(marker);
  const parts = [defs];
  for (const e of s.edges) {
    const a = pos[e.from], b = pos[e.to];
    if (!a || !b || e.from === e.to) continue;
    const dx = b[0] - a[0], dy = b[1] - a[1], d = Math.hypot(dx, dy) || 1, k = 38 / d;
    const g = el("svg:g", { class: "edge" + (e.errors > 0 ? " errors" : ""), "data-edge": e.from + "→" + e.to });
    g.appendChild(el("svg:line", { x1: a[0] + dx * k, y1: a[1] + dy * k, x2: b[0] - dx * k, y2: b[1] - dy * k }));
    g.appendChild(el("svg:text", { x: (a[0] + b[0]) / 2, y: (a[1] + b[1]) / 2 - 8 },
      fmt.rate(e.rate) + " · p99 " + fmt.p99(e.p99ms) + " · " + fmt.err(e.errors) + " err"));
    parts.push(g);
  }
  for (const a of apps) {
    const all = s.sidecars.filter((x) => x.appId === a);
    const n = all.filter((x) => x.where !== "resolver"), elsewhere = all.length - n.length;
    const g = el("svg:g", { class: "node", "data-app": a });
    g.appendChild(el("svg:circle", { cx: pos[a][0], cy: pos[a][1], r: 34 }));
    g.appendChild(el("svg:text", { x: pos[a][0], y: pos[a][1] - 4 }, a));
    g.appendChild(el("svg:text", { x: pos[a][0], y: pos[a][1] + 12, class: "muted", "font-size": "11" },
      (n.length ? n.filter((x) => x.ready).length + "/" + n.length + " ready" : "not here") + (elsewhere ? " +" + elsewhere + " elsewhere" : "")));
    parts.push(g);
  }
  svg.replaceChildren(...parts);
}

function drawHistory(h) {
  const svg = $("#history");
  if (h.length < 2) { svg.replaceChildren(); return; }
  const max = Math.max(1, ...h.map((p) => p.rate));
  const t0 = h[0].t, t1 = h[h.length - 1].t || t0 + 1;
  const pts = (f) => h.map((p) => ((p.t - t0) / (t1 - t0 || 1)) * 400 + "," + (115 - (f(p) / max) * 105)).join(" ");
  svg.replaceChildren(
    el("svg:polyline", { points: pts((p) => p.rate) }),
    el("svg:polyline", { points: pts((p) => p.errRate), class: "err" }),
    el("svg:text", { x: 4, y: 12, "font-size": "10", fill: "#6b7385" }, "max " + max.toFixed(1) + "/s"));
}

function draw(s) {
  $("#sentry").textContent = s.sentry.running
    ? "sentry running (pid " + s.sentry.pid + ", " + s.sentry.address + ")"
    : "sentry not running: meshctl init";
  $("#sentry").className = s.sentry.running ? "ok" : "bad";
  $("#updated").textContent = "updated " + new Date(s.updated).toLocaleTimeString();
  drawTopology(s);
  fill($("#edges tbody"), s.edges.map((e) => row([e.from, e.to, { text: fmt.rate(e.rate), attrs: { class: "rate" } },
    fmt.p99(e.p99ms), { text: fmt.err(e.errors), attrs: { class: e.errors > 0 ? "bad" : "" } }, String(e.total)],
    { "data-edge": e.from + "→" + e.to })), "no calls yet", 6);
  fill($("#instances tbody"), s.sidecars.map((x) => x.where === "resolver"
    ? row([x.appId + "." + x.namespace, { text: "?", attrs: { class: "muted" } }, { text: "?", attrs: { class: "muted" } },
      { text: "?", attrs: { class: "muted" } }, x.internalAddress, { text: "?", attrs: { class: "muted" } },
      { text: "?", attrs: { class: "muted" } }], { "data-app": x.appId, class: "remote" })
    : row([x.appId + "." + x.namespace,
      { text: x.ready ? "ready" : "not ready", attrs: { class: x.ready ? "ok" : "bad" } },
      { text: x.appHealth || "–", attrs: { class: x.appHealth === "unhealthy" ? "bad" : "ok" } },
      { text: x.policyMode ? x.policyMode + ", default " + x.policyDefault : "–", attrs: { class: "policy" } },
      x.internalAddress, x.certExpiry ? "in " + until(x.certExpiry) : "–", String(x.policyDenied)],
      { "data-app": x.appId })), "no sidecars: meshctl run --app-id APP -- COMMAND", 7);
  $("#notready").textContent = s.sidecars.filter((x) => x.notReadyReason).map((x) => x.appId + ": " + x.notReadyReason).join("\n");
  const remote = s.sidecars.filter((x) => x.where === "resolver").length;
  $("#remote").textContent = remote ? "?: not known for the " + remote + " instance(s) the resolver lists elsewhere: a sidecar's admin endpoint listens on loopback of its own host" : "";
  fill($("#denials tbody"), s.denials.map((d) => row([d.app, app(d.source), d.method + " " + d.destination + " " + d.path,
    { text: d.reason, attrs: { class: "reason bad" } }, d.rule], { class: "denial" })), "no denials", 5);
  $("#roots").replaceChildren(...s.sentry.trustRoots ? s.sentry.trustRoots.map((r) =>
    el("li", {}, r.subject + " — expires in " + until(r.notAfter))) : []);
  drawHistory(s.history);
}

$("#preview").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  $("#previewSummary").textContent = "replaying…";
  try {
    const r = await fetch("api/preview", { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ policyDir: $("#policyDir").value }) });
    const res = await r.json();
    if (!r.ok) {
      $("#previewSummary").textContent = res.error;
      $("#previewSummary").className = "bad";
      $("#flips tbody").replaceChildren();
      return;
    }
    const n = res.flips.reduce((a, f) => a + f.count, 0);
    $("#previewSummary").className = "muted";
    $("#previewSummary").textContent = "replayed " + res.decisions + " recent decisions of " + res.sources.length +
      " sidecar(s): " + n + " would flip" + (res.missed ? " (" + res.missed + " older ones no longer kept)" : "");
    fill($("#flips tbody"), res.flips.map((f) => row([
      { text: f.from + " → " + f.to, attrs: { class: f.to === "DENY" ? "bad" : "ok" } }, String(f.count),
      app(f.source), f.method + " " + f.destination + " " + f.path, { text: f.reason || "", attrs: { class: "reason" } }, f.rule],
      { class: "flip" })), "no call would flip", 6);
  } catch (e) {
    $("#previewSummary").textContent = String(e);
  }
});

async function tick() {
  try {
    const r = await fetch("api/state", { cache: "no-store" });
    if (r.ok) draw(await r.json());
  } catch (e) {
    $("#updated").textContent = "cannot reach meshctl dashboard: " + e;
  }
  setTimeout(tick, 1000);
}
tick();
