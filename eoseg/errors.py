"""Errors that reach the user as one clear line instead of a traceback."""


class EosegError(Exception):
    """A user-facing error: bad input, bad config, or an artifact that does not fit.

    The message says what is wrong and, where it helps, what to do about it. Scripts
    print it as a single line and exit non-zero (see :mod:`eoseg.cli`).
    """


class DamagedInputError(EosegError):
    """An input file that cannot be opened or read (corrupt, truncated, a broken link, a name
    GDAL cannot take): a run over many images reports it and labels the others."""
