"""Sphinx configuration: furo, MyST Markdown, nothing fetched from the network."""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE / "_ext")]
# autodoc imports project_stats, and the generated pages read its commands and
# schema: Django is set up with the test settings (no database is touched).
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
import django  # noqa: E402

django.setup()

import generated  # noqa: E402

generated.write_all()

project = "django-project-stats"
copyright = "the django-project-stats authors"  # noqa: A001
author = "the django-project-stats authors"

extensions = ["myst_parser", "sphinx.ext.autodoc"]
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build", "_generated", "_ext", "tutorial/mysite"]
myst_enable_extensions = ["colon_fence", "deflist"]
# Every heading down to ####: links to page.md#anchor are checked by the build.
myst_heading_anchors = 4

html_theme = "furo"
html_title = "django-project-stats"
# furo ships its fonts and scripts: the pages load nothing from a CDN.
html_static_path: list[str] = []

autodoc_member_order = "bysource"
autodoc_typehints = "description"
# No intersphinx (the build fetches nothing): Python objects outside the
# package (datetime, Django's models) cannot be resolved, so nitpicky mode
# checks documents, labels and anchors only.
nitpick_ignore_regex = [(r"py:.*", r"[\s\S]*")]
