// Datasets: drag-and-drop upload with a progress bar, the list, and one dataset's cleaning report and labels.

import { api, get, list, upload } from "./api.js";
import { chart, confirmAction, el, empty, errorBox, field, fmt, may, showError, table, when } from "./ui.js";

export function render(page, { arg }) {
  const listBox = el("div", { id: "dataset-list" });
  const detail = el("div", { id: "dataset-detail" });
  page.append(el("h2", {}, "Datasets"));
  if (may("train")) page.append(uploadCard((id) => refresh(id)));
  page.append(el("div", { class: "card" }, el("h3", {}, "Your datasets"), listBox), detail);

  async function refresh(selected = arg) {
    try {
      const items = await list("/v1/datasets");
      if (!items.length) {
        listBox.replaceChildren(empty(may("train") ? "No datasets yet — upload one above." : "No datasets yet."));
        return;
      }
      listBox.replaceChildren(
        table(
          [
            ["Name", (d) => d.name],
            ["Id", (d) => el("code", {}, d.id)],
            ["Kind", (d) => d.kind],
            ["Rows", (d) => d.rows],
            ["Labels", (d) => Object.keys(d.labels).length || "—"],
            ["Uploaded", (d) => when(d.created_at)],
          ],
          items,
          { onSelect: (d) => showDataset(detail, d, refresh) },
        ),
      );
      const chosen = items.find((d) => d.id === selected);
      if (chosen) showDataset(detail, chosen, refresh);
    } catch (error) {
      showError(listBox, error);
    }
  }
  refresh();
}

function uploadCard(done) {
  const file = el("input", { type: "file", id: "dataset-file", accept: ".csv,.tsv,.jsonl,.txt" });
  const name = el("input", { id: "dataset-name", placeholder: "from the file's name" });
  const kind = el("select", { id: "dataset-kind" }, el("option", { value: "classification" }, "classification (labelled texts)"), el("option", { value: "text" }, "text (documents for language models)"));
  const textColumn = el("input", { id: "dataset-text-column", value: "text" });
  const labelColumn = el("input", { id: "dataset-label-column", value: "label" });
  const bar = el("progress", { id: "upload-progress", max: 100, value: 0, "aria-label": "Upload progress" });
  const percent = el("span", { id: "upload-percent", "aria-live": "polite" }, "");
  const status = el("div", { id: "upload-status" });
  const drop = el("div", { class: "drop", id: "drop-zone" }, "Drop a CSV, TSV, JSONL or TXT file here, or choose one below.");
  const button = el("button", { type: "submit" }, "Upload");
  let chosen = null;

  const pick = (picked) => {
    chosen = picked;
    drop.textContent = picked ? `Chosen: ${picked.name} (${picked.size} bytes)` : drop.textContent;
  };
  file.addEventListener("change", () => pick(file.files[0] || null));
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    pick(event.dataTransfer.files[0] || null);
  });

  const form = el(
    "form",
    {
      onsubmit: async (event) => {
        event.preventDefault();
        if (!chosen) {
          status.replaceChildren(errorBox({ message: "choose or drop a file first" }));
          return;
        }
        const body = new FormData();
        body.append("file", chosen, chosen.name);
        if (name.value.trim()) body.append("name", name.value.trim());
        body.append("kind", kind.value);
        body.append("text_column", textColumn.value);
        body.append("label_column", labelColumn.value);
        button.disabled = true;
        bar.value = 0;
        status.replaceChildren();
        try {
          const dataset = await upload("/v1/datasets", body, (loaded, total) => {
            bar.value = Math.round((100 * loaded) / total);
            percent.textContent = `${bar.value}%`;
          });
          status.replaceChildren(el("p", { class: "notice" }, `Uploaded ${dataset.name}: ${dataset.rows} rows kept.`));
          done(dataset.id);
          history.replaceState(null, "", `#datasets/${dataset.id}`);
        } catch (error) {
          status.replaceChildren(errorBox(error));
        } finally {
          button.disabled = false;
        }
      },
    },
    drop,
    field("File", file),
    el("div", { class: "row" }, field("Name", name), field("Kind", kind), field("Text column", textColumn), field("Label column", labelColumn, "classification only")),
    button,
    el("div", { class: "row" }, bar, percent),
    status,
  );
  return el("div", { class: "card" }, el("h3", {}, "Upload a dataset"), form);
}

function showDataset(detail, d, refresh) {
  const report = d.report || {};
  const dropped = report.dropped || {};
  const reasons = Object.entries(dropped);
  const labels = Object.entries(d.labels || {});
  const chartNode = el("div", { class: "chart", id: "label-chart", role: "img", "aria-label": "Label distribution" });
  const sample = el("div", { id: "dataset-rows" }, el("p", { class: "hint" }, "Reading the first rows…"));
  const del = el("button", { class: "danger", type: "button", disabled: !may("train") }, "Delete dataset");
  const status = el("div");
  del.addEventListener("click", async () => {
    if (!confirmAction(`Delete dataset ${d.name} (${d.id})? Jobs that used it keep their models.`)) return;
    try {
      await api("DELETE", `/v1/datasets/${encodeURIComponent(d.id)}`);
      detail.replaceChildren(el("p", { class: "notice" }, `Deleted ${d.name}.`));
      history.replaceState(null, "", "#datasets");
      refresh(null);
    } catch (error) {
      status.replaceChildren(errorBox(error));
    }
  });
  detail.replaceChildren(
    el(
      "div",
      { class: "card", id: "dataset-card" },
      el("h3", {}, `Dataset ${d.name}`),
      el("p", {}, el("code", {}, d.id), ` · ${d.kind} · ${d.format} · ${d.rows} rows · ${d.bytes} bytes · sha256 `, el("code", {}, d.sha256.slice(0, 16)), "…"),
      el("div", { class: "grid" },
        el("div", {},
          el("h3", {}, "Cleaning report"),
          reasons.length
            ? table([["Dropped because", ([reason]) => reason], ["Rows", ([, r]) => r.count], ["Example lines", ([, r]) => (r.lines || []).join(", ")]], reasons)
            : empty("Nothing was dropped: every row was kept."),
          table([["Report", ([k]) => k], ["Value", ([, v]) => fmt(v)]], Object.entries(report).filter(([k]) => k !== "dropped")),
        ),
        el("div", {}, el("h3", {}, "Labels"), labels.length ? chartNode : empty("A text dataset has no labels.")),
      ),
      el("h3", {}, "First rows, as training reads them"),
      sample,
      del,
      status,
    ),
  );
  showRows(sample, d);
  if (labels.length) {
    chart(chartNode, [{ type: "bar", x: labels.map(([label]) => label), y: labels.map(([, count]) => count), name: "rows" }], { yaxis: { title: { text: "rows" } } });
  }
}

async function showRows(box, d) {
  try {
    const { data, has_more: more } = await get(`/v1/datasets/${encodeURIComponent(d.id)}/rows?limit=10`);
    if (!data.length) {
      box.replaceChildren(empty("No rows."));
      return;
    }
    const columns = Object.keys(data[0]).map((name) => [name, (row) => fmt(row[name])]);
    box.replaceChildren(table(columns, data), more ? el("p", { class: "hint" }, `The first ${data.length} of ${d.rows} rows.`) : null);
  } catch (error) {
    showError(box, error);
  }
}
