"""Model behaviour beyond fields: slug validation, project renames and moves, redirects."""

from __future__ import annotations

import importlib
import threading
import time
from types import SimpleNamespace

import pytest
from django.apps import apps
from django.core.exceptions import ValidationError
from django.db import connection, connections, transaction

from project_stats.models import Organization, Project, ProjectRedirect

from .factories import OrganizationFactory, ProjectFactory

pytestmark = pytest.mark.django_db


def redirects() -> set[tuple[str, str, int]]:
    """Every redirect as ``(organization slug, old slug, project pk)``."""
    return {
        (r.organization.slug, r.redirect_slug, r.project_id)
        for r in ProjectRedirect.objects.select_related("organization")
    }


def rename(project: Project, slug: str) -> None:
    project.slug = slug
    project.save()


def move(project: Project, organization: Organization) -> None:
    project.organization = organization
    project.save()


def test_a_rename_leaves_a_redirect_in_its_organization() -> None:
    project = ProjectFactory(slug="a")
    rename(project, "b")
    org = project.organization
    assert redirects() == {(org.slug, "a", project.pk)}
    assert ProjectRedirect.objects.target(org.slug, "a") == project
    assert ProjectRedirect.objects.target(org, "a") == project
    assert ProjectRedirect.objects.target(org.pk, "a") == project
    assert ProjectRedirect.objects.target(org.slug, "b") is None
    assert ProjectRedirect.objects.target(OrganizationFactory().slug, "a") is None


def test_a_move_drops_the_redirects_of_the_old_organization() -> None:
    project = ProjectFactory(slug="a")
    old_org, new_org = project.organization, OrganizationFactory()
    rename(project, "b")
    move(project, new_org)
    assert redirects() == set()
    assert ProjectRedirect.objects.target(old_org.slug, "a") is None
    assert ProjectRedirect.objects.target(old_org, "a") is None
    assert ProjectRedirect.objects.target(new_org.slug, "a") is None


def test_a_move_and_a_rename_in_one_save_leave_no_redirect() -> None:
    project = ProjectFactory(slug="a")
    project.organization, project.slug = OrganizationFactory(), "b"
    project.save()
    assert redirects() == set()


def test_renames_after_a_move_redirect_in_the_new_organization() -> None:
    project = ProjectFactory(slug="a")
    new_org = OrganizationFactory()
    move(project, new_org)
    rename(project, "b")
    assert redirects() == {(new_org.slug, "a", project.pk)}
    assert ProjectRedirect.objects.target(new_org.slug, "a") == project


def test_a_moved_in_project_takes_over_a_redirect_of_its_slug() -> None:
    resident = ProjectFactory(slug="a")
    rename(resident, "b")  # the new organization redirects a -> resident
    arriving = ProjectFactory(slug="a")
    move(arriving, resident.organization)
    assert redirects() == set()
    assert ProjectRedirect.objects.target(resident.organization.slug, "a") is None


def test_a_redirect_never_leads_into_another_organization() -> None:
    # A move that bypasses save() (a queryset update) leaves the row behind:
    # the lookup must still not follow it out of the URL's organization.
    project = ProjectFactory(slug="a")
    old_org = project.organization
    rename(project, "b")
    Project.objects.filter(pk=project.pk).update(organization=OrganizationFactory())
    assert ProjectRedirect.objects.target(old_org.slug, "a") is None
    assert ProjectRedirect.objects.target(old_org, "a") is None


def test_the_migration_drops_redirects_into_other_organizations() -> None:
    stay = ProjectFactory(slug="a")
    rename(stay, "b")
    gone = ProjectFactory(slug="c")
    old_org = gone.organization
    rename(gone, "d")
    Project.objects.filter(pk=gone.pk).update(organization=OrganizationFactory())
    migration = importlib.import_module("project_stats.migrations.0004_security")
    editor = SimpleNamespace(connection=connection)
    migration.drop_redirects_into_other_organizations(apps, editor)
    assert redirects() == {(stay.organization.slug, "a", stay.pk)}
    assert old_org.slug not in {org for org, _, _ in redirects()}


def _lock_waiters() -> int:
    """Backends of this test database waiting for a lock."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return int(cursor.fetchone()[0])


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_concurrent_renames_keep_both_old_slugs() -> None:
    project = ProjectFactory(slug="a")
    org = project.organization
    first_saved, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def first() -> None:  # a -> b, committed only when released
        try:
            with transaction.atomic():
                rename(Project.objects.get(pk=project.pk), "b")
                first_saved.set()
                assert release.wait(timeout=60)
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            first_saved.set()
            connections.close_all()

    def second() -> None:  # a -> c (it loaded the project before the first rename)
        try:
            rename(stale, "c")
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    stale = Project.objects.get(pk=project.pk)
    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    threads[0].start()
    assert first_saved.wait(timeout=60)
    threads[1].start()
    # The second rename must be inside its save, waiting for the first's row
    # lock, before the first commits: that is the interleaving that lost a
    # redirect when the old slug was read without a lock.
    deadline = time.monotonic() + 60
    while _lock_waiters() == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    waiting = _lock_waiters()
    release.set()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    assert waiting == 1
    project.refresh_from_db()
    assert project.slug == "c"
    assert redirects() == {(org.slug, "a", project.pk), (org.slug, "b", project.pk)}


# Slugs of digits only read as ids in API paths.


@pytest.mark.parametrize("slug", ["1", "42", "0042", "2024"])
def test_a_slug_of_digits_only_is_invalid(slug: str) -> None:
    organization = Organization(slug=slug, name="Numbers")
    with pytest.raises(ValidationError) as organization_error:
        organization.full_clean()
    assert organization_error.value.error_dict["slug"][0].code == "digits_only"
    project = Project(organization=OrganizationFactory(), slug=slug, name="Numbers")
    with pytest.raises(ValidationError) as project_error:
        project.full_clean()
    assert project_error.value.error_dict["slug"][0].code == "digits_only"
    assert "reads as an id" in project_error.value.messages[0]


@pytest.mark.parametrize("slug", ["1a", "a1", "4-2", "42-", "_42", "pump-station"])
def test_a_slug_with_a_letter_or_a_sign_is_valid(slug: str) -> None:
    organization = Organization(slug=slug, name="Numbers")
    organization.full_clean()
    organization.save()
    Project(organization=organization, slug=slug, name="Numbers").full_clean()
