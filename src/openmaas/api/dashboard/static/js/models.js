// Models: the registry list, one model's versions side by side, aliases, public/private, lineage and downloads.

import { api, download, get } from "./api.js";
import { confirmAction, el, empty, errorBox, field, fmt, may, showError, table, when } from "./ui.js";

export function render(page, { arg }) {
  const listBox = el("div", { id: "model-list" });
  const detail = el("div", { id: "model-detail" });
  page.append(el("h2", {}, "Models"), el("div", { class: "card" }, el("h3", {}, "Models this key can read"), listBox), detail);

  const refresh = async () => {
    try {
      const { data } = await get("/v1/models");
      listBox.replaceChildren(
        data.length
          ? table(
              [
                ["Model", (m) => m.id],
                ["Task", (m) => m.task || "—"],
                ["Latest version", (m) => m.latest_version ?? "—"],
                ["Aliases", (m) => Object.entries(m.aliases).map(([a, v]) => `${a} → ${v}`).join(", ") || "—"],
                ["Owner", (m) => (m.foundation ? "foundation" : m.owned_by)],
                ["Public", (m) => (m.public ? "yes" : "no")],
              ],
              data,
              { onSelect: (m) => { history.replaceState(null, "", `#models/${m.id}`); showModel(detail, m.id, null, refresh); } },
            )
          : empty("No models yet — train one from a dataset on the Jobs page."),
      );
    } catch (error) {
      showError(listBox, error);
    }
  };
  refresh();
  if (arg) showModel(detail, arg, null, refresh);
}

const path = (id) => `/v1/models/${id.split("/").map(encodeURIComponent).join("/")}`;

async function showModel(detail, id, notice, changed) {
  let model;
  try {
    model = await get(path(id));
  } catch (error) {
    showError(detail, error);
    return;
  }
  const own = !model.foundation && !model.id.includes("/");
  const editable = own && may("train");
  const status = el("div", { id: "model-status" }, notice ? el("p", { class: "notice" }, notice) : null);
  const versions = model.versions || [];
  const rows = [
    ["Task", (v) => v.task],
    ["Recipe", (v) => v.recipe],
    ["Runtime", (v) => v.runtime],
    ["Aliases", (v) => v.aliases.join(", ") || "—"],
    ["Labels", (v) => v.labels.join(", ") || "—"],
    ["Parameters", (v) => v.parameter_count.toLocaleString()],
    ["Metrics", (v) => el("div", {}, Object.entries(v.metrics).filter(([, x]) => typeof x !== "object").map(([k, x]) => el("div", {}, `${k}: ${fmt(x)}`)))],
    ["Hyperparameters", (v) => el("div", {}, Object.entries(v.hyperparameters).map(([k, x]) => el("div", {}, `${k}: ${fmt(x)}`)))],
    ["Lineage", (v) => lineage(v)],
    ["Artifact sha256", (v) => el("code", { title: v.artifact_sha256 }, `${v.artifact_sha256.slice(0, 12)}…`)],
    ["Created", (v) => when(v.created_at)],
    ["Download", (v) => downloadButtons(model, v, status)],
  ];
  const sideBySide = el("div", { class: "table-wrap" },
    el("table", { id: "versions" },
      el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "Version"), versions.map((v) => el("th", { scope: "col" }, `v${v.version}`)))),
      el("tbody", {}, rows.map(([title, cell]) => el("tr", {}, el("th", { scope: "row" }, title), versions.map((v) => el("td", {}, cell(v)))))),
    ),
  );
  const card = el("div", { class: "card", id: "model-card" },
    el("h3", {}, `Model ${model.id}`),
    el("p", {}, model.foundation ? "A foundation model, readable by every tenant." : `Owned by ${model.owned_by}.`),
    editable ? publicToggle(model, status, (text) => { changed(); showModel(detail, id, text, changed); }) : el("p", {}, model.public ? "Public." : "Private."),
    editable && versions.length ? aliasForm(model, status, (text) => { changed(); showModel(detail, id, text, changed); }) : null,
    status,
    el("h3", {}, "Versions side by side"),
    versions.length ? sideBySide : empty("This model has no versions."),
  );
  detail.replaceChildren(card);
}

function lineage(v) {
  if (!v.job_id && !v.dataset_id) return "imported (no job)";
  return el("span", {},
    v.dataset_id ? el("a", { href: `#datasets/${v.dataset_id}` }, `dataset ${v.dataset_id}`) : "dataset deleted",
    " → ",
    v.job_id ? el("a", { href: `#jobs/${v.job_id}` }, `job ${v.job_id}`) : "no job",
    ` → v${v.version}`,
  );
}

function downloadButtons(model, v, status) {
  // The server exports ONNX only for versions it serves with the ONNX runtime (the others answer a 400).
  const formats = v.runtime.startsWith("onnx") ? ["safetensors", "onnx"] : ["safetensors"];
  return el("div", {}, formats.map((format) => el("button", {
    type: "button",
    class: "secondary",
    onclick: async () => {
      status.replaceChildren(el("p", { class: "hint" }, `Preparing ${format}…`));
      try {
        await download(`${path(model.id)}:${v.version}/artifact?format=${format}`, `${model.id.replaceAll("/", "-")}-${v.version}.${format}`);
        status.replaceChildren(el("p", { class: "notice" }, `Downloaded v${v.version} as ${format}.`));
      } catch (error) {
        status.replaceChildren(errorBox(error));
      }
    },
  }, format)));
}

function publicToggle(model, status, reload) {
  const box = el("input", { type: "checkbox", id: "model-public", checked: model.public });
  box.addEventListener("change", async () => {
    try {
      await api("PATCH", path(model.id), { public: box.checked });
      reload(box.checked ? "Now public: every tenant can read it." : "Now private.");
    } catch (error) {
      box.checked = !box.checked;
      status.replaceChildren(errorBox(error));
    }
  });
  return el("p", {}, box, el("label", { for: "model-public", class: "inline" }, "Public (other tenants may read and use it)"));
}

function aliasForm(model, status, reload) {
  const alias = el("input", { id: "alias-name", value: "production", required: true });
  const latest = model.versions[model.versions.length - 1].version;
  const version = el("select", { id: "alias-version" }, model.versions.map((v) => el("option", { value: v.version, selected: v.version === latest }, `v${v.version}`)));
  return el("form", {
    id: "alias-form",
    onsubmit: async (event) => {
      event.preventDefault();
      const name = alias.value.trim();
      const from = model.aliases[name];
      const text = from ? `Move ${name} of ${model.id} from v${from} to v${version.value}?` : `Point ${name} of ${model.id} at v${version.value}?`;
      if (!confirmAction(text)) return;
      try {
        await api("PUT", `${path(model.id)}/aliases/${encodeURIComponent(name)}`, { version: Number(version.value) });
        reload(`${name} → v${version.value}`);
      } catch (error) {
        status.replaceChildren(errorBox(error));
      }
    },
  }, el("div", { class: "row" }, field("Alias", alias), field("Version", version), el("button", { type: "submit" }, "Move alias")));
}
