// The dashboard's entry: sign-in with an API key, the account bar, and the pages by the URL's hash.

import { ApiError, get, session } from "./api.js";
import { el, errorBox, setScopes } from "./ui.js";
import * as datasets from "./datasets.js";
import * as jobs from "./jobs.js";
import * as models from "./models.js";
import * as playground from "./playground.js";
import * as usage from "./usage.js";
import * as admin from "./admin.js";

const PAGES = { datasets, jobs, models, playground, usage, admin };
const $ = (id) => document.getElementById(id);
let me = null;
let leave = null; // the shown page's clean-up (stops its streams)

async function signIn(key) {
  session.set(key);
  try {
    me = await get("/v1/me");
  } catch (error) {
    session.clear();
    me = null;
    throw error;
  }
  setScopes(me.scopes);
  $("tenant-name").textContent = me.tenant_name;
  $("scopes").replaceChildren(...me.scopes.map((scope) => el("span", { class: "chip" }, scope)));
  for (const link of document.querySelectorAll("nav [data-scope]")) {
    link.hidden = !(me.scopes.includes("admin") || me.scopes.includes(link.dataset.scope));
  }
  $("sign-in-page").hidden = true;
  $("nav").hidden = false;
  $("account").hidden = false;
}

function signOut() {
  session.clear();
  me = null;
  if (leave) leave();
  leave = null;
  $("page").replaceChildren();
  $("nav").hidden = true;
  $("account").hidden = true;
  $("sign-in-page").hidden = false;
  $("api-key").value = "";
  history.replaceState(null, "", "/");
  $("api-key").focus();
}

function show() {
  if (!me) return;
  let name = location.hash.slice(1).split("/")[0] || "datasets";
  const link = document.querySelector(`nav a[href="#${name}"]`);
  if (!PAGES[name] || !link || link.hidden) name = "datasets";
  for (const a of document.querySelectorAll("nav a")) a.removeAttribute("aria-current");
  document.querySelector(`nav a[href="#${name}"]`).setAttribute("aria-current", "page");
  if (leave) leave();
  const page = $("page");
  page.replaceChildren();
  const arg = decodeURIComponent(location.hash.slice(1).split("/").slice(1).join("/"));
  leave = PAGES[name].render(page, { me, arg }) || null;
  document.title = `OpenMaaS · ${name[0].toUpperCase()}${name.slice(1)}`;
}

$("sign-in").addEventListener("submit", async (event) => {
  event.preventDefault();
  const box = $("sign-in-error");
  box.hidden = true;
  try {
    await signIn($("api-key").value.trim());
    $("api-key").value = "";
    show();
    $("main").focus();
  } catch (error) {
    box.replaceChildren(errorBox(error instanceof ApiError ? error : new ApiError(0, { error: { message: String(error) } })));
    box.hidden = false;
  }
});
$("sign-out").addEventListener("click", signOut);
window.addEventListener("hashchange", show);

if (session.key()) {
  // A reload keeps the tab's key; one revoked or expired since is asked for again, with the API's reason.
  signIn(session.key()).then(show, (error) => {
    signOut();
    $("sign-in-error").replaceChildren(errorBox(error));
    $("sign-in-error").hidden = false;
  });
} else {
  $("api-key").focus();
}
