// Jobs: a start form built from each recipe's hyperparameter schema, the list, and one job's live progress.

import { api, followJob, get, list } from "./api.js";
import { chart, confirmAction, el, empty, errorBox, extend, field, fmt, may, showError, table, when } from "./ui.js";

const FINAL = new Set(["succeeded", "failed", "cancelled"]);

export function render(page, { arg }) {
  const listBox = el("div", { id: "job-list" });
  const detail = el("div", { id: "job-detail" });
  const streams = new AbortController();
  let watching = null;
  page.append(el("h2", {}, "Jobs"));
  const formCard = el("div", { class: "card" }, el("h3", {}, "Start a training job"));
  if (may("train")) page.append(formCard);
  page.append(el("div", { class: "card" }, el("h3", {}, "Your jobs"), listBox), detail);

  const open = (jobId) => {
    if (watching) watching.abort();
    watching = new AbortController();
    streams.signal.addEventListener("abort", () => watching.abort());
    showJob(detail, jobId, watching.signal, refresh);
  };

  async function refresh() {
    try {
      const items = await list("/v1/jobs");
      listBox.replaceChildren(
        items.length
          ? table(
              [
                ["Id", (j) => el("code", {}, j.id)],
                ["Model", (j) => j.model],
                ["Recipe", (j) => j.recipe],
                ["Status", (j) => el("span", { class: `status-${j.status}` }, j.status)],
                ["Created", (j) => when(j.created_at)],
              ],
              items,
              { onSelect: (j) => { history.replaceState(null, "", `#jobs/${j.id}`); open(j.id); } },
            )
          : empty(may("train") ? "No jobs yet — start one from a dataset above." : "No jobs yet."),
      );
    } catch (error) {
      showError(listBox, error);
    }
  }

  if (may("train")) startForm(formCard, (job) => { refresh(); history.replaceState(null, "", `#jobs/${job.id}`); open(job.id); });
  refresh();
  if (arg) open(arg);
  return () => streams.abort();
}

/** The input for one hyperparameter, from its JSON Schema property. */
function hyperparameterInput(name, prop) {
  const branches = prop.anyOf ? prop.anyOf.filter((b) => b.type !== "null") : [prop];
  const kind = branches[0] || {};
  const choices = prop.enum || kind.enum;
  let input;
  if (choices) {
    input = el("select", {}, choices.map((choice) => el("option", { value: choice, selected: choice === prop.default }, choice)));
  } else if (kind.type === "integer" || kind.type === "number") {
    input = el("input", { type: "number", step: kind.type === "integer" ? 1 : "any", min: kind.minimum ?? kind.exclusiveMinimum, max: kind.maximum ?? kind.exclusiveMaximum });
    input.placeholder = prop.default === null || prop.default === undefined ? "not set" : String(prop.default);
  } else if (kind.type === "boolean") {
    input = el("select", {}, el("option", { value: "" }, `default (${prop.default})`), el("option", { value: "true" }, "true"), el("option", { value: "false" }, "false"));
  } else {
    input = el("input", { type: "text", placeholder: prop.default === null || prop.default === undefined ? "not set" : JSON.stringify(prop.default) });
  }
  input.name = name;
  input.dataset.kind = kind.type || "string";
  input.dataset.default = JSON.stringify(prop.default ?? null);
  const bounds = [];
  if (kind.minimum !== undefined) bounds.push(`≥ ${kind.minimum}`);
  if (kind.exclusiveMinimum !== undefined) bounds.push(`> ${kind.exclusiveMinimum}`);
  if (kind.maximum !== undefined) bounds.push(`≤ ${kind.maximum}`);
  if (kind.exclusiveMaximum !== undefined) bounds.push(`< ${kind.exclusiveMaximum}`);
  const help = [prop.description, bounds.length ? `(${bounds.join(", ")}; default ${JSON.stringify(prop.default ?? null)})` : `(default ${JSON.stringify(prop.default ?? null)})`];
  return field(name.replaceAll("_", " "), input, help.filter(Boolean).join(" "));
}

/** The hyperparameters the user set: only the fields given a value other than the default. */
function chosenHyperparameters(form) {
  const chosen = {};
  for (const input of form.querySelectorAll("[data-kind]")) {
    const raw = input.value.trim();
    if (raw === "") continue;
    let value = raw;
    if (input.dataset.kind === "integer" || input.dataset.kind === "number") value = Number(raw);
    else if (input.dataset.kind === "boolean") value = raw === "true";
    else if (input.dataset.kind === "array") value = raw.startsWith("[") ? JSON.parse(raw) : raw.split(",").map((s) => s.trim());
    if (JSON.stringify(value) === input.dataset.default) continue;
    chosen[input.name] = value;
  }
  return chosen;
}

