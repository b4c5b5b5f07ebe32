"""Errors raised when a keyframe map cannot be used; all are ValueErrors so the CLI prints them cleanly."""


class MapError(ValueError):
    """A keyframe map directory cannot be loaded or written."""


class MapFormatError(MapError):
    """The map is corrupt, partial, or in a format version this code does not read."""


class MapMismatchError(MapError):
    """The map was built with another model (fingerprint or descriptor dimension differ)."""
