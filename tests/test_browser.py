"""End-to-end: a real Chromium against the live demo site.

Needs Debian's Chromium at ``/usr/bin/chromium`` (or ``$CHROMIUM``) and the
``playwright`` package; never a browser download. Skipped with the reason
when either is missing, unless ``REQUIRE_BROWSER=1`` (CI), which fails instead.
Deselect with ``-m "not e2e"``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from django.urls import reverse
from django.utils import timezone

from project_stats import demo

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page
    from pytest_django.live_server_helper import LiveServer

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("demo_site")]

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
PASSWORD = "e2e-password"
API_KWARGS = {
    "organization_id_or_slug": demo.ORGANIZATION_SLUG,
    "project_id_or_slug": "pump-station",
}


def _missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install -e '.[test]')"
    if not os.access(CHROMIUM, os.X_OK):
        return f"no Chromium at {CHROMIUM} (apt-get install chromium; make test does it as root)"
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    missing = _missing()
    if missing:
        if os.environ.get("REQUIRE_BROWSER") == "1":
            pytest.fail(f"browser tests are required (REQUIRE_BROWSER=1) but {missing}")
        pytest.skip(f"browser tests skipped: {missing}")
    from playwright.sync_api import sync_playwright

    with pytest.MonkeyPatch.context() as patch:
        # Playwright's sync API keeps an event loop running in this thread, which
        # makes Django refuse the ORM calls of the test body and fixtures.
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
            yield chromium
            chromium.close()


@pytest.fixture
def page(browser: Browser, live_server: LiveServer) -> Iterator[Page]:
    context = browser.new_context(base_url=live_server.url, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()


@pytest.fixture
def demo_loaded(browser: Browser) -> None:
    # Two days are enough for the 24-hour chart and keep the test quick.
    demo.load(now=timezone.now(), days=2, password=PASSWORD)


def log_in(page: Page) -> None:
    page.goto("/admin/login/?next=/admin/")
    page.fill("#id_username", demo.USERNAME)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url("**/admin/")


def chart_state(page: Page) -> tuple[int, int, list[int]]:
    svg = page.locator("svg.project-stats-chart")
    points = int(svg.get_attribute("data-points") or "-1")
    bars = page.locator("svg.project-stats-chart rect.bar")
    counts = [int(c) for c in bars.evaluate_all("els => els.map(e => e.dataset.count)")]
    return points, bars.count(), counts


def test_root_page_leads_to_the_admin(page: Page) -> None:
    page.goto("/")
    assert page.locator("h1").inner_text() == "django-project-stats"
    page.click("#link-admin")
    page.wait_for_url("**/admin/login/**")
    assert page.locator("#id_username").is_visible()


@pytest.mark.usefixtures("demo_loaded")
def test_project_chart_in_the_admin(page: Page) -> None:
    log_in(page)
    page.click("text=Projects")
    page.click("text=pump-station")
    page.wait_for_url("**/change/")

    points, bars, counts = chart_state(page)
    assert (points, bars) == (24, 24)
    assert all(counts), counts
    title = page.locator("svg.project-stats-chart rect.bar title").first.text_content() or ""
    assert " UTC: " in title
    total = page.locator(".project-stats-total").inner_text()
    assert int(total.replace(",", "")) == sum(counts)
    # Drawn, not only present: the chart takes real space on the page.
    box = page.locator("svg.project-stats-chart").bounding_box()
    assert box is not None and box["width"] > 600 and box["height"] > 150

    page.select_option("#project-stats-resolution", "10s")
    page.click(".project-stats-controls input[type=submit]")
    page.wait_for_url("**resolution=10s**")
    points, bars, _ = chart_state(page)
    assert (points, bars) == (360, 360)

    page.select_option("#project-stats-stat", "rejected")
    page.select_option("#project-stats-resolution", "1d")
    page.click(".project-stats-controls input[type=submit]")
    page.wait_for_url("**resolution=1d**")
    points, bars, counts = chart_state(page)
    assert (points, bars) == (90, 90)
    assert page.locator("svg.project-stats-chart").get_attribute("data-stat") == "rejected"
    # Two days of history: the last buckets have counts, older ones are empty.
    assert counts[-1] > 0 and counts[0] == 0


@pytest.mark.usefixtures("demo_loaded")
def test_browsable_api_after_logging_in(page: Page) -> None:
    log_in(page)
    path = reverse("project_stats:project-stats", kwargs=API_KWARGS, urlconf="config.urls")
    page.goto(path)
    text = page.locator(".response-info pre").inner_text()
    assert "HTTP 200 OK" in text
    points = json.loads(text[text.index("[") :])
    assert len(points) == 24
    assert all(count > 0 for _, count in points)