async function startForm(card, started) {
  const status = el("div");
  let recipes, datasets;
  try {
    [recipes, datasets] = await Promise.all([get("/v1/recipes"), list("/v1/datasets")]);
  } catch (error) {
    card.append(errorBox(error));
    return;
  }
  if (!datasets.length) {
    card.append(empty("No datasets yet — upload one on the Datasets page, then start a job from it."));
    return;
  }
  const dataset = el("select", { id: "job-dataset" }, datasets.map((d) => el("option", { value: d.id }, `${d.name} (${d.kind}, ${d.rows} rows)`)));
  const model = el("input", { id: "job-model", required: true, placeholder: "e.g. spam-filter" });
  const recipe = el("select", { id: "job-recipe" });
  const params = el("fieldset", { id: "hyperparameters" });
  const kindOf = () => datasets.find((d) => d.id === dataset.value).kind;
  const fillRecipes = () => {
    const fitting = recipes.data.filter((r) => r.dataset_kind === kindOf());
    recipe.replaceChildren(...fitting.map((r) => el("option", { value: r.name }, r.name)));
    fillParams();
  };
  const fillParams = () => {
    const chosen = recipes.data.find((r) => r.name === recipe.value);
    const props = chosen ? chosen.hyperparameters.properties : {};
    params.replaceChildren(el("legend", {}, "Hyperparameters (empty: the default)"), el("div", { class: "grid" }, Object.entries(props).map(([n, p]) => hyperparameterInput(n, p))));
  };
  dataset.addEventListener("change", fillRecipes);
  recipe.addEventListener("change", fillParams);
  const form = el(
    "form",
    {
      id: "job-form",
      onsubmit: async (event) => {
        event.preventDefault();
        status.replaceChildren();
        try {
          const body = { dataset: dataset.value, model: model.value.trim(), recipe: recipe.value, hyperparameters: chosenHyperparameters(form) };
          const job = await api("POST", "/v1/jobs", body);
          status.replaceChildren(el("p", { class: "notice" }, `Job ${job.id} is ${job.status}.`));
          started(job);
        } catch (error) {
          status.replaceChildren(errorBox(error));
        }
      },
    },
    el("div", { class: "row" }, field("Dataset", dataset), field("Model name", model, "the registry name of the trained version"), field("Recipe", recipe)),
    params,
    el("button", { type: "submit" }, "Start job"),
    status,
  );
  card.append(form);
  fillRecipes();
}

const TRACES = [
  { name: "loss (step)", mode: "lines", line: { width: 1 } },
  { name: "train loss", mode: "lines+markers" },
  { name: "validation loss", mode: "lines+markers" },
  { name: "train accuracy", mode: "lines+markers", yaxis: "y2" },
  { name: "validation accuracy", mode: "lines+markers", yaxis: "y2" },
];

