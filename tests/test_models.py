from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from project_stats.models import Organization, Project

from .factories import OrganizationFactory

pytestmark = pytest.mark.django_db


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
