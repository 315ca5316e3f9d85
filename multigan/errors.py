"""Errors the command line reports as one line, without a traceback."""


class MultiganError(Exception):
    """Base class for every error caused by the user's input or environment."""


class ConfigError(MultiganError, ValueError):
    """A setting has a bad value or a settings file is malformed."""


class DataError(MultiganError):
    """A dataset cannot be found, read or used."""


class CheckpointError(MultiganError):
    """A checkpoint is missing, unreadable or not a multigan checkpoint."""


class TrainingDiverged(MultiganError):
    """Losses or weights stayed non-finite after the restarts the settings allow."""
