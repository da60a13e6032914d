"""``restore-run NAME ...``: subcommands that own their flags.

Each subcommand is a module with ``build_parser(prog: str) -> CommandParser`` and
``run(args: argparse.Namespace, registry: PluginRegistry) -> int``; :data:`SUBCOMMANDS` maps its name to the
module. A flag of another command is then impossible by construction: each parser knows only its own.
``restore-run pipeline.toml`` and the one-command flags (``--input``) stay on the top-level parser.
"""

from __future__ import annotations

import argparse
import difflib
from typing import Any, NoReturn

from ..errors import UserError

SUBCOMMANDS: dict[str, str] = {
    # name -> module (relative to restorekit.commands), imported only when the command runs
    "evaluate": ".evaluate_folders",
    "export": ".export",
}


class CommandParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose mistakes are one line with a did-you-mean, not a usage dump. ``actions`` lists
    every argument added (to the parser or to its groups), from ``add_argument``'s own return values."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.actions: list[argparse.Action] = []
        super().__init__(*args, **kwargs)

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        action = super().add_argument(*args, **kwargs)
        self.actions.append(action)
        return action

    def add_argument_group(self, *args: Any, **kwargs: Any) -> Any:
        return self._recorded(super().add_argument_group(*args, **kwargs))

    def add_mutually_exclusive_group(self, *args: Any, **kwargs: Any) -> Any:
        return self._recorded(super().add_mutually_exclusive_group(*args, **kwargs))

    def _recorded(self, group: Any) -> Any:
        add = group.add_argument

        def add_argument(*args: Any, **kwargs: Any) -> argparse.Action:
            action = add(*args, **kwargs)
            self.actions.append(action)
            return action

        group.add_argument = add_argument
        return group

    def error(self, message: str) -> NoReturn:
        # a subcommand ("restore-run evaluate") names itself; the program alone is named by the CLI's own prefix
        raise UserError.at(self.prog if " " in self.prog else None, None, message + suggestion(self, message))


def suggestion(parser: argparse.ArgumentParser, message: str) -> str:
    """`` (did you mean --output?)`` for an unrecognised flag close to a known one."""
    if "unrecognized arguments:" not in message:
        return ""
    actions = parser.actions if isinstance(parser, CommandParser) else []
    known = [s for a in actions for s in a.option_strings]
    for word in message.split(":", 1)[1].split():
        flag = word.split("=", 1)[0]
        close = difflib.get_close_matches(flag, known, n=1, cutoff=0.6) if flag.startswith("-") else []
        if close:
            return f" (did you mean {close[0]}?)"
    return ""


def find(argv: list[str]) -> str | None:
    """The subcommand named by the first argument, if any."""
    return argv[0] if argv and argv[0] in SUBCOMMANDS else None
