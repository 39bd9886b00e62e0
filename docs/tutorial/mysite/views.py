# mysite/views.py: a view of the site's own that records an event.
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from project_stats import tsdb
from project_stats.models import Project


@csrf_exempt  # called by curl in this tutorial; keep CSRF on in a real form
@require_POST
def signup(request):
    # ... the site's own work ...
    project = Project.objects.get(organization__slug="acme", slug="backend")
    tsdb.incr(project, "received")  # one event, now, in every rollup
    return JsonResponse({"signed_up": True}, status=201)
