// The Switchboard console page: reads /api/stream (server-sent events over fetch, so a
// bearer token can go in a header) and draws what each frame says. No build step, no
// framework: DOM calls and the vendored uPlot. Everything from the server is shown with
// textContent, never parsed as HTML (tail payloads come from clients).
"use strict";

(function () {
  const TOKEN_KEY = "switchboard-console-token";
  const TAIL_MAX = 200;
  const $ = (id) => document.getElementById(id);
  const state = { access: null, history: null, charts: new Map(), tailAbort: null, streamAbort: null, deadletters: false };

  // -- helpers ---------------------------------------------------------------------------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else node.setAttribute(key, value);
    }
    for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    return node;
  }
  const num = (v) => (v === null || v === undefined ? "–" : Number(v).toLocaleString("en-US"));
  const rate = (v) => (v === null || v === undefined ? "–" : (v >= 100 ? v.toFixed(0) : v.toFixed(1)));
  const ms = (v) => (v === null || v === undefined ? "–" : (v >= 100 ? v.toFixed(0) : v.toFixed(2)) + " ms");
  function bytes(v) {
    if (v === null || v === undefined) return "–";
    const units = ["B", "KiB", "MiB", "GiB"]; let i = 0;
    while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
    return v.toFixed(i ? 1 : 0) + " " + units[i];
  }
  function duration(s) {
    s = Math.floor(s || 0);
    if (s < 120) return s + "s";
    if (s < 7200) return Math.floor(s / 60) + "m" + String(s % 60).padStart(2, "0") + "s";
    if (s < 172800) return Math.floor(s / 3600) + "h" + String(Math.floor(s % 3600 / 60)).padStart(2, "0") + "m";
    return Math.floor(s / 86400) + "d" + String(Math.floor(s % 86400 / 3600)).padStart(2, "0") + "h";
  }
  function headers(extra) {
    const h = Object.assign({}, extra || {});
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) h["Authorization"] = "Bearer " + token;
    return h;
  }
  function setLink(stateName, text) { const link = $("link"); link.dataset.state = stateName; link.textContent = text; }

  class Denied extends Error { constructor(status, text) { super(text); this.status = status; } }

  // Reads a text/event-stream response body; calls onEvent(name, data) per event.
  async function readEvents(url, onEvent, signal) {
    const response = await fetch(url, { headers: headers(), signal, cache: "no-store", credentials: "same-origin" });
    if (response.status === 401 || response.status === 403) throw new Denied(response.status, await response.text());
    if (!response.ok) throw new Error(url + ": HTTP " + response.status);
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end); buffer = buffer.slice(end + 2);
        let name = "message"; const data = [];
        for (const line of block.split("\n")) {
          if (line.startsWith("event: ")) name = line.slice(7);
          else if (line.startsWith("data: ")) data.push(line.slice(6));
        }
        if (data.length) onEvent(name, JSON.parse(data.join("\n")));
      }
    }
  }

  // -- the frame stream --------------------------------------------------------------------

  async function connect() {
    let delay = 500;
    for (;;) {
      state.streamAbort = new AbortController();
      try {
        await readEvents("api/stream", onStreamEvent, state.streamAbort.signal);
        setLink("reconnecting", "reconnecting…");
      } catch (error) {
        if (error instanceof Denied) { showLogin(error); return; }
        setLink("reconnecting", "reconnecting…");
      }
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay = Math.min(delay * 2, 10000);
    }
  }

  function onStreamEvent(name, data) {
    if (name === "hello") {
      state.access = data.access;
      state.history = data.history;
      state.deadletters = data.deadletters;
      $("login").hidden = true; $("main").hidden = false;
      $("who").textContent = data.access.who + (data.access.manage ? " · may act" : " · read-only");
      setLink("live", "live");
      for (const chart of state.charts.values()) chart.destroy();
      state.charts.clear();
      $("protocols").replaceChildren();
      if (data.frame) render(data.frame);
    } else if (name === "frame") {
      appendPoint(data.point);
      render(data.frame);
      setLink("live", "live");
    }
  }

  function appendPoint(point) {
    const history = state.history;
    if (!history) return;
    const length = history.t.length;
    history.t.push(point.t);
    for (const [key, value] of Object.entries(point.values)) {
      if (!history.series[key]) history.series[key] = new Array(length).fill(null);
      history.series[key].push(value);
    }
    for (const [key, line] of Object.entries(history.series)) if (line.length < history.t.length) line.push(null);
    const cutoff = point.t - 900 - 1;
    let drop = 0;
    while (drop < history.t.length && history.t[drop] < cutoff) drop++;
    if (drop) { history.t.splice(0, drop); for (const line of Object.values(history.series)) line.splice(0, drop); }
  }

  // -- rendering -----------------------------------------------------------------------------

  function render(frame) {
    $("clock").textContent = new Date(frame.time * 1000).toLocaleTimeString();
    renderProcesses(frame.processes);
    renderLayer(frame.layer);
    renderProtocols(frame.protocols, frame.drops);
    renderChannels(frame.channels);
    renderDeadLetters(frame.deadletters);
    renderTailTargets(frame);
  }

  function renderProcesses(processes) {
    const body = $("processes").tBodies[0];
    body.replaceChildren(...processes.map((p) => {
      const connections = Object.entries(p.connections || {}).map(([k, v]) => k + "=" + v).join(" ") || "–";
      return el("tr", { "data-id": p.id, "data-kind": p.kind, "data-state": p.state, "data-pid": p.pid },
        el("td", { text: p.id }), el("td", { text: p.kind }), el("td", { text: p.host + "/" + p.pid }),
        el("td", { text: p.state }), el("td", { text: duration(p.uptime) }), el("td", { text: p.version || "–" }),
        el("td", { class: "num", text: p.cpu_percent === null ? "–" : p.cpu_percent.toFixed(1) + "%" }),
        el("td", { class: "num", text: bytes(p.rss) }), el("td", { text: connections }),
        el("td", { class: "num", "data-figure": "in", text: num(p.events_in) }),
        el("td", { class: "num", "data-figure": "out", text: num(p.events_out) }),
        el("td", { class: "num", text: num(p.drops) }), el("td", { class: "num", text: num(p.claimed) }),
        el("td", { class: "num", text: num(p.instances) }), el("td", { class: "num", text: num(p.queued) }),
        el("td", { class: "num", text: p.seen.toFixed(1) + "s ago" }));
    }));
    $("no-processes").hidden = processes.length > 0;
  }

  function renderLayer(layer) {
    $("layer").replaceChildren(el("span", { class: "muted", text: "Layer:" }), ...layer.nodes.map((n) =>
      el("span", { class: "node", "data-node": n.name, text: n.name + " · " + (n.latency_ms === null ? "no answer" : ms(n.latency_ms)) })));
  }

  function reasons(label, map) {
    const entries = Object.entries(map || {});
    if (!entries.length) return el("div", { class: "reasons", text: label + ": none" });
    const node = el("div", { class: "reasons" }, label + ": ");
    entries.forEach(([reason, count], i) => { node.append(el("b", { text: reason }), " " + num(count) + (i < entries.length - 1 ? ", " : "")); });
    return node;
  }

  function figure(label, name, value) {
    return el("div", {}, el("span", { class: "label", text: label }), el("span", { class: "value", "data-figure": name, text: value }));
  }

  function renderProtocols(protocols, clusterDrops) {
    const container = $("protocols");
    for (const [name, p] of Object.entries(protocols)) {
      let card = container.querySelector(`[data-protocol="${CSS.escape(name)}"]`);
      if (!card) {
        card = el("div", { class: "card", "data-protocol": name }, el("h3", { text: name }),
          el("div", { class: "figures" }), el("div", { class: "reasons-box" }), el("div", { class: "chart" }));
        container.append(card);
      }
      card.querySelector(".figures").replaceChildren(
        figure("open", "open", num(p.open)), figure("in/s", "in_rate", rate(p.in_rate)),
        figure("out/s", "out_rate", rate(p.out_rate)), figure("opened", "opened", num(p.opened)),
        figure("in (total)", "in", num(p.in)), figure("out (total)", "out", num(p.out)),
        figure("p50 handler", "p50", ms(p.p50_ms)), figure("p99 handler", "p99", ms(p.p99_ms)));
      card.querySelector(".reasons-box").replaceChildren(reasons("refused", p.refusals), reasons("dropped", p.drops));
      drawChart(name, card.querySelector(".chart"));
    }
    const drops = Object.entries(clusterDrops || {});
    $("cluster-drops").textContent = drops.length ? "Layer, gateway and worker drops: " + drops.map(([k, v]) => k + " " + v).join(", ") : "";
  }

  function drawChart(protocol, holder) {
    const history = state.history;
    if (!history || typeof uPlot === "undefined") return;
    const blank = () => new Array(history.t.length).fill(null);
    const data = [history.t, history.series[protocol + ".in"] || blank(), history.series[protocol + ".out"] || blank(),
      history.series[protocol + ".p99"] || blank()];
    let chart = state.charts.get(protocol);
    if (!chart) {
      chart = new uPlot({
        width: Math.max(holder.clientWidth || 380, 200), height: 150,
        scales: { x: { time: true }, ms: { auto: true } },
        series: [{}, { label: "in/s", stroke: "#2563eb", width: 1.5 }, { label: "out/s", stroke: "#16a34a", width: 1.5 },
          { label: "p99 ms", stroke: "#d97706", width: 1, scale: "ms", dash: [4, 3] }],
        axes: [{}, { size: 44 }, { side: 1, scale: "ms", size: 44, grid: { show: false } }],
        legend: { live: false },
      }, data, holder);
      state.charts.set(protocol, chart);
    } else {
      chart.setData(data);
    }
  }

  function renderChannels(channels) {
    $("channels").tBodies[0].replaceChildren(...channels.map((c) => {
      const fill = c.capacity ? Math.min(c.backlog / c.capacity, 1) : 0;
      const bar = el("div", { class: "bar", "data-level": fill > 0.8 ? "high" : "ok" }, el("span"));
      bar.firstChild.style.width = (fill * 100).toFixed(1) + "%";
      return el("tr", { "data-channel": c.name },
        el("td", { text: c.name }), el("td", { text: c.kind }), el("td", { class: "num", "data-figure": "backlog", text: num(c.backlog) }),
        el("td", { class: "num", text: num(c.capacity) }), el("td", { class: "wide" }, bar));
    }));
  }

  // -- dead letters ----------------------------------------------------------------------------

  function renderDeadLetters(deadletters) {
    $("dl-none").hidden = !!deadletters;
    $("dl-table").hidden = !deadletters;
    if (!deadletters) return;
    const manage = state.access && state.access.manage;
    $("dl-table").tBodies[0].replaceChildren(...Object.entries(deadletters.channels || {}).map(([channel, count]) => {
      const inspect = el("button", { type: "button", text: "Inspect" });
      inspect.onclick = () => inspectDead(channel);
      const replay = el("button", { type: "button", text: "Replay all" });
      const drop = el("button", { type: "button", text: "Drop all" });
      replay.disabled = drop.disabled = !manage || !count;
      replay.onclick = () => act("replay", channel);
      drop.onclick = () => { if (confirm("Drop every dead letter of " + channel + "?")) act("drop", channel); };
      return el("tr", { "data-channel": channel }, el("td", { text: channel }), el("td", { class: "num", text: num(count) }),
        el("td", {}, inspect, " ", replay, " ", drop));
    }));
  }

  async function inspectDead(channel) {
    const response = await fetch("api/deadletters?channel=" + encodeURIComponent(channel), { headers: headers(), cache: "no-store" });
    const box = $("dl-inspect");
    box.hidden = false;
    box.textContent = response.ok ? JSON.stringify(await response.json(), null, 2) : "HTTP " + response.status + ": " + await response.text();
  }

  async function act(action, channel) {
    const response = await fetch("api/deadletters/" + action, {
      method: "POST", cache: "no-store",
      headers: headers({ "Content-Type": "application/json", "X-Switchboard-CSRF": state.access.csrf }),
      body: JSON.stringify({ channel, ids: null }),
    });
    const box = $("dl-inspect");
    box.hidden = false;
    box.textContent = (response.ok ? "" : "HTTP " + response.status + ": ") + await response.text();
  }

  // -- live tail -------------------------------------------------------------------------------

  function renderTailTargets(frame) {
    const select = $("tail-target");
    const wanted = [...Object.keys(frame.protocols).map((p) => "protocol=" + p),
      ...frame.channels.filter((c) => c.kind === "named").map((c) => "channel=" + c.name)];
    const have = [...select.options].map((o) => o.value);
    if (wanted.join() === have.join()) return;
    const current = select.value;
    select.replaceChildren(...wanted.map((value) => el("option", { value, text: value.replace("=", ": ") })));
    if (wanted.includes(current)) select.value = current;
  }

  function tailLine(entry) {
    const time = new Date(entry.t * 1000).toLocaleTimeString();
    const text = `${time} ${entry.dir === "in" ? "→" : "←"} ${entry.protocol || entry.channel} ${entry.connection || ""} ${entry.type} ${JSON.stringify(entry.message)}`;
    return el("li", { class: entry.dir, text });
  }

  async function startTail() {
    const target = $("tail-target").value;
    if (!target) return;
    stopTail();
    const abort = state.tailAbort = new AbortController();
    const list = $("tail");
    $("tail-toggle").dataset.running = "true"; $("tail-toggle").textContent = "Pause";
    $("tail-state").textContent = "running: " + target.replace("=", " ");
    try {
      await readEvents("api/tail?" + target, (name, data) => {
        if (name !== "tail") return;
        for (const entry of data.events) list.prepend(tailLine(entry));
        if (data.skipped) list.prepend(el("li", { class: "skip", text: `… ${data.skipped} more from ${data.source} not shown (rate limit)` }));
        while (list.childElementCount > TAIL_MAX) list.lastElementChild.remove();
      }, abort.signal);
    } catch (error) {
      if (!abort.signal.aborted) $("tail-state").textContent = "stopped: " + error.message;
    }
  }

  function stopTail() {
    if (state.tailAbort) { state.tailAbort.abort(); state.tailAbort = null; }
    $("tail-toggle").dataset.running = "false"; $("tail-toggle").textContent = "Play";
    $("tail-state").textContent = "paused";
  }

  // -- sign in ---------------------------------------------------------------------------------

  function showLogin(error) {
    setLink("denied", error.status === 403 ? "forbidden" : "sign in needed");
    $("main").hidden = true; $("login").hidden = false;
    $("login-reason").textContent = error.message.trim();
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("login-form").addEventListener("submit", (event) => {
      event.preventDefault();
      sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
      $("token").value = "";
      connect();
    });
    $("tail-toggle").addEventListener("click", () => ($("tail-toggle").dataset.running === "true" ? stopTail() : startTail()));
    $("tail-target").addEventListener("change", () => { if (state.tailAbort) startTail(); });
    // Charts follow their cards' width (the grid reflows with the window).
    new ResizeObserver(() => {
      for (const chart of state.charts.values()) {
        const width = Math.max(chart.root.parentElement.clientWidth, 200);
        if (Math.abs(width - chart.width) > 2) chart.setSize({ width, height: 150 });
      }
    }).observe($("protocols"));
    connect();
  });
})();
