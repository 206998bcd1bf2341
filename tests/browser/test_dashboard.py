"""The dashboard in headless Chromium against a real server: sign in, upload, train while the chart grows, move
an alias, predict, chat, watch usage grow, and a second tenant who sees none of the first one's things.

The tests run in file order and build on each other's data (one server for the module), as a user would."""

from __future__ import annotations

import csv
import io
import re
import time

from playwright.sync_api import Route, expect

from tests.browser.conftest import ADMIN_KEY, CHAT_MODEL, Dashboard

MODEL = "spam-filter"
SPAM = ("win a free prize now, click here", "claim your cash reward today", "urgent: your account won a bonus")
HAM = ("are we still meeting for lunch?", "see you at the station at six", "thanks for the notes from class")
ROWS = [(f"{text} {i}", label) for i in range(15) for texts, label in ((SPAM, "spam"), (HAM, "ham")) for text in texts]


def csv_text(rows: list[tuple[str, str]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["text", "label"])
    writer.writerows(rows)
    return out.getvalue()


# True once the job's chart shows more than `n` points (the chart's card may not be drawn yet).
POINTS_OVER = (
    "n => { const shown = document.querySelector('#job-points'); return !!shown && parseInt(shown.textContent) > n; }"
)
# 90 rows, then one with no text and a duplicate: the cleaning report names both.
CSV = csv_text([*ROWS, ("", "ham"), ROWS[0]])


def test_sign_in_shows_the_tenant_and_scopes_and_a_bad_key_gets_the_apis_error(dashboard: Dashboard) -> None:
    page = dashboard.page
    page.goto(dashboard.server.url + "/")
    expect(page.get_by_label("API key")).to_have_attribute("type", "password")
    dashboard.shot("sign-in")
    dashboard.expect_console_error("401")
    page.get_by_label("API key").fill("om-not-a-key")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("invalid API key")
    dashboard.sign_in(ADMIN_KEY)
    expect(page.locator("#tenant-name")).to_have_text("default")
    expect(page.locator("#scopes")).to_contain_text("admin")
    assert page.evaluate("sessionStorage.getItem('openmaas.key')") == ADMIN_KEY
    assert ADMIN_KEY not in page.url
    expect(page.get_by_text("No datasets yet — upload one above.")).to_be_visible()


def test_the_api_docs_render_offline_from_local_assets(dashboard: Dashboard) -> None:
    page = dashboard.page
    page.goto(dashboard.server.url + "/docs")
    expect(page.locator(".swagger-ui .title").first).to_contain_text("OpenMaaS")
    expect(page.get_by_text("/v1/chat/completions").first).to_be_visible()
    dashboard.shot("docs", full_page=False)  # the whole API is pages long
    # ReDoc's bundle shows its maker's logo from their CDN, always: the page's policy blocks it.
    dashboard.expect_blocked("https://cdn.redoc.ly/redoc/logo-mini.svg")
    page.goto(dashboard.server.url + "/redoc")
    expect(page.get_by_role("heading", name=re.compile("^OpenMaaS")).first).to_be_visible()
    dashboard.shot("redoc", full_page=False)


def test_a_dropped_file_uploads_with_progress_and_shows_its_report_and_labels(dashboard: Dashboard) -> None:
    page = dashboard.page
    dashboard.sign_in(ADMIN_KEY)
    dashboard.go("Datasets")
    dropped = page.evaluate_handle(
        "([text, name]) => { const dt = new DataTransfer(); dt.items.add(new File([text], name, {type: 'text/csv'}));"
        " return dt; }",
        [CSV, "spam.csv"],
    )
    page.locator("#drop-zone").dispatch_event("drop", {"dataTransfer": dropped})
    expect(page.locator("#drop-zone")).to_contain_text("spam.csv")
    page.get_by_role("button", name="Upload").click()
    card = page.locator("#dataset-card")
    expect(card).to_contain_text("Dataset spam")
    # Set by the upload's progress events alone: a real progress bar, not one filled when the answer came.
    expect(page.locator("#upload-percent")).to_have_text("100%")
    expect(page.locator("#upload-progress")).to_have_js_property("value", 100)
    # Cleaning: the empty text and the duplicate rows were dropped, with their lines.
    expect(card.get_by_role("table").first).to_contain_text("empty_text")
    expect(card.get_by_role("table").first).to_contain_text("duplicate")
    expect(page.locator("#label-chart .bars path").first).to_be_visible()
    assert page.locator("#label-chart").evaluate("n => n.data[0].x.slice().sort()") == ["ham", "spam"]
    expect(page.locator("#dataset-list")).to_contain_text("spam")
    rows = page.locator("#dataset-rows")
    expect(rows.get_by_role("row").nth(1)).to_have_text(f"{ROWS[0][0]}{ROWS[0][1]}")
    expect(rows).to_contain_text("The first 10 of 90 rows.")
    dashboard.shot("datasets")


def test_a_job_started_from_the_recipe_form_draws_its_chart_live(dashboard: Dashboard) -> None:
    page = dashboard.page
    dashboard.sign_in(ADMIN_KEY)
    dashboard.go("Jobs")
    page.get_by_label("Model name").fill(MODEL)
    page.get_by_label("Recipe").select_option("bow-mlp")
    form = page.locator("#hyperparameters")
    # The form is built from the recipe's declared hyperparameters, with their defaults and help.
    expect(form).to_contain_text("Maximum number of passes over the training split.")
    expect(form.get_by_label(re.compile("^epochs"))).to_have_attribute("placeholder", "10")
    form.get_by_label(re.compile("^epochs")).fill("20")
    form.get_by_label(re.compile("^log every steps")).fill("1")
    form.get_by_label(re.compile("^batch size")).fill("8")
    form.get_by_label(re.compile("^learning rate")).fill("0.05")
    page.get_by_role("button", name="Start job").click()
    expect(page.locator("#job-card")).to_be_visible()
    points = page.locator("#job-points")
    page.wait_for_function(POINTS_OVER, arg=0)
    seen = int(points.inner_text().split()[0])
    page.wait_for_function(POINTS_OVER, arg=seen)
    dashboard.shot("jobs-training")
    expect(page.locator("#job-status")).to_contain_text("succeeded", timeout=120_000)
    expect(page.locator("#job-status")).to_contain_text("max_epochs")
    assert page.locator("#job-chart").evaluate("n => n.data[1].x.length") == 20  # one train loss per epoch
    expect(page.locator("#job-checkpoints")).not_to_be_empty()
    expect(page.locator("#job-cancel")).to_be_disabled()
    dashboard.shot("jobs")


def test_a_dropped_event_stream_goes_on_from_its_last_event_id_in_a_narrow_window(dashboard: Dashboard) -> None:
    page = dashboard.page
    with dashboard.server.http() as http:
        job = http.get("/v1/jobs").json()["data"][0]
    assert job["status"] == "succeeded" and job["hyperparameters"]["epochs"] == 20
    asked: list[str | None] = []
    cut_after: list[str] = []

    def drop_the_first_stream(route: Route) -> None:
        asked.append(route.request.headers.get("last-event-id"))
        if len(asked) > 1:
            route.continue_()
            return
        blocks = route.fetch().text().split("\n\n")[:40]  # the first 40 events, then the connection ends
        cut_after.append(re.findall(r"^id: (\d+)$", blocks[-1], re.MULTILINE)[0])
        route.fulfill(status=200, headers={"content-type": "text/event-stream"}, body="\n\n".join(blocks) + "\n\n")

    page.route(re.compile(r"/events\?stream=true$"), drop_the_first_stream)
    page.set_viewport_size({"width": 400, "height": 900})
    dashboard.sign_in(ADMIN_KEY)
    dashboard.go("Jobs")
    row = page.locator("#job-list tbody tr").first
    row.focus()
    page.keyboard.press("Enter")  # rows open from the keyboard too
    expect(page.locator("#job-stream")).to_have_text("the job has ended.")
    assert asked == [None, cut_after[0]]  # reconnected once, from the last event it had
    expect(page.locator("#job-points")).to_have_text("300 points")  # every point once: none lost, none twice
    assert page.evaluate("document.documentElement.scrollWidth") <= 400  # nothing wider than the window
    dashboard.shot("narrow-window")


def test_a_running_job_is_cancelled_after_a_confirmation(dashboard: Dashboard) -> None:
    page = dashboard.page
    with dashboard.server.http() as http:
        dataset = http.get("/v1/datasets").json()["data"][0]["id"]
        body = {"dataset": dataset, "model": "long-run", "hyperparameters": {"epochs": 100000, "log_every_steps": 1}}
        job = http.post("/v1/jobs", json=body).json()
    dashboard.sign_in(ADMIN_KEY)
    page.goto(f"{dashboard.server.url}/#jobs/{job['id']}")
    page.wait_for_function(POINTS_OVER, arg=0)
    page.get_by_role("button", name="Cancel job").click()
    expect(page.locator("#job-status")).to_contain_text("cancelled", timeout=60_000)
    assert dashboard.watch.dialogs == [f"Cancel job {job['id']}?"]
    expect(page.locator("#job-stream")).to_have_text("the job has ended.")
    expect(page.locator("#job-cancel")).to_be_disabled()


def test_a_failed_job_says_why_in_plain_words(dashboard: Dashboard) -> None:
    page = dashboard.page
    dashboard.sign_in(ADMIN_KEY)
    dashboard.go("Jobs")
    page.get_by_label("Model name").fill("on-a-gpu")
    page.locator("#hyperparameters").get_by_label(re.compile("^device")).select_option("cuda")
    page.get_by_role("button", name="Start job").click()
    expect(page.locator("#job-status")).to_contain_text("failed", timeout=60_000)
    expect(page.locator("#job-status").get_by_role("alert")).to_contain_text("no CUDA GPU is available")


def test_an_alias_moves_after_a_confirmation_and_versions_sit_side_by_side(dashboard: Dashboard) -> None:
    server, page = dashboard.server, dashboard.page
    with server.http() as http:
        dataset = http.get("/v1/datasets").json()["data"][0]["id"]
        job = http.post(
            "/v1/jobs",
            json={"dataset": dataset, "model": MODEL, "hyperparameters": {"epochs": 10, "learning_rate": 0.05}},
        ).json()
        deadline = time.monotonic() + 120
        while http.get(f"/v1/jobs/{job['id']}").json()["status"] not in ("succeeded", "failed"):
            assert time.monotonic() < deadline
            time.sleep(0.2)
        http.put(f"/v1/models/{MODEL}/aliases/production", json={"version": 1}).raise_for_status()
    dashboard.sign_in(ADMIN_KEY)
    dashboard.go("Models")
    page.locator("#model-list").get_by_role("cell", name=MODEL, exact=True).click()
    versions = page.locator("#versions")
    expect(versions.locator("thead th")).to_have_text(["Version", "v1", "v2"])
    expect(versions).to_contain_text("Lineage")
    page.get_by_label("Version").select_option("2")
    page.get_by_role("button", name="Move alias").click()
    expect(page.locator("#model-status")).to_contain_text("production → v2")
    assert dashboard.watch.dialogs[-1] == f"Move production of {MODEL} from v1 to v2?"
    aliases = versions.get_by_role("row", name=re.compile("^Aliases"))
    expect(aliases.get_by_role("cell")).to_have_text(["—", "production"])
    dashboard.shot("models")
    public = page.get_by_label("Public (other tenants may read and use it)")
    public.check()
    expect(page.locator("#model-status")).to_contain_text("Now public")
    expect(page.locator("#model-list")).to_contain_text("yes")
    page.get_by_label("Public (other tenants may read and use it)").uncheck()
    expect(page.locator("#model-status")).to_contain_text("Now private")
    with page.expect_download() as downloading:
        page.locator("#versions").get_by_role("button", name="safetensors").nth(1).click()
    assert downloading.value.suggested_filename == f"{MODEL}-2.safetensors"
    assert downloading.value.path().stat().st_size > 1000
    expect(page.locator("#model-status")).to_contain_text("Downloaded v2 as safetensors")
    with server.http() as http:
        assert http.get(f"/v1/models/{MODEL}").json()["aliases"] == {"production": 2}


def test_the_playground_predicts_compares_and_streams_a_chat_showing_the_code(dashboard: Dashboard) -> None:
    page = dashboard.page
    dashboard.sign_in(ADMIN_KEY)
    dashboard.go("Playground")
    page.get_by_label("Model").select_option(MODEL)
    page.get_by_label("Texts to classify").fill("win a free prize now, click here\nsee you at the station")
    page.get_by_role("button", name="Predict").click()
    predictions = page.locator(".prediction")
    expect(predictions).to_have_count(2)
    expect(predictions.first).to_contain_text("→ spam")
    expect(predictions.first.locator("meter")).to_have_count(2)
    curl = page.locator("#code-curl")
    expect(curl).to_contain_text(f"/v1/models/{MODEL}/predict")
    expect(curl).to_contain_text("$OPENMAAS_API_KEY")
    dashboard.shot("playground-predict")

    page.get_by_label("Model").select_option("all-minilm-l6-v2")
    page.get_by_role("button", name="Compare").click()
    similarity = float(page.locator("#embed-similarity").inner_text())
    assert 0.2 < similarity <= 1.0
    expect(page.locator("#code-python")).to_contain_text("client.embeddings.create")

    page.get_by_label("Model").select_option(CHAT_MODEL)
    page.get_by_label("Message").fill("Hello there")
    page.get_by_label("Max tokens").fill("24")
    page.get_by_label("Seed").fill("7")  # the tiny model is random: a seed makes its reply the same every run
    page.get_by_role("button", name="Send").click()
    expect(page.locator("#chat-finish")).to_contain_text("finish reason")
    reply = page.locator("#chat-log .assistant")
    assert int(reply.get_attribute("data-chunks") or 0) >= 2  # streamed, chunk by chunk
    assert reply.locator(".reply").inner_text().strip()
    expect(page.locator("#code-python")).to_contain_text("stream=True")
    assert ADMIN_KEY not in page.locator("#playground-code").inner_text()
    dashboard.shot("playground-chat")


def test_usage_grows_with_the_calls_made(dashboard: Dashboard) -> None:
    page = dashboard.page
    dashboard.sign_in(ADMIN_KEY)
    dashboard.go("Usage")
    before = int(page.locator("#usage-requests").inner_text())
    assert before >= 1  # the playground's predictions
    with dashboard.server.http() as http:
        for _ in range(3):
            http.post(f"/v1/models/{MODEL}/predict", json={"inputs": ["hello"]}).raise_for_status()
    page.get_by_role("button", name="Refresh").click()
    expect(page.locator("#usage-requests")).to_have_text(str(before + 3))
    expect(page.locator("#usage-by-model .bars path").first).to_be_visible()
    expect(page.locator("#usage-by-day")).to_be_visible()
    expect(page.locator("#usage-by-key")).to_be_visible()
    dashboard.shot("usage")


def test_a_second_tenants_key_made_in_admin_sees_none_of_the_first_tenants_things(dashboard: Dashboard) -> None:
    page = dashboard.page
    dashboard.sign_in(ADMIN_KEY)
    dashboard.go("Admin")
    page.get_by_label("New tenant's name").fill("acme")
    page.get_by_role("button", name="Create tenant").click()
    expect(page.locator("#key-card")).to_contain_text("Keys of acme")
    page.get_by_role("button", name="Create key").click()
    secret = page.locator("#new-key-secret").inner_text()
    assert secret.startswith("om-")
    expect(page.locator("#key-list")).to_contain_text("read, train, infer")
    expect(page.locator("#audit-log")).to_contain_text("tenant.create")
    dashboard.shot("admin")

    page.get_by_role("button", name="Sign out").click()
    dashboard.sign_in(secret)
    expect(page.locator("#tenant-name")).to_have_text("acme")
    expect(page.get_by_role("link", name="Admin")).to_be_hidden()
    expect(page.get_by_text("No datasets yet — upload one above.")).to_be_visible()
    dashboard.go("Jobs")
    expect(page.locator("#job-list")).to_contain_text("No jobs yet")
    dashboard.go("Models")
    expect(page.locator("#model-list")).to_contain_text("all-minilm-l6-v2")
    expect(page.locator("#model-list")).not_to_contain_text(MODEL)
    expect(page.locator("#model-list")).not_to_contain_text(CHAT_MODEL)
    dashboard.go("Usage")
    expect(page.locator("#usage-requests")).to_have_text("0")
    # Its own dataset, chosen with the file field this time, then deleted after a confirmation.
    dashboard.go("Datasets")
    page.get_by_label("File").set_input_files(
        files=[{"name": "acme.csv", "mimeType": "text/csv", "buffer": CSV.encode()}]
    )
    page.get_by_role("button", name="Upload").click()
    expect(page.locator("#dataset-card")).to_contain_text("Dataset acme")
    page.get_by_role("button", name="Delete dataset").click()
    expect(page.locator("#dataset-detail")).to_contain_text("Deleted acme.")
    assert dashboard.watch.dialogs[-1].startswith("Delete dataset acme")
    expect(page.get_by_text("No datasets yet — upload one above.")).to_be_visible()
    # The first tenant's model by its address: the API's 404, shown as the API said it.
    dashboard.expect_console_error("404")
    page.goto(f"{dashboard.server.url}/#models/{MODEL}")
    expect(page.locator("#model-detail")).to_contain_text(f"no model {MODEL!r}")
    dashboard.shot("second-tenant")


def test_a_read_only_key_sees_no_action_it_may_not_take(dashboard: Dashboard) -> None:
    page = dashboard.page
    with dashboard.server.http() as http:
        tenant = http.get("/v1/tenants").json()["data"][-1]
        created = http.post(f"/v1/tenants/{tenant['id']}/keys", json={"scopes": ["read"]}).json()
    key = created["key"]
    dashboard.sign_in(key)
    expect(page.locator("#scopes")).to_have_text("read")
    expect(page.get_by_role("heading", name="Datasets", level=2)).to_be_visible()
    expect(page.get_by_role("heading", name="Upload a dataset")).to_have_count(0)
    expect(page.get_by_text("No datasets yet.", exact=True)).to_be_visible()
    expect(page.get_by_role("link", name="Playground")).to_be_hidden()
    expect(page.get_by_role("link", name="Admin")).to_be_hidden()
    dashboard.go("Jobs")
    expect(page.get_by_role("heading", name="Start a training job")).to_have_count(0)
    page.goto(f"{dashboard.server.url}/#admin")  # a forbidden page by its address: the first page instead
    expect(page.get_by_role("heading", name="Datasets", level=2)).to_be_visible()
    # Revoked while the tab is open: a reload asks for a key again, saying why.
    with dashboard.server.http() as http:
        http.delete(f"/v1/keys/{created['id']}").raise_for_status()
    dashboard.expect_console_error("401")
    page.reload()
    expect(page.locator("#sign-in-error")).to_contain_text("this API key was revoked")
    expect(page.get_by_label("API key")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('openmaas.key')") is None
