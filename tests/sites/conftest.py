from __future__ import annotations

from pathlib import Path

from django.conf import settings


def pytest_ignore_collect(collection_path: Path) -> bool | None:
    """Collect ``test_<name>.py`` only under its own ``settings_<name>`` module.

    Run one with ``pytest --ds=tests.sites.settings_<name> tests/sites/test_<name>.py``
    (``make test-sites`` runs them all); under any other settings module it
    is not collected, so a forgotten ``--ds`` collects nothing and pytest fails.
    """
    name = collection_path.name
    if not (name.startswith("test_") and name.endswith(".py")):
        return None
    wanted = f"{__package__}.settings_{name.removeprefix('test_').removesuffix('.py')}"
    current = settings.SETTINGS_MODULE
    return None if current == wanted else True