async function showJob(detail, jobId, signal, refreshList) {
  let job;
  try {
    job = await get(`/v1/jobs/${encodeURIComponent(jobId)}`);
  } catch (error) {
    showError(detail, error);
    return;
  }
  const statusLine = el("p", { id: "job-status" });
  const plot = el("div", { class: "chart", id: "job-chart", role: "img", "aria-label": "Loss and accuracy as the job trains" });
  const points = el("span", { id: "job-points", class: "hint" }, "0 points");
  const stream = el("span", { id: "job-stream", class: "hint" }, "");
  const checkpoints = el("div", { id: "job-checkpoints" });
  const messages = el("div");
  const cancel = el("button", { type: "button", class: "danger", id: "job-cancel" }, "Cancel job");
  cancel.hidden = !may("train");
  cancel.addEventListener("click", async () => {
    if (!confirmAction(`Cancel job ${jobId}?`)) return;
    try {
      job = await api("POST", `/v1/jobs/${encodeURIComponent(jobId)}/cancel`);
      update();
    } catch (error) {
      messages.replaceChildren(errorBox(error));
    }
  });
  const metrics = el("div", { id: "job-metrics" });
  detail.replaceChildren(
    el("div", { class: "card", id: "job-card" },
      el("h3", {}, `Job ${job.id}`),
      statusLine,
      el("p", {}, `Model ${job.model} · recipe ${job.recipe} · dataset `, el("a", { href: `#datasets/${job.dataset}` }, job.dataset)),
      el("div", {}, points, " ", stream),
      plot,
      cancel,
      messages,
      el("div", { class: "grid" }, el("div", {}, el("h3", {}, "Metrics"), metrics), el("div", {}, el("h3", {}, "Checkpoints"), checkpoints)),
    ),
  );
  chart(plot, TRACES.map((t) => ({ ...t, x: [], y: [], type: "scatter" })), {
    xaxis: { title: { text: "step" } },
    yaxis: { title: { text: "loss" } },
    yaxis2: { title: { text: "accuracy" }, overlaying: "y", side: "right", range: [0, 1] },
  });
  // Points are drawn once per animation frame: a replayed job sends thousands of events at once.
  let count = 0;
  let pending = null;
  const flush = () => {
    const traces = [...pending.keys()];
    extend(plot, { x: traces.map((t) => pending.get(t).x), y: traces.map((t) => pending.get(t).y) }, traces);
    pending = null;
    points.textContent = `${count} points`;
  };
  const add = (trace, x, y) => {
    if (y === null || y === undefined) return;
    if (!pending) {
      pending = new Map();
      requestAnimationFrame(flush);
    }
    if (!pending.has(trace)) pending.set(trace, { x: [], y: [] });
    pending.get(trace).x.push(x);
    pending.get(trace).y.push(y);
    count += 1;
  };

  function update() {
    const reason = job.status === "failed" ? job.reason : job.metrics && job.metrics.stopped_reason;
    statusLine.replaceChildren(
      "Status ",
      el("strong", { class: `status-${job.status}` }, job.status),
      job.status === "failed" ? el("span", { class: "error", role: "alert" }, ` Failed: ${job.reason || "no reason given"}`) : "",
      job.status === "succeeded" ? ` · stopped: ${reason || "—"} · version ` : "",
      job.status === "succeeded" && job.model_version ? el("a", { href: `#models/${job.model}` }, `${job.model}:${job.model_version}`) : "",
      job.status === "cancelled" && job.reason ? ` (${job.reason})` : "",
    );
    cancel.disabled = FINAL.has(job.status);
    const shown = Object.entries(job.metrics || {}).filter(([, v]) => typeof v !== "object");
    metrics.replaceChildren(shown.length ? table([["Metric", ([k]) => k], ["Value", ([, v]) => fmt(v)]], shown) : empty("No metrics yet."));
  }

  async function loadCheckpoints() {
    try {
      const found = await list(`/v1/jobs/${encodeURIComponent(jobId)}/checkpoints`);
      checkpoints.replaceChildren(
        found.length
          ? table([["Name", (c) => c.name], ["Epoch", (c) => c.epoch], ["Step", (c) => c.step], ["Train loss", (c) => fmt(c.metrics.train_loss)]], found)
          : empty(FINAL.has(job.status) ? "No checkpoints are kept for this job." : "No checkpoints yet."),
      );
    } catch (error) {
      showError(checkpoints, error);
    }
  }

  update();
  loadCheckpoints();
  stream.textContent = "following the job's events…";
  try {
    await followJob(
      jobId,
      (event) => {
        const d = event.data || {};
        if (event.type === "step") add(0, d.step, d.loss);
        else if (event.type === "epoch") {
          add(1, d.step, d.train_loss);
          add(2, d.step, d.val_loss);
          add(3, d.step, d.train_accuracy);
          add(4, d.step, d.val_accuracy);
        } else if (event.type === "checkpoint") loadCheckpoints();
        else if (event.type === "started" || event.type === "resumed" || FINAL.has(event.type)) {
          get(`/v1/jobs/${encodeURIComponent(jobId)}`).then((fresh) => { job = fresh; update(); }, () => {});
        }
      },
      signal,
      { isFinal: (event) => FINAL.has(event.type), onReconnect: (lastId) => { stream.textContent = `reconnecting after event ${lastId || "none"}…`; } },
    );
    if (signal.aborted) return;
    job = await get(`/v1/jobs/${encodeURIComponent(jobId)}`);
    stream.textContent = "the job has ended.";
    update();
    loadCheckpoints();
    refreshList();
  } catch (error) {
    if (!signal.aborted) messages.replaceChildren(errorBox(error));
  }
}
