"""Sentry-compatible per-project event count time series for Django."""

__version__ = "0.1.0"
