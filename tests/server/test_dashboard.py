"""The dashboard in a real headless Chromium (issue 15), through Playwright, against a served
SQLite server with a worker and seeded runs: one succeeded (``seed_loop``), one failed
(``flaky``), runs that wait for a human (``review``) and a few chat runs.

Each view is driven as a user would (labels, roles, buttons, or the keyboard alone), its
numbers compared with the API's, its layout checked to fit a 1280x800 window, and a
screenshot of each saved to ``THREADLOOM_TEST_ARTIFACTS`` (default: a pytest temporary
folder). The server captures run logs as ``threadloom dev`` does, so the run detail shows
the real records of ``GET /threads/{tid}/runs/{rid}/logs`` and the real queue wait. Every
test ends by checking that the key never reached a URL, cookies or ``localStorage``.
Skipped when Playwright or Chromium is missing, unless ``THREADLOOM_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from harness import Server, served, unavailable

from threadloom.server.auth import create_key

CHROMIUM = os.environ.get("THREADLOOM_CHROMIUM", "/usr/bin/chromium")
NS = "/v0/namespace/default"


# -- fixtures ----------------------------------------------------------------------------------


def _wait_run(http: httpx.Client, run_id: str, done: tuple[str, ...]) -> dict[str, Any]:
    """The run item once its status is one of ``done`` (a worker runs it meanwhile)."""
    deadline = time.monotonic() + 30
    while True:
        runs = http.get(f"{NS}/runs", params={"run_id_prefix": run_id}).json()["runs"]
        found = [r for r in runs if r["run_id"] == run_id]
        if found and found[0]["status"] in done:
            return found[0]
        assert time.monotonic() < deadline, f"run {run_id} is still {found}"
        time.sleep(0.1)


def _start(http: httpx.Client, graph: str, payload: dict[str, Any]) -> dict[str, Any]:
    thread = http.post("/threads", json={}).json()["thread_id"]
    answer = http.post(f"/threads/{thread}/runs/wait",
                       json={"assistant_id": graph, "input": payload})
    assert answer.status_code == 200, answer.text
    return _wait_run(http, http.get(f"/threads/{thread}/runs").json()[0]["run_id"],
                     ("SUCCESS", "ERRORED", "INTERRUPTED"))


@pytest.fixture(scope="module")
def seeded() -> Iterator[tuple[Server, dict[str, Any]]]:
    """A server (SQLite, with a worker) and its seeded runs by kind."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        unavailable("playwright is not installed (pip install -e '.[test]')")
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        unavailable(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    with served("sqlite", "tl-dash", factory="_seed_app:create") as server, server.http() as http:
        runs: dict[str, Any] = {
            "succeeded": _start(http, "seed_loop", {"step": 0, "done": False}),
            "failed": _start(http, "flaky", {"input1": "a", "input2": 1}),
            "review": [_start(http, "review", {"draft": f"reply {i}"}) for i in range(4)],
            "chat": [_start(http, "seed_chat", {"messages": [f"hi {i}"]}) for i in range(6)],
        }
        _, runs["viewer_key"] = create_key(server.open_store(), "default", "viewer")
        yield server, runs


@pytest.fixture(scope="module")
def browser(seeded: tuple[Server, dict[str, Any]]) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    executable = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, headless=True)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the screenshots go: ``THREADLOOM_TEST_ARTIFACTS`` or a pytest temporary folder."""
    chosen = os.environ.get("THREADLOOM_TEST_ARTIFACTS")
    folder = Path(chosen) / "dashboard" if chosen else tmp_path_factory.mktemp("dashboard")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class Session:
    """A browser tab on the dashboard, recording every URL it requests."""

    def __init__(self, browser: Any, server: Server, artifacts: Path) -> None:
        self.server = server
        self.artifacts = artifacts
        self.context = browser.new_context(viewport={"width": 1280, "height": 800},
                                           accept_downloads=True)
        self.page = self.context.new_page()
        self.urls: list[str] = []
        self.errors: list[str] = []
        self.page.on("request", lambda request: self.urls.append(request.url))
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.set_default_timeout(15000)

    def sign_in(self, key: str) -> None:
        self.page.goto(self.server.url + "/")  # redirected to /dashboard
        assert self.page.url == self.server.url + "/dashboard"
        self.page.get_by_label("API key").fill(key)
        self.page.get_by_role("button", name="Sign in").click()
        self.page.get_by_role("tab", name="Runs").wait_for()

    def tab(self, name: str) -> None:
        self.page.get_by_role("tab", name=name, exact=True).click()

    def shot(self, name: str) -> None:
        """Save a screenshot of the page, which must fit the window's width."""
        _page_has_no_sideways_scroll(self.page)
        self.page.screenshot(path=str(self.artifacts / f"{name}.png"), full_page=True)

    def check_key_kept(self, key: str) -> None:
        """The key in no URL requested, in no cookie and not in ``localStorage``; only in
        ``sessionStorage``. No script error on the page."""
        assert self.urls and not [u for u in self.urls if key in u]
        assert self.context.cookies() == []
        assert self.page.evaluate("() => window.localStorage.length") == 0
        stored = self.page.evaluate("() => Object.values(window.sessionStorage)")
        assert key in stored
        assert self.errors == []

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def tab(browser: Any, seeded: tuple[Server, dict[str, Any]], artifacts: Path) -> Iterator[Session]:
    session = Session(browser, seeded[0], artifacts)
    try:
        yield session
    finally:
        session.close()


