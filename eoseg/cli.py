"""What every script shares: --config, KEY=VALUE overrides, one-line errors."""

from __future__ import annotations

import argparse
import re
import sys
from typing import Callable, Sequence

from tqdm import tqdm

from eoseg.config import Config, load_config
from eoseg.errors import EosegError

_OVERRIDE = re.compile(r"^[A-Z][A-Z0-9_]*=")

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
    )
    parser.add_argument("--config", metavar="FILE", help="Python file whose names override config.py")
    return parser


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> tuple[argparse.Namespace, Config]:
    """Parse options; arguments shaped KEY=VALUE (upper-case KEY) are config overrides."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # the usage line names the script's own arguments (LABELS, FILE ...) once they are all added
    arguments = [action for action in parser._actions if not action.option_strings]
    parser.usage = " ".join(["%(prog)s [options]", *(parser._get_formatter()._format_args(action, action.dest.upper())
                                                       for action in arguments), "[KEY=VALUE ...]"])
    overrides = [a for a in argv if _OVERRIDE.match(a)]
    rest = [a for a in argv if not _OVERRIDE.match(a)]
    args = parser.parse_args(rest)
    return args, load_config(args.config, overrides)


def run(main: Callable[[Sequence[str] | None], object], argv: Sequence[str] | None = None) -> None:
    """Run a script's ``main``: user errors become one line on stderr and exit status 2."""
    try:
        main(argv)
        return
    except EosegError as err:
        message, status = f"error: {err}", 2
    except KeyboardInterrupt:
        message, status = "interrupted", 130
    # printed once the traceback is gone: the progress bars it kept alive have closed their line
    _close_progress_bars()
    print(message, file=sys.stderr)
    sys.exit(status)


def _close_progress_bars() -> None:
    """End the line of every bar a failed step left open (objects still referenced, e.g. by a
    data loader), so that the error starts a line of its own."""
    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()
