// The sweeps page: the sweeps list, one sweep's trials (sortable), its best-so-far curve and the
// objective against each parameter; live while the sweep runs. Plain JavaScript over /v1/sweeps.
// Server data only ever reaches the page as text (textContent), never as HTML.
"use strict";

(() => {
  const KEY = "nnserve.apiKey"; // the dashboard's: the key lasts as long as the tab
  const POLL_MS = 1000;
  const $ = (selector) => document.querySelector(selector);
  const state = { id: new URLSearchParams(location.search).get("id"), sweep: null, sort: { key: "number", down: false }, best: null, scatter: null, timer: null };

  async function api(method, path) {
    const key = sessionStorage.getItem(KEY);
    const headers = { Accept: "application/json", ...(key ? { Authorization: `Bearer ${key}` } : {}) };
    const response = await fetch(path, { method, headers });
    const data = await response.json();
    if (!response.ok) throw new Error(data.detail || data.title || `HTTP ${response.status}`);
    return data;
  }

  function cell(text, className) {
    const td = document.createElement("td");
    td.textContent = text === null || text === undefined ? "" : String(text);
    if (className) td.className = className;
    return td;
  }

  function notice(message) {
    const box = $("#notice");
    box.textContent = message;
    box.className = "error";
    box.hidden = !message;
  }

  const number = (value) => (typeof value === "number" ? (Number.isInteger(value) ? String(value) : value.toPrecision(4)) : String(value));

  async function loadList() {
    const list = await api("GET", "/v1/sweeps?limit=50");
    const rows = $("#sweep-rows");
    rows.replaceChildren();
    for (const sweep of list.items) {
      const tr = document.createElement("tr");
      const link = document.createElement("a");
      link.href = `/sweeps?id=${encodeURIComponent(sweep.id)}`;
      link.textContent = sweep.id;
      const id = cell("", "id");
      id.append(link);
      const done = Object.values(sweep.counts).reduce((a, b) => a + b, 0);
      tr.append(cell(sweep.name), id, cell(sweep.status), cell(`${done}/${sweep.trials_total}`, "num"), cell(sweep.strategy),
        cell(sweep.best ? number(sweep.best.objective) : "", "num"));
      rows.append(tr);
    }
  }

  function columns(sweep) {
    const parameters = Object.keys(sweep.search_space);
    return [
      { key: "number", label: "#", value: (t) => t.number },
      { key: "status", label: "status", value: (t) => t.status },
      { key: "objective", label: sweep.objective.metric, value: (t) => t.objective },
      { key: "epochs", label: "epochs", value: (t) => t.epochs },
      { key: "duration_s", label: "seconds", value: (t) => t.duration_s },
      ...parameters.map((path) => ({ key: `p:${path}`, label: path.split(".").slice(-1)[0], title: path, value: (t) => t.parameters[path] })),
    ];
  }

  function renderTrials() {
    const sweep = state.sweep;
    const cols = columns(sweep);
    const head = $("#trial-head");
    head.replaceChildren(...cols.map((col) => {
      const th = document.createElement("th");
      th.textContent = col.label + (state.sort.key === col.key ? (state.sort.down ? " ▼" : " ▲") : "");
      th.dataset.key = col.key;
      th.title = col.title || col.label;
      th.style.cursor = "pointer";
      th.addEventListener("click", () => {
        state.sort = { key: col.key, down: state.sort.key === col.key ? !state.sort.down : false };
        renderTrials();
      });
      return th;
    }));
    const sortBy = cols.find((col) => col.key === state.sort.key) || cols[0];
    const trials = [...sweep.trials].sort((a, b) => {
      const x = sortBy.value(a), y = sortBy.value(b);
      if (x === y) return a.number - b.number;
      if (x === null || x === undefined) return 1;
      if (y === null || y === undefined) return -1;
      return (x < y ? -1 : 1) * (state.sort.down ? -1 : 1);
    });
    $("#trial-rows").replaceChildren(...trials.map((trial) => {
      const tr = document.createElement("tr");
      tr.dataset.number = String(trial.number);
      tr.append(...cols.map((col) => {
        const value = col.value(trial);
        return cell(value === null || value === undefined ? "" : number(value), typeof value === "number" ? "num" : undefined);
      }));
      return tr;
    }));
  }

  function bestSoFar(sweep) {
    const maximize = sweep.objective.direction === "maximize";
    const xs = [], ys = [];
    let best = null;
    for (const trial of [...sweep.trials].sort((a, b) => a.number - b.number)) {
      if (trial.status === "succeeded" && trial.objective !== null && trial.objective !== undefined) {
        if (best === null || (maximize ? trial.objective > best : trial.objective < best)) best = trial.objective;
      }
      xs.push(trial.number);
      ys.push(best);
    }
    return [xs, ys];
  }

  function scatter(sweep, path) {
    const points = sweep.trials
      .filter((t) => t.objective !== null && t.objective !== undefined && typeof t.parameters[path] === "number")
      .map((t) => [t.parameters[path], t.objective])
      .sort((a, b) => a[0] - b[0]);
    return [points.map((p) => p[0]), points.map((p) => p[1])];
  }

  function chart(existing, box, label, data, points) {
    const width = Math.max(300, box.clientWidth);
    if (existing && existing.label === label) {
      existing.plot.setData(data);
      return existing;
    }
    if (existing) existing.plot.destroy();
    const series = points
      ? { label: state.sweep.objective.metric, stroke: "#ea580c", width: 0, paths: () => null, points: { show: true, size: 7, fill: "#ea580c" } }
      : { label: `best ${state.sweep.objective.metric}`, stroke: "#2563eb", width: 2 };
    // A log-distributed parameter on a log axis; trial numbers in whole steps.
    const distribution = points ? Object.keys(state.sweep.search_space[label] || {})[0] : null;
    const x = { time: false, ...(distribution === "log_uniform" || distribution === "int_log" ? { distr: 3 } : {}) };
    const xAxis = points ? { label } : { label, incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500] };
    const plot = new uPlot({ width, height: 240, scales: { x }, axes: [xAxis, { label: state.sweep.objective.metric }], series: [{ label }, series] }, data, box);
    return { plot, label };
  }

  function renderCharts() {
    const sweep = state.sweep;
    $("#charts").hidden = false;
    state.best = chart(state.best, $("#best-chart"), "trial", bestSoFar(sweep), false);
    const select = $("#parameter");
    const numeric = Object.keys(sweep.search_space).filter((path) => sweep.trials.some((t) => typeof t.parameters[path] === "number"));
    if (select.options.length !== numeric.length) {
      select.replaceChildren(...numeric.map((path) => { const o = document.createElement("option"); o.value = path; o.textContent = path; return o; }));
    }
    if (select.value) state.scatter = chart(state.scatter, $("#scatter-chart"), select.value, scatter(sweep, select.value), true);
    $("#best-chart").dataset.trials = String(sweep.trials.length);
  }

  function render() {
    const sweep = state.sweep;
    $("#sweep").hidden = false;
    $("#sweep-id").textContent = sweep.id;
    $("#sweep-status").textContent = sweep.status;
    const done = Object.values(sweep.counts).reduce((a, b) => a + b, 0);
    const counts = Object.entries(sweep.counts).filter(([, n]) => n).map(([status, n]) => `${n} ${status}`).join(", ");
    $("#sweep-line").textContent = `${sweep.strategy}, ${done}/${sweep.trials_total} trials (${counts || "none yet"}), ${sweep.objective.direction} ${sweep.objective.metric}, pruner ${sweep.pruner.name}`;
    $("#sweep-best").textContent = sweep.best
      ? `best ${number(sweep.best.objective)}: ${Object.entries(sweep.best.parameters).map(([p, v]) => `${p} = ${number(v)}`).join(", ")}`
      : "no trial has finished yet";
    $("#sweep-cancel").hidden = sweep.status !== "running";
    renderTrials();
    renderCharts();
  }

  async function refresh() {
    try {
      state.sweep = await api("GET", `/v1/sweeps/${encodeURIComponent(state.id)}`);
      render();
      notice("");
      if (state.sweep.status === "running") state.timer = setTimeout(refresh, POLL_MS);
      else loadList();
    } catch (error) {
      notice(`sweep ${state.id}: ${error.message}`);
      state.timer = setTimeout(refresh, POLL_MS * 3);
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    loadList().catch((error) => notice(error.message));
    $("#parameter").addEventListener("change", () => renderCharts());
    $("#sweep-cancel").addEventListener("click", async () => {
      try { await api("POST", `/v1/sweeps/${encodeURIComponent(state.id)}/cancel`); } catch (error) { notice(error.message); }
      clearTimeout(state.timer);
      refresh();
    });
    if (state.id) refresh();
  });
})();
