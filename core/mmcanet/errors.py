"""Exception hierarchy of the core library: every error a user can cause derives from MMCANetError."""


class MMCANetError(Exception):
    """Base class: a problem the user can act on; the message says what and where."""


class InputError(MMCANetError):
    """A raster, dataset folder or parameter given by the user is unusable (message names it)."""


class ModelFileError(MMCANetError):
    """A model file is missing, corrupt, truncated or incompatible with this version."""


class ConfigError(MMCANetError):
    """A training/evaluation configuration file has unknown keys or invalid values."""


class CancelledError(MMCANetError):
    """The caller's is_canceled() returned True; partial outputs were removed."""
