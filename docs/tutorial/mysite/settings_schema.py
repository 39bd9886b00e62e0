# Appended to mysite/settings.py: the OpenAPI schema and Swagger UI
# (pip install drf-spectacular-sidecar): the UI's scripts and styles are
# served from the site's static files, nothing from a CDN.
INSTALLED_APPS += [
    "drf_spectacular",  # the views' templates (without it: TemplateDoesNotExist)
    "drf_spectacular_sidecar",  # Swagger UI's assets
]
REST_FRAMEWORK = {"DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema"}
SPECTACULAR_SETTINGS = {
    "TITLE": "mysite event counts",
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
}