def _all(http: httpx.Client, path: str, field: str, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = http.get(path, params={**params, "limit": 1000,
                                      **({"cursor": cursor} if cursor else {})}).json()
        items += page[field]
        cursor = page["next_cursor"]
        if not cursor:
            return items


_ENDS = ("run succeeded", "run failed", "run interrupted", "run cancelled")


def _logs(http: httpx.Client, run: dict[str, Any]) -> list[dict[str, Any]]:
    """The run's captured log records once every start has its end: the capture writes a
    run's records when it ends, just after its status, so a test reading them at once could
    miss the last ones."""
    path = f"/threads/{run['thread_id']}/runs/{run['run_id']}/logs"
    deadline = time.monotonic() + 30
    while True:
        logs = _all(http, path, "logs")
        engine = [r["message"] for r in logs if r["logger"] == "threadloom.engine._loop"]
        starts = sum(m.startswith("run started") for m in engine)
        if starts and starts == sum(m.startswith(_ENDS) for m in engine):
            return logs
        assert time.monotonic() < deadline, logs
        time.sleep(0.1)


def _shown_ms(text: str) -> float:
    """The milliseconds of the page's ``ms()``: "12.35 ms", "250 ms" or "1.50 s"."""
    number, unit = text.split()
    return float(number) * (1000 if unit == "s" else 1)


def _close_to(shown: str, value: float) -> bool:
    """``shown`` is ``value`` as ``ms()`` rounds it (2 decimals under 100 ms, none under 1 s,
    2 decimals of seconds above)."""
    step = 0.01 if value < 100 else 1 if value < 1000 else 10
    return abs(_shown_ms(shown) - value) <= step / 2 + 1e-9


def _page_has_no_sideways_scroll(page: Any) -> None:
    """The view fits the 1280-pixel-wide window: nothing to scroll sideways."""
    widths = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
    assert widths[0] <= widths[1] == 1280, widths


# -- login and roles ---------------------------------------------------------------------------


def test_a_wrong_key_is_refused_and_a_viewer_sees_no_operator_buttons(tab, seeded):
    server, runs = seeded
    page = tab.page
    page.goto(server.url + "/dashboard")
    page.get_by_label("API key").fill("tl_not_a_key")
    page.get_by_role("button", name="Sign in").click()
    page.get_by_text("That key is not valid.").wait_for()
    tab.sign_in(runs["viewer_key"])
    page.get_by_text("viewer key").wait_for()
    page.locator("#runs-table tbody tr").first.wait_for()
    assert not page.get_by_role("button", name="Cancel selected").is_visible()
    assert not page.get_by_role("button", name="Retry selected").is_visible()
    tab.tab("Review")
    page.locator(".card.review").first.wait_for()
    for name in ("Resume", "Reject (cancel the run)", "Edit state and continue"):
        # in the page (an operator's view) but hidden: not in the accessibility tree
        assert page.locator(".card.review button", has_text=name).count() >= 1, name
        assert page.get_by_role("button", name=name, exact=True).count() == 0, name
    assert "approve?" in page.locator(".card.review .payload").first.inner_text()  # it reads
    tab.shot("viewer-review")
    tab.check_key_kept(runs["viewer_key"])
    page.get_by_role("button", name="Sign out").click()
    page.get_by_label("API key").wait_for()
    assert page.evaluate("() => window.sessionStorage.length") == 0


def test_an_all_namespace_key_switches_namespaces(tab, seeded):
    server, _ = seeded
    store = server.open_store()
    _, everywhere = create_key(store, "*", "viewer")
    _, elsewhere = create_key(store, "team-b", "operator")
    with server.http(api_key=elsewhere) as http:
        thread = http.post("/threads", json={}).json()["thread_id"]
        http.post(f"/threads/{thread}/runs/wait",
                  json={"assistant_id": "seed_chat", "input": {"messages": ["hello b"]}})
        only = http.get("/v0/namespace/team-b/runs").json()["runs"]
    tab.sign_in(everywhere)
    page = tab.page
    page.locator("#runs-table .run-link").first.wait_for()
    assert page.locator("#runs-table .run-link").count() > 1  # default's runs
    page.get_by_label("Namespace").fill("team-b")
    page.get_by_label("Namespace").press("Enter")
    page.get_by_text("1 runs on page 1").wait_for()
    assert page.locator("#runs-table .run-link").inner_text() == only[0]["run_id"]
    page.locator("#runs-table .run-link").click()  # the run's detail, read in team-b
    page.locator("#run-detail").get_by_role("heading", name="Timeline").wait_for()
    assert page.locator("#run-detail .timeline tbody tr").count() == 1
    tab.check_key_kept(everywhere)


def test_tabs_are_keyboard_navigable(tab, seeded):
    server, _ = seeded
    tab.sign_in(server.api_key)
    page = tab.page
    page.get_by_role("tab", name="Runs").focus()
    page.keyboard.press("ArrowRight")
    assert page.get_by_role("tab", name="Run States").get_attribute("aria-selected") == "true"
    assert page.evaluate("() => document.activeElement.textContent") == "Run States"
    page.keyboard.press("End")
    assert page.get_by_role("tab", name="Review").get_attribute("aria-selected") == "true"
    page.keyboard.press("Home")
    assert page.get_by_role("tab", name="Runs").get_attribute("aria-selected") == "true"
    tab.check_key_kept(server.api_key)


_FOCUSED = """() => { const e = document.activeElement; return {
    id: e.id, cls: String(e.className), role: e.getAttribute("role") || "",
    text: (e.textContent || "").trim().slice(0, 60),
    label: e.getAttribute("aria-label") || e.name || e.id || "",
    visible: !!(e.offsetWidth || e.offsetHeight || e.getClientRects().length),
    outline: getComputedStyle(e).outlineStyle}; }"""


def test_the_runs_view_and_a_run_by_keyboard_only(tab, seeded):
    """Sign in, tab through the Runs view to the first run, open it with Enter and come back
    with Escape: no mouse. Every control on the way is visible and outlined when focused."""
    server, _ = seeded
    page = tab.page
    page.goto(server.url + "/dashboard")
    page.get_by_label("API key").wait_for()
    assert page.evaluate(_FOCUSED)["id"] == "api-key"  # the page starts where the key goes
    page.keyboard.type(server.api_key)
    page.keyboard.press("Enter")
    first = page.locator("#runs-table .run-link").first
    first.wait_for()
    focused = page.evaluate(_FOCUSED)
    assert (focused["role"], focused["text"]) == ("tab", "Runs")  # signed in: on the views
    _page_has_no_sideways_scroll(page)
    seen: list[dict[str, Any]] = []
    for _ in range(100):
        page.keyboard.press("Tab")
        focused = page.evaluate(_FOCUSED)
        assert focused["visible"] and focused["outline"] != "none", repr(focused)
        seen.append(focused)
        if "run-link" in focused["cls"]:
            break
    else:
        raise AssertionError(f"Tab never reached a run: {seen}")
    names = list(dict.fromkeys(f["label"] or f["text"] for f in seen))  # one per control
    assert names[:12] == [  # in reading order; the pager's buttons are disabled on one page
        "panel-runs", "status", "graph", "since", "until", "run_id_prefix", "limit",
        "Apply filters", "auto-refresh", "bulk-cancel", "bulk-retry",
        "Select all runs on this page"], names
    assert seen[-1]["text"] == first.inner_text()  # the first run, after its row's checkbox
    assert seen[-3]["label"] == f"Select run {seen[-1]['text']}"
    page.keyboard.press("Enter")
    detail = page.locator("#run-detail")
    detail.get_by_role("heading", name="Timeline").wait_for()
    assert page.evaluate(_FOCUSED)["id"] == "run-title"  # the opened run has the focus
    _page_has_no_sideways_scroll(page)
    page.keyboard.press("Shift+Tab")
    assert page.evaluate(_FOCUSED)["id"] == "detail-back"
    page.keyboard.press("Tab")
    page.keyboard.press("Escape")  # back to the list
    assert detail.is_hidden()
    focused = page.evaluate(_FOCUSED)
    assert (focused["role"], focused["text"]) == ("tab", "Runs")
    page.locator("#runs-table .run-link").first.wait_for()
    tab.check_key_kept(server.api_key)


# -- Runs --------------------------------------------------------------------------------------


def test_runs_table_filters_pages_and_equals_the_api(tab, seeded):
    server, runs = seeded
    tab.sign_in(server.api_key)
    page = tab.page
    with server.http() as http:
        listed = _all(http, f"{NS}/runs", "runs")
    page.get_by_label("Per page").select_option("10")
    page.get_by_role("button", name="Apply filters").click()
    page.get_by_text("10 runs on page 1").wait_for()
    shown = page.locator("#runs-table .run-link").all_inner_texts()
    assert shown == [r["run_id"] for r in listed[:10]]
    page.get_by_role("button", name="Next page").click()
    page.get_by_text(f"{len(listed) - 10} runs on page 2").wait_for()
    assert page.locator("#runs-table .run-link").all_inner_texts() == [
        r["run_id"] for r in listed[10:20]]
    tab.shot("runs")
    page.get_by_label("Status").select_option("ERRORED")
    page.get_by_role("button", name="Apply filters").click()
    page.get_by_text("1 runs on page 1").wait_for()
    row = page.locator("#runs-table tbody tr")
    assert row.locator(".run-link").inner_text() == runs["failed"]["run_id"]
    assert row.locator(".badge").inner_text() == "ERRORED"
    page.get_by_label("Status").select_option("")
    page.get_by_label("Graph").fill("seed_chat")
    page.get_by_role("button", name="Apply filters").click()
    page.get_by_text(f"{len(runs['chat'])} runs on page 1").wait_for()
    page.get_by_label("Graph").fill("")
    page.get_by_label("Since").fill("2099-01-01T00:00:00")  # the time range: none yet
    page.get_by_role("button", name="Apply filters").click()
    page.get_by_text("0 runs on page 1").wait_for()
    page.get_by_label("Since").fill("")
    page.get_by_label("Until").fill("2099-01-01T00:00:00")
    page.get_by_role("button", name="Apply filters").click()
    page.get_by_text("10 runs on page 1").wait_for()  # all of them, 10 a page
    page.get_by_label("Until").fill("")
    page.get_by_label("Run id prefix").fill(runs["succeeded"]["run_id"][:8])
    page.get_by_role("button", name="Apply filters").click()
    page.get_by_text("1 runs on page 1").wait_for()
    # auto-refresh: a run made meanwhile appears without a click
    page.get_by_label("Run id prefix").fill("")
    page.get_by_label("Graph").fill("seed_chat")
    page.get_by_role("button", name="Apply filters").click()
    page.get_by_text(f"{len(runs['chat'])} runs on page 1").wait_for()
    page.get_by_label("Auto-refresh").check()
    with server.http() as http:
        made = _start(http, "seed_chat", {"messages": ["one more"]})
    page.get_by_role("button", name=made["run_id"]).wait_for()
    page.get_by_label("Auto-refresh").uncheck()
    tab.check_key_kept(server.api_key)


def test_bulk_retry_and_cancel_of_selected_runs(tab, seeded):
    server, runs = seeded
    tab.sign_in(server.api_key)
    page = tab.page
    failed, waiting = runs["failed"]["run_id"], runs["review"][3]["run_id"]
    page.get_by_label("Status").select_option("ERRORED")
    page.get_by_role("button", name="Apply filters").click()
    page.get_by_label(f"Select run {failed}").check()
    page.get_by_role("button", name="Retry selected").click()
    page.get_by_text("Retried 1 of 1 runs.").wait_for()
    page.get_by_label("Status").select_option("INTERRUPTED")
    page.get_by_label("Run id prefix").fill(waiting)
    page.get_by_role("button", name="Apply filters").click()
    page.get_by_label("Select all runs on this page").check()
    page.get_by_role("button", name="Cancel selected").click()
    page.get_by_text("Cancelled 1 of 1 runs.").wait_for()
    with server.http() as http:
        assert _wait_run(http, waiting, ("CANCELLED",))["status"] == "CANCELLED"
        _wait_run(http, failed, ("ERRORED",))  # the node still fails: failed again
        events = http.get(f"{NS}/audit", params={"limit": 1000}).json()["events"]
    assert {(e["action"], e["run_id"]) for e in events} >= {("run.retry", failed),
                                                           ("run.cancel", waiting)}
    tab.check_key_kept(server.api_key)


# -- Run States (seed 001) ---------------------------------------------------------------------


def test_run_states_numbers_equal_the_api(tab, seeded):
    server, runs = seeded
    tab.sign_in(server.api_key)
    page = tab.page
    with server.http() as http:
        states = _all(http, f"{NS}/states/", "states")
        run_id = runs["succeeded"]["run_id"]
        of_run = _all(http, f"{NS}/states/run/{run_id}", "states")
    tab.tab("Run States")
    summary = page.locator("#states-summary")
    summary.get_by_text("Total States").wait_for()

    def stat(label: str) -> int:
        return int(summary.locator(".stat", has_text=label).locator(".n").inner_text())

    assert stat("Total States") == len(states)
    assert stat("Unique Run IDs") == len({s["run_id"] for s in states})
    assert stat("Completed States") == sum(s["status"] == "SUCCESS" for s in states)
    assert summary.inner_text().split() == [  # nothing else in the summary
        str(len(states)), "Total", "States", str(len({s["run_id"] for s in states})), "Unique",
        "Run", "IDs", str(sum(s["status"] == "SUCCESS" for s in states)), "Completed", "States"]
    chooser = page.locator(f'#run-picker button[data-run="{run_id}"]')
    assert chooser.inner_text().endswith(f"{len(of_run)} states")
    chooser.click()
    cards = page.locator("#run-states .card.state")
    cards.first.wait_for()
    assert cards.count() == len(of_run)
    first = cards.first
    for text in ("SUCCESS", "increment", "identifier increment", "Inputs", "Outputs", "Parents"):
        assert text in first.inner_text()
    page.get_by_role("button", name="Refresh").click()
    summary.get_by_text("Total States").wait_for()
    tab.shot("run-states")
    tab.check_key_kept(server.api_key)


# -- Run detail --------------------------------------------------------------------------------


def test_run_detail_timeline_diffs_metrics_logs_and_graph(tab, seeded):
    server, runs = seeded
    tab.sign_in(server.api_key)
    page = tab.page
    run_id = runs["succeeded"]["run_id"]
    with server.http() as http:
        of_run = _all(http, f"{NS}/states/run/{run_id}", "states")
        checkpoints = _all(http, f"{NS}/runs/{run_id}/checkpoints", "checkpoints")
        metrics = http.get(f"{NS}/runs/{run_id}/metrics").json()
        logs = _logs(http, runs["succeeded"])
    page.get_by_role("button", name=run_id).click()
    detail = page.locator("#run-detail")
    detail.get_by_role("heading", name="Timeline").wait_for()
    assert detail.locator(".timeline tbody tr").count() == len(of_run)
    assert detail.locator(".timeline tr.failed").count() == 0
    steps = detail.locator(".card.step")
    assert steps.count() == len(checkpoints)
    # step 2 (after the first increment): "step" 0 -> 1 changed
    second = detail.locator('.card.step[data-step="1"]')
    assert "changed step: 0 \u2192 1" in second.locator(".diff").inner_text()
    assert detail.locator('[data-metric="steps"]').inner_text() == str(metrics["steps"])
    assert detail.locator('[data-metric="executions"]').inner_text() == str(metrics["executions"])
    graph = detail.locator(".graph svg")
    assert graph.locator('[data-node="increment"]').get_attribute("class") == "node visited"
    assert graph.locator('[data-node="__end__"]').get_attribute("class") == "node current"
    # the real stats of a run that went through the queue
    assert metrics["queue_wait_ms"] is not None and metrics["bytes_written"] > 0
    queue_wait = detail.locator('[data-metric="queue_wait_ms"]')
    assert _close_to(queue_wait.inner_text(), metrics["queue_wait_ms"])
    assert detail.locator(".metrics dt", has_text="Queue wait").count() == 1
    assert f"{metrics['bytes_written']:,} B" in \
        detail.locator('[data-metric="bytes_written"]').inner_text()
    shown_wait = detail.get_by_text("Queue wait before the first step:").inner_text()
    assert _close_to(shown_wait.split(": ")[1], metrics["queue_wait_ms"])
    # the real logs, as the server captured them: the engine's and the seed graph's nodes'
    rows = detail.locator("table.logs tbody tr")
    assert rows.count() == len(logs)
    mine = [i for i, r in enumerate(logs) if r["logger"] == "threadloom.examples.loop"]
    assert [(logs[i]["node"], logs[i]["message"]) for i in mine[:2]] == [
        ("increment", "step 0 -> 1"), ("check", "step 1: one more round")]
    first = rows.nth(mine[0]).locator("td").all_inner_texts()
    assert [first[0], first[2], first[3], first[4], first[5], first[6]] == [
        str(logs[mine[0]]["seq"]), "INFO", "increment", "1", "threadloom.examples.loop",
        "step 0 -> 1"]
    assert re.fullmatch(r"\d\d:\d\d:\d\d\.\d{3}", first[1])  # records a millisecond apart
    assert "run succeeded" in rows.last.inner_text()
    detail.screenshot(path=str(tab.artifacts / "run-detail.png"))
    target = os.environ.get("THREADLOOM_DASHBOARD_SCREENSHOT")  # docs/img/run-detail.png
    if target:
        detail.screenshot(path=target)
    assert detail.get_by_role("button", name="Cancel run").count() == 0  # it is over
    assert detail.get_by_role("button", name="Retry run").count() == 0

    page.get_by_role("button", name="Back").click()
    page.get_by_role("button", name=runs["failed"]["run_id"]).click()
    detail.get_by_role("heading", name="Timeline").wait_for()
    failed_rows = detail.locator(".timeline tr.failed")
    assert failed_rows.count() >= 1 and "shaky" in failed_rows.first.inner_text()
    current = graph.locator(".node.current")
    assert current.get_attribute("data-node") == "shaky"
    assert detail.get_by_role("button", name="Retry run").count() == 1
    tab.shot("run-detail-failed")
    tab.check_key_kept(server.api_key)


def test_a_failed_runs_error_log_and_queue_wait(tab, seeded):
    server, runs = seeded
    tab.sign_in(server.api_key)
    page = tab.page
    run = runs["failed"]
    with server.http() as http:
        logs = _logs(http, run)
        metrics = http.get(f"{NS}/runs/{run['run_id']}/metrics").json()
    page.get_by_role("button", name=run["run_id"]).click()
    detail = page.locator("#run-detail")
    shown = detail.get_by_text("Queue wait before the first step:")
    assert _close_to(shown.inner_text().split(": ")[1], metrics["queue_wait_ms"])
    rows = detail.locator("table.logs tbody tr")
    assert rows.count() == len(logs)
    failed = next(i for i, r in enumerate(logs)
                  if r["message"].startswith("node shaky failed on attempt 1"))
    assert logs[failed]["level"] == "ERROR"
    assert rows.nth(failed).get_attribute("class") == "ERROR"
    text = rows.nth(failed).inner_text()
    assert "node shaky failed on attempt 1" in text and "shaky" in text
    assert "ValueError: flaky node failed" in text  # the traceback, under the message
    assert "Traceback (most recent call last)" in text
    tab.shot("run-detail-failed-logs")
    tab.check_key_kept(server.api_key)


def test_a_run_made_outside_the_runtime_has_no_logs_nor_queue_wait(tab, seeded):
    """A run invoked in this process (no capture, not queued): the API has no logs and no
    queue wait for it, and the page says so instead of showing empty tables."""
    server, _ = seeded
    graph = server.graphs()["seed_chat"]
    graph.invoke({"messages": ["outside"]}, {"thread_id": "dash-outside",
                                             "run_id": "dash-outside-run"})
    with server.http() as http:
        assert http.get("/threads/dash-outside/runs/dash-outside-run/logs").json()["logs"] == []
        metrics = http.get(f"{NS}/runs/dash-outside-run/metrics").json()
    assert metrics["queue_wait_ms"] is None
    tab.sign_in(server.api_key)
    page = tab.page
    page.get_by_label("Run id prefix").fill("dash-outside")
    page.get_by_role("button", name="Apply filters").click()
    page.get_by_role("button", name="dash-outside-run").click()
    detail = page.locator("#run-detail")
    detail.get_by_role("heading", name="Logs").wait_for()
    assert detail.get_by_text("No logs", exact=True).count() == 1
    assert detail.get_by_text("Queue wait before the first step").count() == 0
    assert detail.locator('[data-metric="queue_wait_ms"]').inner_text() == "\u2013"
    assert detail.locator('[data-metric="trace_id"]').inner_text() == (
        metrics["trace_id"] or "\u2013")
    tab.check_key_kept(server.api_key)


def test_a_logs_route_failure_is_shown_not_hidden(tab, seeded):
    """The one interception left: a store that fails while the logs are read (a 503 with
    ``store_unavailable``) cannot be produced on demand from a served process, so the
    browser answers it. The page must show the error, not "No logs"."""
    server, runs = seeded
    tab.sign_in(server.api_key)
    page = tab.page
    run = runs["succeeded"]
    page.route(f"**/threads/{run['thread_id']}/runs/{run['run_id']}/logs",
               lambda route: route.fulfill(status=503, json={
                   "code": "store_unavailable", "message": "the store did not answer"}))
    page.get_by_role("button", name=run["run_id"]).click()
    detail = page.locator("#run-detail")
    detail.get_by_text("Logs: the store did not answer").wait_for()
    assert detail.get_by_text("No logs", exact=True).count() == 0
    tab.check_key_kept(server.api_key)


def test_the_state_diff_is_nested(tab, seeded):
    server, _ = seeded
    tab.sign_in(server.api_key)
    changes = tab.page.evaluate("""() => diff(
        {a: {b: [1, 2], keep: true}, gone: 1, same: "x"},
        {a: {b: [1, 3, 4], keep: true}, same: "x", added: {n: null}})""")
    assert changes == [
        {"kind": "changed", "path": "a.b[1]", "before": 2, "after": 3},
        {"kind": "added", "path": "a.b[2]", "after": 4},
        {"kind": "added", "path": "added", "after": {"n": None}},
        {"kind": "removed", "path": "gone", "before": 1},
    ]


# -- Review ------------------------------------------------------------------------------------


def _thread_runs(http: httpx.Client, thread_id: str) -> list[dict[str, Any]]:
    return http.get(f"/threads/{thread_id}/runs").json()


def _settle(http: httpx.Client, thread_id: str, count: int) -> dict[str, Any]:
    """The thread's newest run once the thread has ``count`` runs and that run is done."""
    deadline = time.monotonic() + 30
    while True:
        found = _thread_runs(http, thread_id)
        if len(found) >= count and found[0]["status"] not in ("pending", "running"):
            return found[0]  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, found
        time.sleep(0.1)


def test_a_full_human_review_from_the_inbox_to_a_completed_run(tab, seeded):
    server, runs = seeded
    tab.sign_in(server.api_key)
    page = tab.page
    first, second, third = runs["review"][:3]
    with server.http() as http:
        waiting = _all(http, f"{NS}/runs", "runs", status="INTERRUPTED")
    tab.tab("Review")
    page.get_by_text(f"{len(waiting)} runs wait for a human").wait_for()
    cards = page.locator(".card.review")
    assert cards.count() == len(waiting)
    card = page.locator(f'.card.review[data-run="{first["run_id"]}"]')
    assert '"question": "approve?"' in card.locator(".payload").inner_text()
    assert card.get_by_label("question").input_value() == "approve?"  # the payload's form
    tab.shot("review-inbox")

    # resume with a value: the run goes on and completes, approved
    card.get_by_label("Resume value (JSON)").fill('"yes"')
    card.get_by_role("button", name="Resume", exact=True).click()
    page.get_by_text("Resumed: run").wait_for()
    with server.http() as http:
        done = _settle(http, first["thread_id"], 2)
        assert done["status"] == "success"
        state = http.get(f"/threads/{first['thread_id']}/state").json()
        assert state["values"]["approved"] is True and state["next"] == []
    assert page.locator(f'.card.review[data-run="{first["run_id"]}"]').count() == 0

    # edit the state and continue: the node runs again on the edited draft and asks again
    card = page.locator(f'.card.review[data-run="{second["run_id"]}"]')
    card.get_by_text("Edit the state and continue").click()
    card.get_by_label("State values (JSON)").fill('{"draft": "edited by a human"}')
    card.get_by_role("button", name="Edit state and continue").click()
    page.get_by_text("State updated; run").wait_for()
    with server.http() as http:
        again = _settle(http, second["thread_id"], 2)
        assert again["status"] == "interrupted"
        asked = http.get(f"/threads/{second['thread_id']}/state").json()["interrupts"]
        assert asked[0]["value"]["draft"] == "edited by a human"

    # reject: the run is cancelled and leaves the inbox
    card = page.locator(f'.card.review[data-run="{third["run_id"]}"]')
    card.get_by_role("button", name="Reject (cancel the run)").click()
    page.get_by_text(f"Rejected: run {third['run_id']} cancelled.").wait_for()
    with server.http() as http:
        assert _wait_run(http, third["run_id"], ("CANCELLED",))["status"] == "CANCELLED"
        events = http.get(f"{NS}/audit", params={"limit": 1000}).json()["events"]
    actions = {(e["action"], e["thread_id"] or e["run_id"]) for e in events}
    assert ("run.create", first["thread_id"]) in actions
    assert ("state.update", second["thread_id"]) in actions
    assert ("run.cancel", third["run_id"]) in actions
    tab.shot("review-after")
    tab.check_key_kept(server.api_key)


def test_fork_a_run_from_a_checkpoint_with_edited_state(tab, seeded):
    server, runs = seeded
    tab.sign_in(server.api_key)
    page = tab.page
    run = runs["succeeded"]
    page.get_by_role("button", name=run["run_id"]).click()
    detail = page.locator("#run-detail")
    step = detail.locator('.card.step[data-step="1"]')
    step.get_by_text("Fork from this step").click()
    step.get_by_label("State to fork from step 1").fill('{"step": 10, "done": false}')
    step.get_by_role("button", name="Fork and run").click()
    page.get_by_text("Forked from step 1").wait_for()
    with server.http() as http:
        forked = _settle(http, run["thread_id"], 2)
        assert forked["status"] == "success"
        state = http.get(f"/threads/{run['thread_id']}/state").json()
    # step 1's next node is ``check``: it runs on the edited state, finds 10 >= 3 and ends
    assert state["values"] == {"step": 10, "done": True}
    tab.check_key_kept(server.api_key)


# -- Threads -----------------------------------------------------------------------------------


def test_a_threads_runs_history_and_export(tab, seeded, tmp_path):
    server, runs = seeded
    tab.sign_in(server.api_key)
    page = tab.page
    chat = runs["chat"][0]
    page.get_by_role("button", name=chat["thread_id"]).click()  # the thread column of Runs
    assert page.get_by_role("tab", name="Threads").get_attribute("aria-selected") == "true"
    view = page.locator("#thread-view")
    view.get_by_role("heading", name="Runs (1)").wait_for()
    with server.http() as http:
        history = http.get(f"/threads/{chat['thread_id']}/history", params={"limit": 100}).json()
        exported = http.get(f"/threads/{chat['thread_id']}/export").json()
    title = f"History ({len(history)} checkpoints, newest first)"
    view.get_by_role("heading", name=title).wait_for()
    assert view.locator(".thread-runs .link").inner_text() == chat["run_id"]
    with page.expect_download() as download:
        page.get_by_role("button", name="Export as JSON").click()
    saved = tmp_path / "export.json"
    download.value.save_as(saved)
    import json

    assert json.loads(saved.read_text()) == exported
    assert download.value.suggested_filename == f"thread-{chat['thread_id']}.json"
    tab.shot("threads")
    tab.check_key_kept(server.api_key)
