"""Exceptions scr_ros raises for bad input; each message says what is wrong and where."""


class ScrError(Exception):
    """Base class: an error the user can act on (bad file, bad argument, missing data)."""


class SettingsError(ScrError, ValueError):
    """A part, selector or parameter name is unknown, or one of its settings is of the wrong
    type, out of range or not one of the choices. (A ValueError too, so code that checks
    constructor arguments the usual way catches it.)"""


class DatasetError(ScrError):
    """A dataset folder or one of its files is missing or malformed."""


class MapFileError(ScrError):
    """A map file is missing, corrupt, tampered with, or does not fit the encoder / this version."""


class EncoderError(ScrError):
    """An encoder name is unknown or a weights file does not fit the architecture."""


class MessageError(ScrError):
    """A ROS message, or what it carries (image, camera info, pose), is malformed or cannot be
    used (wrong encoding, size, NaN, an image that does not fit its intrinsics)."""


class MappingCancelled(ScrError):
    """Map building was cancelled through its cancel event."""
