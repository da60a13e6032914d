"""The one exception type meant for users."""

from __future__ import annotations


class UserError(Exception):
    """A mistake of the user's (bad spec, missing file, wrong checkpoint...).

    Carries a one-line message naming the file, field or plugin at fault. The CLI prints it and exits 2;
    it is never shown as a traceback.
    """

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))

    @property
    def message(self) -> str:
        return str(self)
