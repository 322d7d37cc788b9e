"""Exceptions that name what went wrong and how to fix it."""

from __future__ import annotations


class RefineDpError(Exception):
    """Base class of the errors this project raises on bad input."""


class AssetError(RefineDpError):
    """A robot asset is missing, corrupt or cannot be fetched."""


class SafetyLimitError(RefineDpError, ValueError):
    """A command or target is not finite or violates a hard limit."""


class SchemaMismatchError(RefineDpError, ValueError):
    """A stored file does not match the expected schema or robot spec."""


class MissingDependencyError(RefineDpError, ImportError):
    """An optional dependency is not installed; the message says which extra provides it."""
