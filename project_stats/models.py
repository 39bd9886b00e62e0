"""Organizations, their projects and members, and the stored event counts."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from .constants import MAX_ENVIRONMENT_LENGTH, Stat


class Organization(models.Model):
    slug = models.SlugField(max_length=50, unique=True)
    name = models.CharField(max_length=64)
    date_added = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug


class Project(models.Model):
    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="projects"
    )
    slug = models.SlugField(max_length=50)
    name = models.CharField(max_length=200)
    date_added = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["organization__slug", "slug"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "slug"], name="project_stats_project_org_slug_uniq"
            )
        ]

    def __str__(self) -> str:
        return f"{self.organization.slug}/{self.slug}"


class OrganizationMember(models.Model):
    class Role(models.TextChoices):
        MEMBER = "member", "Member"
        ADMIN = "admin", "Admin"
        OWNER = "owner", "Owner"

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="members")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="project_stats_memberships",
    )
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)
    date_added = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "user"], name="project_stats_member_org_user_uniq"
            )
        ]

    def __str__(self) -> str:
        return f"{self.user_id} in {self.organization_id} ({self.role})"


class EventCount(models.Model):
    """One bucket of one series: written and read only through ``project_stats.tsdb``."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    stat = models.PositiveSmallIntegerField(choices=Stat.choices)
    # "" is the all-environments total.
    environment = models.CharField(max_length=MAX_ENVIRONMENT_LENGTH, blank=True, default="")
    # Bucket width in seconds.
    rollup = models.PositiveIntegerField()
    # Bucket start, UTC, aligned to the rollup.
    timestamp = models.DateTimeField()
    count = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            # Column order serves the range read: equality columns, then the range.
            models.UniqueConstraint(
                fields=["project", "stat", "rollup", "environment", "timestamp"],
                name="project_stats_eventcount_bucket_uniq",
            )
        ]
        indexes = [
            # Pruning deletes by rollup and age across all projects.
            models.Index(fields=["rollup", "timestamp"], name="project_stats_ec_rollup_ts"),
        ]

    def __str__(self) -> str:
        return f"{self.project_id} {self.get_stat_display()} {self.rollup}s {self.timestamp}"
