// Small DOM helpers shared by the pages: building elements, tables, error and empty states, charts, forms.

/** el("button", {class: "x", onclick: f}, "text", child...) */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "class") node.className = value;
    else if (value === true) node.setAttribute(name, "");
    else node.setAttribute(name, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

/** A page's scopes: set by the app once the key is known; hides or disables what the key may not do. */
let scopes = new Set();
export function setScopes(list) {
  scopes = new Set(list);
}
export function may(scope) {
  return scopes.has("admin") || scopes.has(scope);
}

/** An error box showing the API's own message (and its code and param, when it sent them). */
export function errorBox(error) {
  const detail = [error.code && `code ${error.code}`, error.param && `param ${error.param}`].filter(Boolean);
  return el("div", { class: "error", role: "alert" }, error.message, detail.length ? ` (${detail.join(", ")})` : "");
}

export function showError(container, error) {
  container.replaceChildren(errorBox(error));
}

export function empty(text) {
  return el("p", { class: "empty" }, text);
}

export function when(seconds) {
  return seconds ? new Date(seconds * 1000).toLocaleString() : "—";
}

export function fmt(value) {
  if (value === null || value === undefined) return "—";
  if (typeof value === "number") return Number.isInteger(value) ? String(value) : String(Number(value.toPrecision(4)));
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

/** A table of rows; `onSelect(row)` makes rows selectable by click and by Enter/Space from the keyboard. */
export function table(columns, rows, { onSelect, caption } = {}) {
  const head = el("tr", {}, columns.map(([title]) => el("th", { scope: "col" }, title)));
  const body = rows.map((row) => {
    const tr = el("tr", {}, columns.map(([, cell]) => el("td", {}, cell(row))));
    if (onSelect) {
      tr.classList.add("selectable");
      tr.tabIndex = 0;
      tr.addEventListener("click", () => onSelect(row, tr));
      tr.addEventListener("keydown", (event) => {
        if (event.key === "Enter" || event.key === " ") {
          event.preventDefault();
          onSelect(row, tr);
        }
      });
    }
    return tr;
  });
  return el("div", { class: "table-wrap" }, el("table", {}, caption ? el("caption", { class: "hint" }, caption) : null, el("thead", {}, head), el("tbody", {}, body)));
}

/** A labelled field: returns [wrapper, input]. */
export function field(label, input, help) {
  const id = input.id || `f-${Math.random().toString(36).slice(2, 9)}`;
  input.id = id;
  const helpNode = help ? el("span", { class: "help", id: `${id}-help` }, help) : null;
  if (helpNode) input.setAttribute("aria-describedby", helpNode.id);
  return el("div", {}, el("label", { for: id }, label, helpNode), input);
}

const LAYOUT = { margin: { t: 30, r: 60, b: 40, l: 60 }, legend: { orientation: "h" }, font: { size: 12 } };
const CONFIG = { displaylogo: false, displayModeBar: false, responsive: true };

/** Draws (or redraws) a Plotly chart in `node`. */
export function chart(node, traces, layout = {}) {
  window.Plotly.react(node, traces, { ...LAYOUT, ...layout }, CONFIG);
}

export function extend(node, update, indices) {
  window.Plotly.extendTraces(node, update, indices);
}

export function confirmAction(text) {
  return window.confirm(text);
}
