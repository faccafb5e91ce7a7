"""What every script shares: --config, KEY=VALUE overrides, one-line errors."""

from __future__ import annotations

import argparse
import errno
import functools
import os
import re
import select
import signal
import sys
from pathlib import Path
from typing import Callable, Sequence

from tqdm import tqdm

from eoseg.config import Config, config_names, load_config
from eoseg.errors import EosegError

_OVERRIDE = re.compile(r"^[A-Z][A-Z0-9_]*=")
# file-system refusals a user's paths cause (a read-only or full disk, a file where a folder goes, a name too long):
# one line naming the path, not a traceback
PATH_ERRORS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG, errno.ENOSPC,
               errno.EDQUOT, errno.EEXIST, errno.ENOENT}
NOT_A_TERMINAL_BAR_SECONDS = 30.0  # progress bars redrawn into a log file: every 30 s, not 10 times a second


class Terminated(KeyboardInterrupt):
    """SIGTERM (timeout, a batch scheduler): stops a script as Ctrl-C does, its temporary files removed."""


def _terminated(signum, frame):
    raise Terminated


def _interrupted_while_starting(signum, frame):
    print("interrupted", file=sys.stderr)
    os._exit(130)


def _main_is_a_script() -> bool:
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    return main_file is not None and Path(main_file).resolve().parent == Path(__file__).resolve().parent.parent


if _main_is_a_script():  # Ctrl-C while torch loads, before run() can catch it: one line, not a traceback
    signal.signal(signal.SIGINT, _interrupted_while_starting)

EPILOG = """\
configuration:
  Names come from config.py (and the preset its DATASET names). Override them with
  --config FILE (a Python file assigning some of those names) and with KEY=VALUE
  arguments, e.g. DATASET=vaihingen ITERATIONS=2000 TRAIN_IDS="['1','3']".
  A --config file that names no DATASET applies no preset: config.py's defaults,
  the recipe for your own data (without one, DATASET=sample: the demo's).
  The effective configuration is saved as JSON beside the outputs.
"""


def make_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=description,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="%(prog)s [options] [KEY=VALUE ...]",
        allow_abbrev=False,  # a shortened option would slip past the checks on the options as written
    )
    parser.add_argument("--config", metavar="FILE", help="Python file whose names override config.py")
    return parser


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None,
          norm_to_measure: Callable[[argparse.Namespace], bool] = lambda args: False) -> tuple[argparse.Namespace, Config]:
    """Parse options; arguments shaped KEY=VALUE (upper-case KEY) are config overrides. ``norm_to_measure``: whether
    the options ask for the normalisation to be measured (see :func:`eoseg.config.load_config`)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # the usage line names the script's own arguments (LABELS, FILE ...) once they are all added
    arguments = [action for action in parser._actions if not action.option_strings]
    required = [f"{action.option_strings[-1]} {action.metavar or action.dest.upper()}" for action in parser._actions
                if action.option_strings and action.required]  # else hidden in [options]
    required += ["(" + " | ".join(action.option_strings[-1] for action in group._group_actions) + ")"
                 for group in parser._mutually_exclusive_groups if group.required]
    parser.usage = " ".join(["%(prog)s [options]", *required, *(parser._get_formatter()._format_args(action, action.dest.upper())
                                                                 for action in arguments), "[KEY=VALUE ...]"])
    overrides = [a for a in argv if _OVERRIDE.match(a)]
    rest = [a for a in argv if not _OVERRIDE.match(a)]
    for argument in rest:  # argparse would call it an unrecognized argument
        key, equals, value = argument.partition("=")
        if equals and key.isidentifier() and not key.isupper() and key.upper() in config_names():
            raise EosegError(f"{argument!r}: config names are upper case, as in config.py: {key.upper()}={value}")
    for index, argument in enumerate(argv):  # PATCH_SIZE = 64, PATCH_SIZE =64, PATCH_SIZE= 64: the shell split one
        following = argv[index + 1] if index + 1 < len(argv) else ""
        if argument in config_names() and following.startswith("="):
            parts = argv[index:index + (2 if following != "=" else 3)]
        elif argument.endswith("=") and argument[:-1] in config_names() and following in rest and not arguments \
                and not following.startswith("-") and "=" not in following:  # (a script's own LABELS may follow)
            parts = argv[index:index + 2]
        else:
            continue
        given = " ".join(parts)
        raise EosegError(f"{given!r}: write an override as one argument, without spaces around '=': "
                         f"{argument.rstrip('=')}={''.join(parts)[len(argument.rstrip('=')) + 1:]}")
    if sum(a == "--config" or a.startswith("--config=") for a in rest) > 1:  # argparse would take the last one alone
        raise EosegError("--config is given more than once; give one file (it may import another: "
                         "from base import *)")
    args = parser.parse_args(rest)
    return args, load_config(args.config, overrides, norm_to_measure=norm_to_measure(args))


def _slow_progress_bars() -> None:
    """Redraw progress bars every NOT_A_TERMINAL_BAR_SECONDS, unless TQDM_MININTERVAL says otherwise: tqdm reads
    that variable once, when imported, so the default is set on its class."""
    constructor = tqdm.__dict__["__init__"]
    if "TQDM_MININTERVAL" in os.environ or getattr(constructor, "keywords", {}).get("mininterval"):
        return
    tqdm.__init__ = functools.partialmethod(constructor, mininterval=NOT_A_TERMINAL_BAR_SECONDS)


def run(main: Callable[[Sequence[str] | None], object], argv: Sequence[str] | None = None) -> None:
    """Run a script's ``main``: user errors become one line on stderr and exit status 2; Ctrl-C and SIGTERM
    stop it with its temporary outputs removed; output piped into a program that stops reading ends quietly."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _terminated)
    if not sys.stderr.isatty():
        _slow_progress_bars()
    try:
        main(argv)
        return
    except EosegError as err:
        message, status = f"error: {err}", 2
    except Terminated:
        message, status = "terminated", 143
    except KeyboardInterrupt:
        message, status = "interrupted", 130
    except BrokenPipeError:
        if not _output_reader_gone():
            raise  # another pipe (a worker's, a process group's): a fault, not the reader of the output going away
        # `script | head`: the reader has gone, and so has anything more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
    except OSError as err:
        if err.errno not in PATH_ERRORS or err.filename is None:
            raise
        message, status = f"error: {err.filename}: {err.strerror}", 2
    # printed once the traceback is gone: the progress bars it kept alive have closed their line
    _close_progress_bars()
    print(message, file=sys.stderr)
    sys.exit(status)


def _output_reader_gone() -> bool:
    """Whether stdout is a pipe whose reader has closed it (the system flags its end with an error)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll, or stdout no file
        return False


def _close_progress_bars() -> None:
    """End the line of every bar a failed step left open (objects still referenced, e.g. by a
    data loader), so that the error starts a line of its own."""
    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()
