// Admin: tenants (create), their keys (create with the secret shown once, revoke) and the audit log.

import { api, get } from "./api.js";
import { confirmAction, el, empty, errorBox, field, fmt, showError, table, when } from "./ui.js";

const SCOPES = ["read", "train", "infer", "admin"];

export function render(page) {
  const tenants = el("div", { id: "tenant-list" });
  const keys = el("div", { id: "key-panel" });
  const audit = el("div", { id: "audit-log" });
  const name = el("input", { id: "tenant-name-input", required: true, placeholder: "e.g. acme" });
  const status = el("div");
  const createTenant = el("form", {
    id: "tenant-form",
    onsubmit: async (event) => {
      event.preventDefault();
      try {
        const tenant = await api("POST", "/v1/tenants", { name: name.value.trim() });
        name.value = "";
        status.replaceChildren(el("p", { class: "notice" }, `Created tenant ${tenant.name} (${tenant.id}).`));
        await loadTenants();
        showKeys(keys, tenant, loadAudit);
      } catch (error) {
        status.replaceChildren(errorBox(error));
      }
    },
  }, el("div", { class: "row" }, field("New tenant's name", name), el("button", { type: "submit" }, "Create tenant")));
  page.append(
    el("h2", {}, "Admin"),
    el("div", { class: "card" }, el("h3", {}, "Tenants"), createTenant, status, tenants),
    keys,
    el("div", { class: "card" }, el("h3", {}, "Audit log"), audit),
  );

  async function loadTenants() {
    try {
      const { data } = await get("/v1/tenants");
      tenants.replaceChildren(table(
        [["Name", (t) => t.name], ["Id", (t) => el("code", {}, t.id)], ["Limits", (t) => fmt(t.limits)], ["Disabled", (t) => (t.disabled ? "yes" : "no")], ["Created", (t) => when(t.created_at)]],
        data,
        { onSelect: (t) => showKeys(keys, t, loadAudit), caption: "Choose a tenant to see and manage its keys." },
      ));
    } catch (error) {
      showError(tenants, error);
    }
  }

  async function loadAudit() {
    try {
      const { data } = await get("/v1/audit?limit=200");
      audit.replaceChildren(data.length
        ? table([["When", (e) => when(e.created_at)], ["Action", (e) => e.action], ["Target", (e) => el("code", {}, e.target)], ["By key", (e) => e.key_id || "—"], ["Details", (e) => fmt(e.details)]], data)
        : empty("Nothing audited yet."));
    } catch (error) {
      showError(audit, error);
    }
  }
  loadTenants();
  loadAudit();
}

async function showKeys(panel, tenant, changed) {
  const list = el("div", { id: "key-list" });
  const secret = el("div", { id: "key-secret", "aria-live": "polite" });
  const boxes = SCOPES.map((scope) => el("input", { type: "checkbox", value: scope, id: `scope-${scope}`, checked: scope !== "admin" }));
  const form = el("form", {
    id: "key-form",
    onsubmit: async (event) => {
      event.preventDefault();
      const scopes = boxes.filter((b) => b.checked).map((b) => b.value);
      try {
        const key = await api("POST", `/v1/tenants/${encodeURIComponent(tenant.id)}/keys`, { scopes });
        secret.replaceChildren(el("div", { class: "notice" },
          el("p", {}, "The new key's secret, shown this once — copy it now:"),
          el("p", { class: "secret", id: "new-key-secret" }, key.key)));
        load();
        changed();
      } catch (error) {
        secret.replaceChildren(errorBox(error));
      }
    },
  },
  el("fieldset", {}, el("legend", {}, "Scopes of a new key"), boxes.map((b) => el("span", {}, b, el("label", { for: b.id, class: "inline" }, ` ${b.value} `)))),
  el("button", { type: "submit" }, "Create key"));

  async function load() {
    try {
      const { data } = await get(`/v1/tenants/${encodeURIComponent(tenant.id)}/keys`);
      list.replaceChildren(data.length
        ? table([
            ["Key", (k) => el("code", {}, k.id)],
            ["Label", (k) => k.prefix],
            ["Scopes", (k) => k.scopes.join(", ")],
            ["Created", (k) => when(k.created_at)],
            ["State", (k) => (k.revoked ? "revoked" : el("button", {
              type: "button",
              class: "danger",
              "aria-label": `Revoke key ${k.id}`,
              onclick: async () => {
                if (!confirmAction(`Revoke key ${k.id}? Clients using it stop working within seconds.`)) return;
                try {
                  await api("DELETE", `/v1/keys/${encodeURIComponent(k.id)}`);
                  load();
                  changed();
                } catch (error) {
                  secret.replaceChildren(errorBox(error));
                }
              },
            }, "Revoke"))],
          ], data)
        : empty("This tenant has no keys yet — create one."));
    } catch (error) {
      showError(list, error);
    }
  }
  panel.replaceChildren(el("div", { class: "card", id: "key-card" }, el("h3", {}, `Keys of ${tenant.name}`), form, secret, list));
  load();
}
