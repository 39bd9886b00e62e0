from __future__ import annotations

from datetime import datetime

import pytest
from django.test import Client

from project_stats import demo
from project_stats.models import Project

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("demo_site")]


def test_root_page_says_what_this_is_and_links_the_admin(client: Client) -> None:
    response = client.get("/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "<h1>django-project-stats</h1>" in html
    assert 'href="/admin/"' in html
    assert "Authorization: Bearer $TOKEN" in html
    assert (
        "http://testserver/api/0/projects/the-interstellar-jurisdiction/pump-station/stats/" in html
    )
    # Nothing fetched from elsewhere.
    assert "src=" not in html and 'rel="stylesheet"' not in html


def test_root_page_links_the_demo_project_chart_once_loaded(client: Client, now: datetime) -> None:
    assert "link-chart" not in client.get("/").content.decode()
    demo.load(now=now, days=1)
    project = Project.objects.get(slug="pump-station")
    html = client.get("/").content.decode()
    assert f'href="/admin/project_stats/project/{project.pk}/change/" id="link-chart"' in html


def test_root_page_links_the_api_and_schema(client: Client) -> None:
    html = client.get("/").content.decode()
    assert 'id="link-api"' in html
    assert 'href="/api-auth/login/?next=' in html
    assert 'href="/api/0/schema/swagger/" id="link-schema-ui"' in html
    assert 'href="/api/0/schema/"' in html


def test_the_browsable_api_login_is_mounted(client: Client) -> None:
    assert client.get("/api-auth/login/").status_code == 200


def test_the_admin_is_mounted(client: Client) -> None:
    assert client.get("/admin/").status_code == 302
