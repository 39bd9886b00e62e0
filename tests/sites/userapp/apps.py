from django.apps import AppConfig


class SiteUsersConfig(AppConfig):
    name = "tests.sites.userapp"
    label = "site_users"
    default_auto_field = "django.db.models.BigAutoField"
