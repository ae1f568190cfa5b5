"""Errors ds2hub raises for a mistake in what the user asked for, as opposed to a bug."""

from __future__ import annotations


class ConfigError(ValueError):
    """A recipe or command asks for something ds2hub refuses (a setting that cannot hold, data
    that is not there). The `ds2hub` command prints it as one line and exits with status 2."""
