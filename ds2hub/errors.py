"""Errors ds2hub raises for a mistake in what the user asked for, as opposed to a bug.

The `ds2hub` command prints each of them as one `ds2hub: error: ...` line and exits with status 2.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A recipe or command asks for something ds2hub refuses (a setting that cannot hold, data
    that is not there)."""


class UsageError(Exception):
    """A mistake in the command line or in the files it names (a missing file, a busy port)."""
