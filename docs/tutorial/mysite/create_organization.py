# Run with: python manage.py shell < create_organization.py
from django.contrib.auth import get_user_model

from project_stats.models import Organization, OrganizationMember, Project

user = get_user_model().objects.create_user("alice")
organization = Organization.objects.create(slug="acme", name="Acme")
project = Project.objects.create(organization=organization, slug="backend", name="Backend")
OrganizationMember.objects.create(organization=organization, user=user)
print(f"{user} is a member of {organization.slug}, which has the project {project.slug}")
