"""User-facing errors: one clear line naming the key, column or path at fault."""


class CurationError(Exception):
    """An error the user can fix (bad config, bad input table, bad path).

    The CLI prints its message as one line and exits non-zero, without a traceback
    unless ``--debug`` is given.
    """


class ConfigError(CurationError):
    """A configuration value is missing or invalid; the message names the dotted key."""


class InputError(CurationError):
    """The input table is missing or malformed; the message names the column or path."""
