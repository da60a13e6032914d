"""``restore-run NAME ...``: subcommands that own their flags.

Each subcommand is a module with ``build_parser(prog: str) -> CommandParser`` and
``run(args: argparse.Namespace, registry: PluginRegistry) -> int``; :data:`SUBCOMMANDS` maps its name to the
module. A flag of another command is then impossible by construction: each parser knows only its own.
``restore-run pipeline.toml`` and the one-command flags (``--input``) stay on the top-level parser.
"""

from __future__ import annotations

import argparse
import difflib
from typing import NoReturn

from ..errors import UserError

SUBCOMMANDS: dict[str, str] = {
    # name -> module (relative to restorekit.commands), imported only when the command runs
    "evaluate": ".evaluate_folders",
    "export": ".export",
}


class CommandParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose mistakes are one line with a did-you-mean, not a usage dump."""

    def error(self, message: str) -> NoReturn:
        # a subcommand ("restore-run evaluate") names itself; the program alone is named by the CLI's own prefix
        raise UserError.at(self.prog if " " in self.prog else None, None, message + suggestion(self, message))


def suggestion(parser: argparse.ArgumentParser, message: str) -> str:
    """`` (did you mean --output?)`` for an unrecognised flag close to a known one."""
    if "unrecognized arguments:" not in message:
        return ""
    known = [s for a in parser._actions for s in a.option_strings]  # argparse offers no public list of flags
    for word in message.split(":", 1)[1].split():
        flag = word.split("=", 1)[0]
        close = difflib.get_close_matches(flag, known, n=1, cutoff=0.6) if flag.startswith("-") else []
        if close:
            return f" (did you mean {close[0]}?)"
    return ""


def find(argv: list[str]) -> str | None:
    """The subcommand named by the first argument, if any."""
    return argv[0] if argv and argv[0] in SUBCOMMANDS else None
