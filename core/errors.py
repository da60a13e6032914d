"""The one exception type meant for users."""

from __future__ import annotations


class UserError(Exception):
    """A mistake of the user's (bad spec, missing file, wrong checkpoint...).

    Carries a one-line message naming the file, field or plugin at fault. The CLI prints it and exits 2;
    it is never shown as a traceback.
    """

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(_unwrap_reraised(str(message)).split()))

    @property
    def message(self) -> str:
        return str(self)

    @classmethod
    def at(cls, source: object, field: str | None, message: object) -> "UserError":
        """``source: field.path: message`` (empty parts left out): the one format of a user mistake's location.

        ``source`` is the file (pipeline, registry, checkpoint) that holds the mistake; ``field`` the dotted path
        inside it. ``raise UserError.at(spec_file, "infer.temperatures", "must be >= 0")``.
        """
        return cls(where(source, field, message))


COMMAND_LINE = "command line"
"""The source of a one-command run (``restore-run --input ...``): its mistakes name flags, a pipeline's name fields."""


def where(source: object, field: str | None, message: object) -> str:
    """The text of :meth:`UserError.at`: ``source: field: message``, empty parts left out."""
    return ": ".join(str(p) for p in (source, field, message) if p not in (None, ""))


class PluginWarning(UserWarning):
    """A plugin or registry setting that was skipped (a failing ``detect``, an unknown name in a registry file).

    ``restore-run`` prints it as one line ``restore-run: warning: <message>``; in Python it is an ordinary warning.
    """


def _unwrap_reraised(text: str) -> str:
    """The original message of a UserError re-raised from another process or thread.

    A DataLoader worker's exception reaches the main process as ``UserError("Caught UserError in DataLoader
    worker process 0.\nOriginal Traceback ...\nrestorekit.errors.UserError: <message>")`` (torch's
    ``ExceptionWrapper.reraise``): the user sees ``<message>``, not the worker's traceback."""
    if not text.startswith("Caught ") or "\nOriginal Traceback" not in text:
        return text
    lines = [ln for ln in text.splitlines() if ln.strip()]
    last = lines[-1] if lines else ""
    name, sep, rest = last.partition(": ")
    if sep and name.replace(".", "").replace("_", "").isalnum():
        return rest
    return text
