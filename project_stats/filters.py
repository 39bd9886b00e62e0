"""django-filter FilterSets of the list endpoints; invalid filters are 400s."""

from __future__ import annotations

from typing import Any

import django_filters
from django import forms
from django.db.models import F, Q, QuerySet
from django_filters.rest_framework import DjangoFilterBackend
from rest_framework.request import Request
from rest_framework.views import APIView

from .constants import MAX_ID, MAX_ID_DIGITS
from .models import Project
from .serializers import InvalidQuery
from .sqllists import AnyOf


class MultipleValueField(forms.Field):
    """Every value of a repeated query parameter, each cleaned by ``item``; blanks dropped."""

    widget = forms.SelectMultiple  # reads all values with QueryDict.getlist

    def __init__(self, *, item: forms.Field, **kwargs: Any) -> None:
        self.item = item
        super().__init__(**kwargs)

    def to_python(self, value: Any) -> list[Any]:
        if not value:
            return []
        values = value if isinstance(value, list | tuple) else [value]
        return [self.item.clean(v) for v in values if v not in ("", None)]


class MultipleValueFilter(django_filters.Filter):
    """``?name=a&name=b``: rows whose field is any of the values."""

    field_class = MultipleValueField

    def filter(self, qs: QuerySet[Any], value: list[Any]) -> QuerySet[Any]:
        if not value:
            return qs
        # One parameter however many values (see ``sqllists``).
        return qs.filter(AnyOf(F(self.field_name), value))


class ProjectFilter(django_filters.FilterSet):
    """``query``: substring of slug or name; ``slug``: exact, repeatable."""

    query = django_filters.CharFilter(method="filter_query", max_length=200)
    slug = MultipleValueFilter(field_name="slug", item=forms.CharField(max_length=50))

    class Meta:
        model = Project
        fields = ["query", "slug"]

    def filter_query(self, queryset: QuerySet[Project], name: str, value: str) -> QuerySet[Project]:
        return queryset.filter(Q(slug__icontains=value) | Q(name__icontains=value))


class IdField(forms.IntegerField):
    """A primary key: 1 to ``MAX_ID``, at most ``MAX_ID_DIGITS`` digits.

    Longer text is invalid before ``int()`` reads it (Python refuses more than
    4,300 digits with a ValueError).
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(min_value=1, max_value=MAX_ID, **kwargs)

    def to_python(self, value: Any) -> int | None:
        if isinstance(value, str) and len(value.strip()) > MAX_ID_DIGITS:
            raise forms.ValidationError(self.error_messages["invalid"], code="invalid")
        return super().to_python(value)


class ProjectIdFilter(django_filters.FilterSet):
    """``projectID``: repeatable project primary keys (others are simply not matched)."""

    projectID = MultipleValueFilter(  # noqa: N815 - Sentry's parameter name
        field_name="pk", item=IdField()
    )

    class Meta:
        model = Project
        fields = ["projectID"]


def filter_or_400(filterset: django_filters.FilterSet) -> QuerySet[Any]:
    """The filtered queryset, or ``InvalidQuery`` naming the first bad parameter."""
    if not filterset.is_valid():
        name, messages = next(iter(filterset.errors.items()))
        raise InvalidQuery(f"Invalid {name}: {' '.join(str(m) for m in messages)}")
    return filterset.qs


class FilterBackend(DjangoFilterBackend):
    """``DjangoFilterBackend`` whose errors are ``{"detail": "..."}`` 400s."""

    def filter_queryset(
        self, request: Request, queryset: QuerySet[Any], view: APIView
    ) -> QuerySet[Any]:
        filterset = self.get_filterset(request, queryset, view)
        if filterset is None:
            return queryset
        return filter_or_400(filterset)
