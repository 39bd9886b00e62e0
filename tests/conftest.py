from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from django.db import connection
from django.urls import reverse
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

from project_stats.models import ApiToken, Project

from .factories import ApiTokenFactory, OrganizationMemberFactory, ProjectFactory

# No deadline: a 2-core machine running PostgreSQL has slow moments. The
# database fixtures are shared by the examples of a test on purpose (reads, or
# data reset per example). In CI every run tries the same examples.
hypothesis_settings.register_profile(
    "dev",
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
hypothesis_settings.register_profile(
    "ci", hypothesis_settings.get_profile("dev"), derandomize=True, database=None
)
hypothesis_settings.load_profile("ci" if os.environ.get("CI") else "dev")

# A fixed "now" aligned to nothing in particular: 2024-03-05 13:37:42.5 UTC.
NOW = datetime(2024, 3, 5, 13, 37, 42, 500000, tzinfo=UTC)


def is_postgres() -> bool:
    return connection.vendor == "postgresql"


@pytest.fixture
def now() -> datetime:
    return NOW


@pytest.fixture
def project(db: None) -> Project:
    return ProjectFactory()


@pytest.fixture
def other_project(db: None, project: Project) -> Project:
    return ProjectFactory(organization=project.organization)


@pytest.fixture
def member_token(db: None, project: Project) -> ApiToken:
    """A ``project:read`` token of a member of ``project``'s organization."""
    member = OrganizationMemberFactory(organization=project.organization)
    return ApiTokenFactory(user=member.user, scopes=["project:read"])


def access_url(organization_slug: str, project_slug: str) -> str:
    return reverse("test-access-project", args=[organization_slug, project_slug])


def bearer(token: ApiToken | str) -> dict[str, str]:
    """Client keyword arguments sending ``token`` (an ApiToken from the factory, or text)."""
    text = token if isinstance(token, str) else token.plaintext  # type: ignore[attr-defined]
    return {"HTTP_AUTHORIZATION": f"Bearer {text}"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip = pytest.mark.skip(reason="needs PostgreSQL (set TEST_DATABASE_URL)")
    if connection.vendor != "postgresql":
        for item in items:
            if "postgres" in item.keywords:
                item.add_marker(skip)
    skip_server = pytest.mark.skip(reason="needs PostgreSQL or MariaDB (set TEST_DATABASE_URL)")
    if connection.vendor == "sqlite":
        for item in items:
            if "server_db" in item.keywords:
                item.add_marker(skip_server)
    # MariaDB commits DDL at once: a dropped table would stay dropped for the tests after.
    skip_ddl = pytest.mark.skip(reason="needs DDL that rolls back with the test's transaction")
    if not connection.features.can_rollback_ddl:
        for item in items:
            if "transactional_ddl" in item.keywords:
                item.add_marker(skip_ddl)


@pytest.fixture
def demo_site(settings):  # type: ignore[no-untyped-def]
    """The demo site's URLs and templates (``config/``) instead of the test ones."""
    settings.ROOT_URLCONF = "config.urls"
    settings.TEMPLATES = [
        {
            **settings.TEMPLATES[0],
            "DIRS": [Path(__file__).resolve().parent.parent / "config" / "templates"],
        }
    ]
    return settings


@pytest.fixture(scope="session")
def redis_cluster():  # type: ignore[no-untyped-def]
    """A 3-node Redis Cluster on free loopback ports, for the whole session."""
    from .redis_servers import start_cluster

    cluster = start_cluster()
    yield cluster
    cluster.stop()


@pytest.fixture
def redis_server(request):  # type: ignore[no-untyped-def]
    """A Redis of this test's own, to kill and restart: ``aof-always`` unless the
    test parametrizes it indirectly (``rdb``, ``aof-always``, ``aof-everysec``)."""
    from .redis_servers import start_server

    server = start_server(getattr(request, "param", "aof-always"))
    yield server
    server.stop()


@pytest.fixture
def killable_cluster():  # type: ignore[no-untyped-def]
    """A 3-node Redis Cluster of this test's own (``appendfsync always``), so a
    node can be killed without disturbing the session's cluster."""
    from .redis_servers import start_cluster

    cluster = start_cluster(appendfsync="always")
    yield cluster
    cluster.stop()


@pytest.fixture(params=["single", "cluster"])
def buffer(request, settings):  # type: ignore[no-untyped-def]
    """``PROJECT_STATS["BUFFER"]`` on (one Redis, then the cluster); its keys deleted after."""
    from project_stats.tsdb import buffer as buffer_module

    from .redis_servers import SINGLE_URL, buffer_settings, check_single, delete_keys

    if request.param == "single":
        check_single()
        url = SINGLE_URL
    else:
        url = request.getfixturevalue("redis_cluster").url
    config = buffer_settings(request.param, url)
    settings.PROJECT_STATS = {**getattr(settings, "PROJECT_STATS", {}), "BUFFER": config}
    yield config
    buffer_module.crash_hook = None
    delete_keys(config)


@pytest.fixture(autouse=True)
def _suite_buffer(request, settings):  # type: ignore[no-untyped-def]
    """With TEST_BUFFER=single|cluster, every test runs with a buffer of its own."""
    kind = os.environ.get("TEST_BUFFER")
    if not kind or "buffer" in request.fixturenames:
        yield
        return
    from .redis_servers import SINGLE_URL, buffer_settings, check_single, delete_keys

    if kind == "single":
        check_single()
        url = SINGLE_URL
    else:
        url = request.getfixturevalue("redis_cluster").url
    config = buffer_settings(kind, url)
    settings.PROJECT_STATS = {**settings.PROJECT_STATS, "BUFFER": config}
    yield
    delete_keys(config)
