"""User-facing errors: the CLI prints their message on one line and exits with code 2."""

from __future__ import annotations


class GwnmoError(Exception):
    """A mistake in the user's input (flags, data, checkpoints) — never a bug in gwnmo-meta."""


class DataError(GwnmoError):
    """Data missing, unreadable or too small for the requested tasks."""


class ConfigError(GwnmoError):
    """Invalid or incompatible options."""


class CheckpointError(GwnmoError):
    """Missing, corrupt or incompatible checkpoint."""
