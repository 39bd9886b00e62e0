"""Host-site configurations: ``test_<name>.py`` runs under ``settings_<name>.py``.

``make test-sites`` runs each on SQLite and PostgreSQL; the default run
(``tests.settings``) does not collect them.
"""
