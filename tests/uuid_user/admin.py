from django.contrib import admin

from .models import EmailUser


@admin.register(EmailUser)
class EmailUserAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    search_fields = ["email"]
