"""Errors of the dataset layer: each names the file, what is wrong and how to fix it."""

from __future__ import annotations

from robot_io.errors import RefineDpError, SchemaMismatchError


class DatasetError(RefineDpError, ValueError):
    """A dataset folder or file is missing, malformed or used the wrong way."""


class CorruptEpisodeError(DatasetError):
    """An episode file cannot be read back (truncated, damaged or inconsistent)."""


__all__ = ["CorruptEpisodeError", "DatasetError", "SchemaMismatchError"]
