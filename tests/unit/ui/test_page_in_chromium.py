"""page.html in headless Chromium, its JSON served by a stub server: the drift tab's field diffs,
the stale mark, and the environment the server chose carried to the next tab."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from base_platform.ui.app import PAGE

pytestmark = pytest.mark.slow

PLATFORM: dict[str, Any] = {
    "environment": "staging",  # the deployment's, as the server chose it
    "environments": ["dev", "staging", "prod"],
    "waves": ["core"],
    "components": [
        {
            "name": "vault",
            "wave": "core",
            "depends_on": [],
            "exists": True,
            "sync": "Synced",
            "health": "Healthy",
            "revision": "abc",
        }
    ],
    "problem": None,
    "read_at": "2026-12-07T10:00:00+00:00",
    "age_seconds": 42.5,
    "stale": True,
    "deploy": None,
    "verdicts": {},
}
DRIFT: dict[str, Any] = {
    "environment": "staging",
    "generated_at": "2026-12-07T02:00:00+00:00",
    "counts": {"out_of_sync": 1},
    "healed": [],
    "findings": [
        {
            "app": "monitoring",
            "kind": "out_of_sync",
            "message": "live resources differ from Git",
            "resources": [
                {
                    "resource": "apps/Deployment monitoring/grafana",
                    "fields": [
                        {"path": "spec.replicas", "live": 5, "target": 2},
                        {
                            "path": "spec.template.metadata.labels",
                            "live": {"tier": "<b>x</b>"},
                            "target": None,
                        },
                    ],
                },
                {"resource": "v1/Secret monitoring/creds", "fields": [], "note": "a Secret: values redacted"},
            ],
        }
    ],
}


@pytest.fixture
def page_server() -> Iterator[tuple[str, list[str]]]:
    asked: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            path = urlsplit(self.path).path
            answers: dict[str, Any] = {
                "/base-platform/api/tabs": {"user": "admin", "platform": True, "datasets": []},
                "/base-platform/api/platform": PLATFORM,
                "/base-platform/api/drift": DRIFT,
            }
            if path == "/base-platform/":
                body, kind = Path(PAGE).read_bytes(), "text/html"
            elif path in answers:
                body, kind = json.dumps(answers[path]).encode(), "application/json"
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/base-platform/", asked
    finally:
        server.shutdown()


def test_the_drift_tab_shows_each_findings_field_diffs_for_the_shown_environment(
    page_server: tuple[str, list[str]],
) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, asked = page_server
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    browser = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        browser.get(url)
        WebDriverWait(browser, 30).until(lambda b: b.find_elements(By.CSS_SELECTOR, ".card"))
        assert "42.5 s old" in browser.find_element(By.ID, "stale").text
        assert "/base-platform/api/platform" in asked  # no environment asked: the server's default
        browser.find_element(By.ID, "tab-drift").click()
        WebDriverWait(browser, 30).until(lambda b: b.find_elements(By.CSS_SELECTOR, "tr.field"))
        rows = [r.text for r in browser.find_elements(By.CSS_SELECTOR, "tr.field")]
        assert rows == [
            "apps/Deployment monitoring/grafana spec.replicas 5 2",
            'apps/Deployment monitoring/grafana spec.template.metadata.labels {"tier":"<b>x</b>"} null',
            "v1/Secret monitoring/creds a Secret: values redacted",
        ]
        assert not browser.find_elements(By.CSS_SELECTOR, "#drift b")  # escaped, not markup
        assert "/base-platform/api/drift?environment=staging" in asked
    finally:
        browser.quit()
