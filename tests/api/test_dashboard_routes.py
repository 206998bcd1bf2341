"""What the browser needs from the server, over real HTTP: the dashboard's page and scripts (with a strict
Content-Security-Policy), the docs from local assets, `/v1/me` and `/v1/recipes`."""

from __future__ import annotations

import re

import httpx

from openmaas.recipes import CATALOG, get_recipe
from tests.conftest import ADMIN_KEY, Server


def test_the_dashboard_page_and_everything_it_loads_come_from_this_server(server: Server) -> None:
    page = httpx.get(f"{server.url}/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "script-src 'self';" in policy and "connect-src 'self'" in policy
    assets = re.findall(r'(?:src|href)="([^"#]+)"', page.text)
    assert "/dashboard/vendor/plotly.min.js" in assets
    for asset in assets:
        if asset.startswith("data:"):
            continue
        assert asset.startswith("/"), f"{asset} is not on this server"
        answer = httpx.get(f"{server.url}{asset}")
        assert answer.status_code == 200, asset
    plotly = httpx.get(f"{server.url}/dashboard/vendor/plotly.min.js")
    assert plotly.headers["content-type"].startswith(("text/javascript", "application/javascript"))
    assert len(plotly.content) > 1_000_000  # the wheel's whole bundle


def test_the_docs_pages_load_only_local_assets(server: Server) -> None:
    for path in ("/docs", "/redoc"):
        page = httpx.get(f"{server.url}{path}")
        assert page.status_code == 200
        urls = re.findall(r'(?:src|href|url)\s*[:=]\s*["\']([^"\']+)["\']', page.text)
        assert urls, page.text
        assert all(url.startswith("/") for url in urls), urls
        for url in urls:
            assert httpx.get(f"{server.url}{url}").status_code == 200, url


def test_an_unknown_asset_is_the_apis_404(server: Server) -> None:
    for path in ("/dashboard/vendor/jquery.js", "/dashboard/static/nothing.js"):
        answer = httpx.get(f"{server.url}{path}")
        assert answer.status_code == 404
        assert answer.json()["error"]["type"] == "invalid_request_error"


def test_me_tells_a_key_its_tenant_and_scopes(server: Server, http: httpx.Client) -> None:
    admin = http.get("/v1/me").json()
    assert admin["tenant_name"] == "default" and admin["is_admin"] is True
    assert set(admin["scopes"]) == {"admin", "train", "infer", "read"}
    tenant = http.post("/v1/tenants", json={"name": "me-route-tenant"}).json()
    key = http.post(
        f"/v1/tenants/{tenant['id']}/keys", json={"scopes": ["read"], "limits": {"requests_per_minute": 77}}
    )
    with server.http(key.json()["key"]) as reader:
        me = reader.get("/v1/me").json()
    assert me["tenant_id"] == tenant["id"] and me["tenant_name"] == "me-route-tenant"
    assert me["scopes"] == ["read"] and me["is_admin"] is False
    assert me["key_id"] == key.json()["id"] and me["key_limits"] == {"requests_per_minute": 77}
    assert ADMIN_KEY not in str(me) and key.json()["key"] not in str(me)
    missing = httpx.get(f"{server.url}/v1/me")
    assert missing.status_code == 401 and missing.json()["error"]["code"]


def test_recipes_list_each_recipes_declared_hyperparameters(http: httpx.Client) -> None:
    answer = http.get("/v1/recipes")
    assert answer.status_code == 200
    recipes = {r["name"]: r for r in answer.json()["data"]}
    assert set(recipes) == set(CATALOG)
    bow = recipes["bow-mlp"]
    assert bow["dataset_kind"] == "classification"
    epochs = bow["hyperparameters"]["properties"]["epochs"]
    declared = get_recipe("bow-mlp").hyperparameters.model_fields["epochs"]
    assert epochs["default"] == declared.default and epochs["minimum"] == 1 and epochs["description"]
    assert (
        recipes["lora"]["dataset_kind"] == "text" and "base_model" in recipes["lora"]["hyperparameters"]["properties"]
    )


def test_a_datasets_first_rows_are_its_cleaned_rows_and_only_its_tenants(server: Server, http: httpx.Client) -> None:
    body = "text,label\n  first text ,a\n,b\nsecond text,b\nthird text,a\n"
    answer = http.post("/v1/datasets", files={"file": ("rows.csv", body.encode())}, data={"name": "rows"})
    assert answer.status_code == 201, answer.text
    dataset = answer.json()["id"]
    rows = http.get(f"/v1/datasets/{dataset}/rows", params={"limit": 2}).json()
    assert rows["data"] == [{"text": "first text", "label": "a"}, {"text": "second text", "label": "b"}]
    assert rows["has_more"] is True
    assert http.get(f"/v1/datasets/{dataset}/rows").json()["has_more"] is False
    assert http.get(f"/v1/datasets/{dataset}/rows", params={"limit": 0}).status_code == 400
    tenant = http.post("/v1/tenants", json={"name": "rows-other-tenant"}).json()
    key = http.post(f"/v1/tenants/{tenant['id']}/keys", json={"scopes": ["read"]}).json()["key"]
    with server.http(key) as other:
        hidden = other.get(f"/v1/datasets/{dataset}/rows")
    assert hidden.status_code == 404 and hidden.json()["error"]["code"] == "dataset_not_found"
