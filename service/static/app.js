// The nnserve dashboard: plain JavaScript over the same /v1 API as every other client.
// Server data only ever reaches the page as text (el(), textContent), never as HTML.
"use strict";

(() => {
  const KEY = "nnserve.apiKey"; // sessionStorage: the key lasts as long as the tab
  const FINISHED = ["succeeded", "failed", "canceled", "pruned"];
  const POLL_MS = 1000;

  const $ = (selector) => document.querySelector(selector);
  const state = {
    presets: {}, choices: { layers: {}, activations: {}, optimizers: {} }, datasets: [], models: [], spec: null,
    job: null, points: new Map(), stream: null, timer: null, chart: null, reliability: null,
  };

  // API ------------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, problem) {
      super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
      this.status = status;
      this.problem = problem || {};
    }
  }

  function authHeaders() {
    const key = sessionStorage.getItem(KEY);
    return key ? { Authorization: `Bearer ${key}` } : {};
  }

  async function api(method, path, body) {
    const headers = { Accept: "application/json", ...authHeaders() };
    let payload = body;
    if (body !== undefined && !(body instanceof FormData)) {
      headers["Content-Type"] = "application/json";
      payload = JSON.stringify(body);
    }
    const response = await fetch(path, { method, headers, body: payload });
    if (response.status === 204) return null;
    const isJson = (response.headers.get("Content-Type") || "").includes("json");
    const data = isJson ? await response.json() : await response.blob();
    if (!response.ok) throw new ApiError(response.status, isJson ? data : null);
    return data;
  }

  // Small helpers -----------------------------------------------------------------------------

  function el(tag, attributes = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes)) {
      if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else if (value !== undefined && value !== null && value !== false) node.setAttribute(name, value);
    }
    node.append(...children.filter((child) => child !== null && child !== undefined));
    return node;
  }

  function notice(message, kind = "error", details = []) {
    const box = $("#notice");
    box.className = kind;
    box.replaceChildren(el("span", {}, message), ...details.map((line) => el("div", { class: "detail" }, line)),
      el("button", { type: "button", "aria-label": "Dismiss", onclick: () => { box.hidden = true; } }, "×"));
    box.hidden = false;
  }

  function failed(error) {
    if (!(error instanceof ApiError)) return notice(String(error));
    const details = (error.problem.errors || []).map((e) => `${e.loc || "body"}: ${e.msg}`);
    if (error.status === 401 || error.status === 403) {
      notice(`${error.message}. Paste an API key at the top of the page.`, "error", details);
      $("#api-key").focus();
    } else {
      notice(error.message, "error", details.length > 1 ? details : []);
    }
  }

  const format = (value) => (typeof value === "number" ? Number(value.toPrecision(4)).toString() : String(value));

  function headline(metrics) {
    const names = ["accuracy", "val_accuracy", "r2", "val_r2", "mae", "val_mae", "mse", "val_mse"];
    const shown = names.filter((n) => n in metrics).slice(0, 2);
    return (shown.length ? shown : ["loss", "val_loss"].filter((n) => n in metrics))
      .map((n) => `${n} ${format(metrics[n])}`).join(" · ");
  }

  // Health and the API key --------------------------------------------------------------------

  async function health() {
    const badge = $("#health");
    try {
      const response = await fetch("/readyz");
      badge.textContent = response.ok ? "ready" : "Redis unreachable";
      badge.className = `badge ${response.ok ? "succeeded" : "failed"}`;
    } catch (error) {
      badge.textContent = "API unreachable";
      badge.className = "badge failed";
    }
  }

  $("#key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("#api-key").value.trim();
    if (key) sessionStorage.setItem(KEY, key);
    $("#api-key").value = "";
    $("#api-key").placeholder = key ? "key in use for this tab" : "only if the server asks for one";
    refreshAll();
  });
  $("#key-clear").addEventListener("click", () => {
    sessionStorage.removeItem(KEY);
    $("#api-key").placeholder = "only if the server asks for one";
  });

  // Datasets -------------------------------------------------------------------------------------

  async function loadDatasets(select) {
    state.datasets = (await api("GET", "/v1/datasets?limit=1000")).items;
    $("#dataset-rows").replaceChildren(...state.datasets.map((d) => el("tr", {},
      el("td", {}, d.name), el("td", { class: "id" }, d.id), el("td", {}, String(d.n_samples)),
      el("td", {}, String(d.n_features)),
      el("td", {}, d.target_kind === "categorical" ? `${d.classes.length} classes` : "continuous"),
      el("td", {}, d.builtin ? "built-in" : el("button", { type: "button", class: "link", onclick: () => deleteDataset(d) },
        "delete")))));
    const chosen = select || $("#train-dataset").value;
    $("#train-dataset").replaceChildren(...state.datasets.map((d) =>
      el("option", { value: d.id }, `${d.name} (${d.builtin ? "built-in" : d.id}; ${d.n_samples}×${d.n_features})`)));
    if (state.datasets.some((d) => d.id === chosen)) $("#train-dataset").value = chosen;
  }

  async function deleteDataset(dataset) {
    if (!confirm(`Delete the dataset ${dataset.name} (${dataset.id})?`)) return;
    try {
      await api("DELETE", `/v1/datasets/${dataset.id}`);
      await loadDatasets();
    } catch (error) { failed(error); }
  }

  // The header row, read in the browser, offers the target column before the upload.
  $("#upload-file").addEventListener("change", async () => {
    const file = $("#upload-file").files[0];
    const select = $("#upload-target");
    if (!file) return;
    const head = (await file.slice(0, 65536).text()).replace(/^\uFEFF/, "").split(/\r?\n/)[0];
    const columns = head.split(",").map((c) => c.trim().replace(/^"(.*)"$/, "$1"));
    select.replaceChildren(...columns.map((c) => el("option", { value: c }, c)));
    select.value = columns[columns.length - 1];
  });

  $("#upload-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = new FormData();
    form.append("file", $("#upload-file").files[0]);
    form.append("target", $("#upload-target").value);
    if ($("#upload-name").value.trim()) form.append("name", $("#upload-name").value.trim());
    if ($("#upload-kind").value) form.append("target_kind", $("#upload-kind").value);
    try {
      const dataset = await api("POST", "/v1/datasets", form);
      notice(`Uploaded ${dataset.name}: ${dataset.n_samples} rows, ${dataset.n_features} features` +
        (dataset.note ? ` (${dataset.note})` : "") + ". It is selected for training.", "info");
      event.target.reset();
      $("#upload-target").replaceChildren(el("option", { value: "" }, "choose a file first"));
      await loadDatasets(dataset.id);
    } catch (error) { failed(error); }
  });

  // The spec: one object, shown twice (the form and the JSON editor) ----------------------------

  function applyPreset(name) {
    const preset = state.presets[name];
    state.spec = structuredClone(preset.spec);
    if (state.datasets.some((d) => d.id === preset.dataset)) $("#train-dataset").value = preset.dataset;
    renderForm();
    renderJson();
  }

  // The parameters a layer type takes, from /choices.json: the form shows the ones it can edit.
  const takes = (type, parameter) => (state.choices.layers[type] || []).includes(parameter);

  function layerRow(layer) {
    const type = el("select", { class: "layer-type", "aria-label": "layer type" },
      ...Object.keys(state.choices.layers).map((t) => el("option", { value: t }, t)));
    type.value = layer.type;
    const activationName = typeof layer.activation === "object" ? layer.activation.name : layer.activation || "linear";
    const activation = el("select", { class: "layer-activation", "aria-label": "activation" },
      ...Object.keys(state.choices.activations).map((a) => el("option", { value: a }, a)));
    activation.value = activationName;
    const units = el("input", { class: "layer-units", type: "number", min: "1", step: "1", "aria-label": "units",
      value: layer.units ?? 8 });
    const rate = el("input", { class: "layer-rate", type: "number", min: "0", max: "0.95", step: "0.05",
      "aria-label": "dropout rate", value: layer.rate ?? 0.2 });
    const remove = el("button", { type: "button", class: "link", onclick: (event) => {
      event.target.closest("li").remove();
      readForm();
    } }, "remove");
    const row = el("li", {}, type, units, rate, activation, remove);
    const show = () => {
      units.hidden = !takes(type.value, "units");
      rate.hidden = !takes(type.value, "rate");
      activation.hidden = !takes(type.value, "activation");
    };
    type.addEventListener("change", show);
    show();
    return row;
  }

  function renderForm() {
    const { model, training = {} } = state.spec;
    const layers = Array.isArray(model && model.layers) ? model.layers : null;
    $("#layers").replaceChildren(...(layers ? layers.map(layerRow)
      : [el("li", { class: "hint" }, "A model the form cannot show (a Keras document?): edit it as JSON.")]));
    $("#add-layer").disabled = !layers;
    const optimizer = training.optimizer || "rmsprop";
    $("#optimizer").value = typeof optimizer === "object" ? optimizer.name : optimizer;
    $("#learning-rate").value = typeof optimizer === "object" ? optimizer.learning_rate ?? "" : "";
    $("#learning-rate").placeholder = "optimizer default";
    $("#epochs").value = training.epochs ?? 1;
    $("#batch-size").value = training.batch_size ?? 32;
    $("#validation-split").value = training.validation_split ?? 0;
  }

  // Form edits patch the spec, so JSON-only fields (initializers, early stopping...) survive them.
  function readForm() {
    const spec = state.spec;
    if (Array.isArray(spec.model.layers)) {
      const old = spec.model.layers;
      spec.model.layers = [...document.querySelectorAll("#layers > li")].map((row, i) => {
        const type = row.querySelector(".layer-type").value;
        const layer = old[i] && old[i].type === type ? { ...old[i] } : { type };
        if (takes(type, "units")) layer.units = Number(row.querySelector(".layer-units").value);
        if (takes(type, "rate")) layer.rate = Number(row.querySelector(".layer-rate").value);
        if (takes(type, "activation")) {
          const name = row.querySelector(".layer-activation").value;
          const current = typeof layer.activation === "object" ? layer.activation.name : layer.activation;
          if (name !== current) layer.activation = name;
        }
        return layer;
      });
    }
    const training = (spec.training = spec.training || {});
    const previous = typeof training.optimizer === "object" ? training.optimizer : {};
    const name = $("#optimizer").value;
    const optimizer = previous.name === name ? { ...previous } : { name };
    if ($("#learning-rate").value) optimizer.learning_rate = Number($("#learning-rate").value);
    else delete optimizer.learning_rate;
    training.optimizer = optimizer;
    training.epochs = Number($("#epochs").value);
    training.batch_size = Number($("#batch-size").value);
    training.validation_split = Number($("#validation-split").value);
    if (!training.validation_split) delete training.validation_split;
    $("#preset").value = "";
    renderJson();
  }

  function renderJson() {
    $("#spec-json").value = JSON.stringify(state.spec, null, 2);
    $("#spec-error").hidden = true;
  }

  $("#train fieldset.grid").addEventListener("input", (event) => { if (!["job-name", "job-promote"].includes(event.target.id)) readForm(); });
  $("#layers").addEventListener("input", readForm);
  $("#layers").addEventListener("change", readForm);
  $("#add-layer").addEventListener("click", () => {
    const layers = document.querySelectorAll("#layers > li");
    $("#layers").insertBefore(layerRow({ type: "dense", units: 8, activation: "relu" }), layers[layers.length - 1] || null);
    readForm();
  });
  $("#preset").addEventListener("change", () => { if ($("#preset").value) applyPreset($("#preset").value); });

  $("#spec-json").addEventListener("input", () => {
    try {
      const spec = JSON.parse($("#spec-json").value);
      if (!spec || typeof spec !== "object" || !spec.model) throw new Error('expected {"model": {...}, "training": {...}}');
      state.spec = spec;
      $("#spec-error").hidden = true;
      $("#preset").value = "";
      renderForm();
    } catch (error) {
      $("#spec-error").textContent = `Not used until it parses: ${error.message}`;
      $("#spec-error").hidden = false;
    }
  });

  $("#start").addEventListener("click", async () => {
    if (!$("#spec-error").hidden) return notice("The JSON spec does not parse; fix it first.");
    const body = { dataset: $("#train-dataset").value, model: state.spec.model, training: state.spec.training || {} };
    if ($("#job-name").value.trim()) body.name = $("#job-name").value.trim();
    const promote = $("#job-promote").value;
    if (body.name && promote) body.promote = promote === "if_better" ? { if_better: { metric: "val_loss" } } : promote;
    try {
      const job = await api("POST", "/v1/jobs", body);
      $("#notice").hidden = true;
      follow(job);
      loadJobs();
    } catch (error) { failed(error); }
  });

  // Following a job: its event stream, or polling when there is none -----------------------------

  function stopFollowing() {
    if (state.stream) state.stream.close();
    clearTimeout(state.timer);
    state.stream = state.timer = null;
  }

  function follow(job) {
    stopFollowing();
    state.job = job;
    state.points = new Map();
    drawChart([[], [], []]);
    setHistory(job.history);
    renderJob();
    if (FINISHED.includes(job.status)) return;
    // EventSource cannot send an Authorization header: with an API key, poll instead.
    if (window.EventSource && !sessionStorage.getItem(KEY)) openStream(job.id);
    else poll(job.id);
  }

  function openStream(id) {
    const stream = new EventSource(`/v1/jobs/${encodeURIComponent(id)}/events`);
    state.stream = stream;
    stream.addEventListener("epoch", (event) => {
      const data = JSON.parse(event.data);
      addPoint(data.epoch, data);
      if (state.job.status === "queued") state.job.status = "running";
      state.job.progress.epoch = Math.max(state.job.progress.epoch, data.epoch);
      renderJob();
    });
    stream.addEventListener("status", (event) => {
      if (!FINISHED.includes(JSON.parse(event.data).status)) return;
      stopFollowing();
      poll(id); // the final record: status, error, full history
    });
    // No stream (404), a proxy that breaks it, or a dropped connection: polling has the whole history.
    stream.addEventListener("error", () => {
      if (state.stream !== stream) return;
      stopFollowing();
      poll(id);
    });
  }

  async function poll(id) {
    try {
      const job = await api("GET", `/v1/jobs/${encodeURIComponent(id)}`);
      if (!state.job || state.job.id !== id) return; // the user moved on to another job
      state.job = job;
      setHistory(job.history);
      renderJob();
      if (FINISHED.includes(job.status)) return finished(job);
    } catch (error) { failed(error); }
    if (state.job && state.job.id === id && !state.stream) state.timer = setTimeout(() => poll(id), POLL_MS);
  }

  async function finished(job) {
    // A canceled job's model is ready too when the cancel kept its weights: choose it then as well.
    const kept = job.status === "succeeded" || job.status === "canceled";
    await Promise.all([loadModels(kept ? job.model_id : undefined), loadJobs()]);
    if (job.status === "failed" && job.error) notice(`Job ${job.id} failed: ${job.error.type}: ${job.error.detail}`);
  }

  // The job's history is the whole truth: it replaces whatever the stream delivered so far.
  function setHistory(history) {
    if (!history || !history.loss) return;
    state.points = new Map(history.loss.map((_, i) => [i + 1, Object.fromEntries(
      Object.entries(history).map(([name, values]) => [name, values[i]]))]));
    redraw();
  }

  function addPoint(epoch, values) {
    state.points.set(epoch, values);
    redraw();
  }

  function redraw() {
    const epochs = [...state.points.keys()].sort((a, b) => a - b);
    const series = (name) => epochs.map((e) => state.points.get(e)[name] ?? null);
    drawChart([epochs, series("loss"), series("val_loss")]);
  }

  function drawChart(data) {
    const box = $("#chart");
    if (!state.chart) {
      state.chart = new uPlot({
        width: Math.max(300, box.clientWidth), height: 260,
        scales: { x: { time: false } },
        axes: [{ label: "epoch" }, { label: "loss" }],
        series: [
          { label: "epoch" },
          { label: "loss", stroke: "#2563eb", width: 2 },
          { label: "val_loss", stroke: "#ea580c", width: 2, dash: [6, 4] },
        ],
      }, data, box);
    } else {
      state.chart.setData(data);
    }
    box.dataset.epochs = String(data[0].length);
  }

  window.addEventListener("resize", () => {
    if (state.chart) state.chart.setSize({ width: Math.max(300, $("#chart").clientWidth), height: 260 });
  });

  function renderJob() {
    const job = state.job;
    const { epoch, epochs } = job.progress;
    $("#job-line").textContent = `${job.name ? job.name + " · " : ""}${job.id} on ${job.dataset_id} → ${job.model_id}`;
    $("#job-status").textContent = job.status;
    $("#job-status").className = `badge ${job.status}`;
    $("#job-epochs").textContent = `epoch ${epoch} / ${epochs}`;
    $("#job-bar").style.width = `${(100 * epoch) / epochs}%`;
    const last = state.points.get(Math.max(0, ...state.points.keys())) || {};
    $("#job-figures").textContent = Object.entries(last)
      .filter(([name, value]) => typeof value === "number" && !["epoch", "epochs", "learning_rate"].includes(name))
      .map(([name, value]) => `${name} ${format(value)}`).join(" · ");
    $("#cancel").hidden = FINISHED.includes(job.status);
    $("#cancel-keep").hidden = job.status !== "running"; // a queued job has learned nothing to keep
  }

  $("#cancel").addEventListener("click", async () => {
    try {
      await api("POST", `/v1/jobs/${encodeURIComponent(state.job.id)}/cancel`);
    } catch (error) { failed(error); }
  });

  $("#cancel-keep").addEventListener("click", async () => {
    try {
      await api("POST", `/v1/jobs/${encodeURIComponent(state.job.id)}/cancel`, { keep: "best" });
    } catch (error) { failed(error); }
  });

  async function loadJobs() {
    const jobs = (await api("GET", "/v1/jobs?limit=10")).items;
    $("#job-rows").replaceChildren(...jobs.map((job) => el("tr", {},
      el("td", { class: "id" }, job.name || job.id), el("td", {}, el("span", { class: `badge ${job.status}` }, job.status)),
      el("td", {}, `${job.progress.epoch}/${job.progress.epochs}`), el("td", {}, job.dataset_id),
      el("td", {}, el("button", { type: "button", class: "link", onclick: () => watch(job.id) }, "watch")))));
  }

  async function watch(id) {
    try {
      follow(await api("GET", `/v1/jobs/${encodeURIComponent(id)}`));
    } catch (error) { failed(error); }
  }

  // Models and predictions -------------------------------------------------------------------------

  async function loadModels(select) {
    state.models = (await api("GET", "/v1/models?limit=1000")).items;
    $("#model-rows").replaceChildren(...state.models.map((m) => el("tr", {},
      el("td", { class: "id" }, m.name || m.id), el("td", {}, el("span", { class: `badge ${m.status}` }, m.status)),
      el("td", {}, m.dataset_id || `(${m.source || "imported"})`), el("td", { class: "metrics" }, headline(m.metrics)),
      el("td", {}, m.status === "ready" ? String(m.n_parameters) : ""),
      el("td", {}, m.status === "ready" ? el("button", { type: "button", class: "link", onclick: () => download(m) }, "download") : null,
        m.status !== "pending" ? el("button", { type: "button", class: "link", onclick: () => deleteModel(m) }, "delete") : null))));
    const ready = state.models.filter((m) => m.status === "ready");
    const chosen = select || $("#predict-model").value;
    $("#predict-model").replaceChildren(...ready.map((m) => el("option", { value: m.id },
      `${m.name || m.id} (${m.dataset_id || m.source || "imported"}; ${headline(m.metrics)})`)));
    if (ready.some((m) => m.id === chosen)) $("#predict-model").value = chosen;
    await loadRegistry(chosen);
    renderPredictInputs();
    renderReport();
  }

  // The registry: models grouped by name, alias badges, "make current" (a rollback is one) ----------------

  const aliasText = (target) => (typeof target === "number" ? `v${target}`
    : target.split ? Object.entries(target.split).map(([v, w]) => `v${v} ${w}`).join(" / ")
      : `v${target.version} (shadow v${target.shadow})`);

  function servedVersion(target) {
    if (typeof target === "number") return target;
    if (target.split) return Number(Object.entries(target.split).sort((a, b) => b[1] - a[1])[0][0]);
    return target.version;
  }

  async function loadRegistry(chosen) {
    const names = (await api("GET", "/v1/registry?limit=1000")).items;
    state.registry = await Promise.all(names.map((n) => api("GET", `/v1/registry/${encodeURIComponent(n.name)}`)));
    $("#registry-names").replaceChildren(...(state.registry.length ? state.registry.map(registeredName)
      : [el("p", { class: "hint" }, "No registered models yet: give a job a name.")]));
    const options = state.registry.filter((n) => n.versions.length).map((n) => el("option", { value: n.name },
      `${n.name} (current: ${aliasText(n.aliases.current ?? n.aliases.latest)})`));
    $("#predict-model").prepend(...options);
    const keep = chosen || $("#predict-model").value;
    if ([...$("#predict-model").options].some((o) => o.value === keep)) $("#predict-model").value = keep;
  }

  function registeredName(registered) {
    const byVersion = new Map();
    for (const [alias, target] of Object.entries(registered.aliases)) {
      const versions = typeof target === "number" ? [target]
        : target.split ? Object.keys(target.split).map(Number) : [target.version];
      for (const v of versions) byVersion.set(v, [...(byVersion.get(v) || []), alias]);
    }
    const current = registered.aliases.current ?? registered.aliases.latest;
    return el("div", { class: "registered", "data-name": registered.name },
      el("h3", {}, registered.name, " ", ...Object.entries(registered.aliases).map(([alias, target]) =>
        el("span", { class: `badge alias ${alias}` }, `${alias}: ${aliasText(target)}`))),
      el("table", {},
        el("thead", {}, el("tr", {}, ...["version", "aliases", "metrics", "promotion", ""].map((h) => el("th", {}, h)))),
        el("tbody", {}, ...registered.versions.map((v) => el("tr", { "data-version": String(v.version) },
          el("td", {}, `v${v.version}`),
          el("td", {}, ...(byVersion.get(v.version) || []).map((a) => el("span", { class: `badge alias ${a}` }, a))),
          el("td", { class: "metrics" }, headline(v.metrics)),
          el("td", {}, v.promotion ? v.promotion.decision : ""),
          el("td", {}, current !== undefined && servedVersion(current) === v.version ? null
            : el("button", { type: "button", class: "link make-current", onclick: () => makeCurrent(registered.name, v.version) },
              "make current")))))));
  }

  async function makeCurrent(name, version) {
    try {
      await api("PUT", `/v1/registry/${encodeURIComponent(name)}/aliases/current`, { version });
      await loadModels();
    } catch (error) { failed(error); }
  }

  function selectedModel() {
    // A model id, or a registered name: its form follows the version the name answers with now.
    const value = $("#predict-model").value;
    const registered = (state.registry || []).find((n) => n.name === value);
    if (!registered) return state.models.find((m) => m.id === value);
    const version = servedVersion(registered.aliases.current ?? registered.aliases.latest);
    const entry = registered.versions.find((v) => v.version === version);
    const model = entry && state.models.find((m) => m.id === entry.model_id);
    return model && { ...model, id: value };
  }

  async function download(model) {
    try {
      const blob = await api("GET", `/v1/models/${encodeURIComponent(model.id)}/weights`);
      const link = el("a", { href: URL.createObjectURL(blob), download: `${model.id}.npz` });
      link.click();
      URL.revokeObjectURL(link.href);
    } catch (error) { failed(error); }
  }

  async function deleteModel(model) {
    if (!confirm(`Delete the model ${model.name || model.id}?`)) return;
    try {
      await api("DELETE", `/v1/models/${encodeURIComponent(model.id)}`);
      await loadModels();
    } catch (error) { failed(error); }
  }

  function renderPredictInputs() {
    const model = selectedModel();
    const inputs = $("#predict-inputs");
    if (!model) {
      inputs.replaceChildren(el("p", { class: "hint" }, "Train a model first."));
      return;
    }
    if (inputs.dataset.model === model.id) return; // keep what the user typed
    inputs.dataset.model = model.id;
    const names = model.input.feature_names || Array.from({ length: model.input.n_features }, (_, i) => `x${i + 1}`);
    inputs.replaceChildren(...names.map((name) =>
      el("label", {}, name, el("input", { type: "number", step: "any", required: true, name }))));
    $("#prediction").replaceChildren();
  }

  $("#predict-model").addEventListener("change", () => { renderPredictInputs(); renderReport(); });

  // The chosen model's evaluation report: its figures, a confusion-matrix heatmap (each cell shaded by its
  // share of the true class's rows) and a reliability plot (observed accuracy against mean confidence per bin).
  function renderReport() {
    const model = state.models.find((m) => m.id === $("#predict-model").value);
    const report = model && model.evaluation;
    const box = $("#reliability");
    $("#confusion").hidden = true;
    if (state.reliability) { state.reliability.destroy(); state.reliability = null; }
    box.dataset.bins = "0";
    if (!report || !report.on) {
      $("#report-line").textContent = report ? report.note : "Train a model first.";
      return;
    }
    const figures = ["accuracy", "log_loss", "roc_auc", "mae", "rmse", "r2"].filter((n) => typeof report[n] === "number")
      .map((n) => `${n} ${format(report[n])}`);
    if (report.calibration) figures.push(`ece ${format(report.calibration.ece)}`);
    $("#report-line").textContent = `on ${report.on} (${report.rows} rows): ${figures.join(" · ")}`;
    if (report.confusion_matrix) {
      const labels = report.labels.map(String);
      const head = el("tr", {}, el("th", {}, "true \\ predicted"), ...labels.map((l) => el("th", {}, l)));
      const rows = report.confusion_matrix.map((counts, t) => {
        const total = counts.reduce((a, b) => a + b, 0) || 1;
        return el("tr", {}, el("th", {}, labels[t]), ...counts.map((count) => {
          const cell = el("td", { class: "num" }, String(count));
          cell.style.background = `rgba(37, 99, 235, ${(0.85 * count) / total})`;
          if (count / total > 0.5) cell.style.color = "#fff";
          return cell;
        }));
      });
      $("#confusion").replaceChildren(head, ...rows);
      $("#confusion").hidden = false;
    }
    if (report.calibration) {
      const bins = report.calibration.bins.filter((b) => b.count > 0);
      // 0 and 1 carry no bin (null observed): they stretch the "perfect" diagonal across the plot.
      const x = bins.map((b) => b.mean_predicted);
      const observed = bins.map((b) => b.observed);
      if (!(x[0] <= 0)) { x.unshift(0); observed.unshift(null); }
      if (!(x[x.length - 1] >= 1)) { x.push(1); observed.push(null); }
      state.reliability = new uPlot({
        width: Math.max(300, box.clientWidth), height: 220,
        scales: { x: { time: false, range: [0, 1] }, y: { range: [0, 1] } },
        axes: [{ label: "mean confidence" }, { label: "observed accuracy" }],
        series: [
          { label: "confidence" },
          { label: "observed", stroke: "#2563eb", width: 2, points: { size: 7 } },
          { label: "perfect", stroke: "#9ca3af", width: 1, dash: [4, 4] },
        ],
      }, [x, observed, x], box);
      box.dataset.bins = String(bins.length);
    }
  }

  $("#predict-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const model = selectedModel();
    if (!model) return;
    const row = [...document.querySelectorAll("#predict-inputs input")].map((input) => Number(input.value));
    try {
      const result = await api("POST", `/v1/models/${encodeURIComponent(model.id)}/predict`, { inputs: [row] });
      showPrediction(model, result);
    } catch (error) { failed(error); }
  });

  function showPrediction(model, result) {
    const predicted = result.predictions[0];
    const shown = Array.isArray(predicted) ? predicted.map(format).join(", ") : format(predicted);
    const parts = [el("p", {}, "Prediction: ", el("strong", { id: "predicted" }, shown),
      result.model_version !== undefined ? el("span", { id: "answered-by", class: "hint" }, ` (answered by v${result.model_version})`) : null)];
    if (result.probabilities) {
      parts.push(el("table", { class: "probabilities" }, ...model.output.classes.map((label, i) => {
        const p = result.probabilities[0][i];
        const bar = el("div", { class: "fill" });
        bar.style.width = `${100 * p}%`;
        return el("tr", {}, el("td", {}, String(label)), el("td", { class: "num" }, p.toFixed(3)),
          el("td", { class: "share" }, bar));
      })));
    }
    $("#prediction").replaceChildren(...parts);
  }

  // Start ---------------------------------------------------------------------------------------------

  async function refreshAll() {
    try {
      await Promise.all([loadDatasets(), loadModels(), loadJobs()]);
    } catch (error) { failed(error); }
  }

  async function start() {
    if (sessionStorage.getItem(KEY)) $("#api-key").placeholder = "key in use for this tab";
    health();
    setInterval(health, 10000);
    state.presets = await (await fetch("/static/presets.json")).json();
    state.choices = await (await fetch("/choices.json")).json();
    $("#optimizer").replaceChildren(...Object.keys(state.choices.optimizers).map((o) => el("option", { value: o }, o)));
    $("#preset").replaceChildren(el("option", { value: "" }, "custom"),
      ...Object.entries(state.presets).map(([name, preset]) => el("option", { value: name }, preset.label)));
    await refreshAll();
    $("#preset").value = "iris";
    applyPreset("iris");
  }

  start();
})();
