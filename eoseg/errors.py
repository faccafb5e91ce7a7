"""Errors that reach the user as one clear line instead of a traceback."""

import re

TERMINAL_COLOURS = re.compile(r"\x1b\[[0-9;]*m")  # some libraries colour their messages


def plain_text(message: str) -> str:
    """``message`` without terminal colour codes, which a log file or a one-line error would show as garbage."""
    return TERMINAL_COLOURS.sub("", message)


class EosegError(Exception):
    """A user-facing error: bad input, bad config, or an artifact that does not fit.

    The message says what is wrong and, where it helps, what to do about it. Scripts
    print it as a single line and exit non-zero (see :mod:`eoseg.cli`).
    """


class DamagedInputError(EosegError):
    """An input file that cannot be opened or read (corrupt, truncated, a broken link, a name
    GDAL cannot take): a run over many images reports it and labels the others."""
