"""The dashboard's static files (issue 15): served from the package with no key, ``/``
redirecting to them, a strict Content-Security-Policy, and left out of the OpenAPI document.
In-process; the page itself is tested in Chromium by ``test_dashboard.py``."""

from __future__ import annotations

import re
from importlib.resources import files

from fastapi.testclient import TestClient

PAGE_FILES = ("index.html", "app.js", "style.css")


def test_root_redirects_to_the_dashboard(app_client: TestClient) -> None:
    answer = app_client.get("/", follow_redirects=False, headers={"X-API-Key": ""})
    assert answer.status_code == 307
    assert answer.headers["location"] == "/dashboard"


def test_the_page_and_its_files_need_no_key(app_client: TestClient) -> None:
    page = app_client.get("/dashboard", headers={"X-API-Key": ""})
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert '<label for="api-key">API key</label>' in page.text
    for name, kind in (("app.js", "text/javascript"), ("style.css", "text/css")):
        answer = app_client.get(f"/dashboard/{name}", headers={"X-API-Key": ""})
        assert answer.status_code == 200, name
        assert answer.headers["content-type"].startswith(kind)
        assert answer.content == files("threadloom.server").joinpath("dashboard", name).read_bytes()


def test_the_page_runs_only_its_own_script(app_client: TestClient) -> None:
    answer = app_client.get("/dashboard")
    policy = answer.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert "frame-ancestors 'none'" in policy
    assert answer.headers["referrer-policy"] == "no-referrer"
    assert "<script>" not in answer.text  # no inline script for the policy to refuse
    sources = re.findall(r'(?:src|href)="([^"]+)"', answer.text)
    assert sources and all(s.startswith(("/dashboard/", "data:")) for s in sources)  # no CDN


def test_an_unknown_file_is_a_json_404(app_client: TestClient) -> None:
    for path in ("/dashboard/nothing.js", "/dashboard/..%2Fapp.py", "/dashboard/index.htm"):
        answer = app_client.get(path)
        assert answer.status_code == 404, path
        assert answer.json()["code"] == "not_found"


def test_the_files_are_not_in_the_openapi_document(app_client: TestClient) -> None:
    paths = app_client.get("/openapi.json").json()["paths"]
    assert not [p for p in paths if p == "/" or p.startswith("/dashboard")]


def test_the_files_ship_in_the_package() -> None:
    shipped = files("threadloom.server").joinpath("dashboard")
    for name in PAGE_FILES:
        assert shipped.joinpath(name).is_file(), name


def test_the_script_keeps_the_key_out_of_urls_and_storage_that_outlives_the_tab() -> None:
    script = files("threadloom.server").joinpath("dashboard", "app.js").read_text()
    assert "localStorage" not in script and "document.cookie" not in script
    assert "sessionStorage.setItem(KEY" in script
    assert '"X-API-Key"' in script
