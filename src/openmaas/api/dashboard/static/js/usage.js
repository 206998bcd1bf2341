// Usage: requests, tokens and training compute per day, per model and per key (admins: every tenant's too).

import { get } from "./api.js";
import { chart, el, empty, field, fmt, may, showError, table } from "./ui.js";

const METRICS = {
  requests: { title: "Requests", kind: "inference", value: (r) => r.records },
  tokens: { title: "Tokens", kind: "inference", value: (r) => r.tokens + r.completion_tokens },
  training: { title: "Training seconds", kind: "training", value: (r) => r.seconds },
};

export function render(page) {
  const totals = el("div", { id: "usage-totals" });
  const charts = el("div", { class: "grid", id: "usage-charts" });
  const everyone = el("input", { type: "checkbox", id: "usage-all-tenants" });
  const metric = el("select", { id: "usage-metric" }, Object.entries(METRICS).map(([name, m]) => el("option", { value: name }, m.title)));
  page.append(
    el("h2", {}, "Usage"),
    el("div", { class: "card" },
      may("admin") ? el("p", {}, everyone, el("label", { for: "usage-all-tenants", class: "inline" }, " Every tenant (admin)")) : null,
      el("div", { class: "row" }, field("Chart", metric), el("button", { type: "button", class: "secondary", id: "usage-refresh", onclick: () => load() }, "Refresh")),
      totals,
    ),
    charts,
  );
  everyone.addEventListener("change", () => load());
  metric.addEventListener("change", () => load());

  async function load() {
    const scope = everyone.checked ? "&tenant=all" : "";
    try {
      const groups = ["day", "model", "key", ...(everyone.checked ? ["tenant"] : [])];
      const [all, ...grouped] = await Promise.all([get(`/v1/usage${scope.replace("&", "?")}`), ...groups.map((g) => get(`/v1/usage?group_by=${g}${scope}`))]);
      const sum = (kind, column) => all.data.filter((r) => r.kind === kind).reduce((n, r) => n + r[column], 0);
      totals.replaceChildren(
        table(
          [["", ([name]) => name], ["Inference", ([, f]) => fmt(f("inference"))], ["Training", ([, f]) => fmt(f("training"))]],
          [
            ["Requests / jobs", (k) => sum(k, "records")],
            ["Items", (k) => sum(k, "items")],
            ["Tokens in", (k) => sum(k, "tokens")],
            ["Tokens out", (k) => sum(k, "completion_tokens")],
            ["Seconds", (k) => sum(k, "seconds")],
          ],
        ),
        el("p", { class: "hint" }, "Inference requests so far: ", el("strong", { id: "usage-requests" }, String(sum("inference", "records")))),
      );
      charts.replaceChildren();
      if (!all.data.length) {
        charts.append(empty("No usage yet — train a model or call one in the Playground."));
        return;
      }
      const chosen = METRICS[metric.value];
      const nodes = groups.map((group) => {
        const node = el("div", { class: "chart", id: `usage-by-${group}`, role: "img", "aria-label": `${chosen.title} per ${group}` });
        charts.append(el("div", { class: "card" }, el("h3", {}, `${chosen.title} per ${group}`), node));
        return node;
      });
      // Drawn once every card is laid out, so that each chart takes its card's width.
      grouped.forEach((answer, i) => {
        const group = groups[i];
        const rows = answer.data.filter((r) => r.kind === chosen.kind);
        if (!rows.length) {
          nodes[i].replaceWith(empty(`No ${chosen.title.toLowerCase()} yet.`));
          return;
        }
        chart(nodes[i], [{ type: "bar", name: chosen.title, x: rows.map((r) => r[group] ?? "(none)"), y: rows.map(chosen.value) }], {
          xaxis: { type: "category" },
          yaxis: { title: { text: chosen.title.toLowerCase() } },
          showlegend: false,
        });
      });
    } catch (error) {
      showError(totals, error);
    }
  }
  load();
}
