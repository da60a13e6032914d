"""The one exception type meant for users, and the one way to put any exception on one line."""

from __future__ import annotations

import contextlib
from typing import Iterator


class UserError(Exception):
    """A mistake of the user's (bad spec, missing file, wrong checkpoint...), located.

    ``source`` is what holds the mistake (a pipeline, registry or checkpoint file, an image; None where nothing
    does), ``field`` the dotted spec path or the flag at fault (None where the source alone says it) and
    ``detail`` what is wrong. ``str(err)`` is the one line ``restore-run`` prints (``restore-run: error: <line>``,
    exit status 2, never a traceback): ``source: field: detail``, empty parts left out.
    """

    def __init__(self, message: object = "", *, source: object = None, field: str | None = None) -> None:
        self.source = None if source in (None, "") else str(source)
        self.field = field or None
        self.detail = " ".join(_unwrap_reraised(str(message)).split())
        super().__init__(str(self))

    def __str__(self) -> str:
        return where(self.source, self.field, self.detail)

    @property
    def message(self) -> str:
        return str(self)

    @classmethod
    def at(cls, source: object, field: str | None, message: object) -> "UserError":
        """The mistake at ``source`` and ``field``: ``raise UserError.at(spec_file, "infer.temperatures", "must be
        >= 0")``.

        ``message`` may be a :class:`UserError` raised deeper (re-raising with the context added): one without a
        source gets ``source``, its field going on after ``field`` (``networks.g`` + ``params.nb``); one that
        already names ``source`` is kept as it is; one in another file (a checkpoint inside a pipeline) becomes
        the detail, whole.
        """
        if not isinstance(message, UserError):
            return cls(message, source=source, field=field)
        if message.source is None:
            return cls(message.detail, source=source, field=".".join(f for f in (field, message.field) if f))
        if message.source == (None if source in (None, "") else str(source)):
            return message
        return cls(str(message), source=source, field=field)

    def about(self, source: object) -> str:
        """The line without ``source`` where that is the source (a report that lists ``source`` already)."""
        return where(None, self.field, self.detail) if self.source == str(source) else str(self)


@contextlib.contextmanager
def located(source: object, field: str | None) -> Iterator[None]:
    """A :class:`UserError` raised inside gets ``source`` and ``field`` (:meth:`UserError.at`): the one way to
    re-raise with context added."""
    try:
        yield
    except UserError as exc:
        raise UserError.at(source, field, exc) from None


COMMAND_LINE = "command line"
"""The source of a one-command run (``restore-run --input ...``): its mistakes name flags, a pipeline's name fields."""


def where(source: object, field: str | None, message: object) -> str:
    """The text of a location: ``source: field: message``, empty parts left out (a :class:`UserError`'s line, a
    warning's)."""
    return ": ".join(str(p) for p in (source, field, message) if p not in (None, ""))


def one_line(exc: BaseException, *, named: bool = False, limit: int = 300) -> str:
    """Any exception on one line, for a report or a wrapping error: its first line that says something (not a
    "For more information" pointer), at most ``limit`` characters; the type's name where the message is empty
    (``named``: always in front)."""
    lines = [" ".join(ln.split()) for ln in str(exc).splitlines()] if not isinstance(exc, UserError) else [str(exc)]
    text = next((ln for ln in lines if ln and not ln.startswith("For more information")), "")
    text = f"{type(exc).__name__}: {text}" if named and text else (text or type(exc).__name__)
    return text if len(text) <= limit else text[: limit - 1] + "…"


class PluginWarning(UserWarning):
    """A plugin or registry setting that was skipped (a failing ``detect``, an unknown name in a registry file).

    ``restore-run`` prints it as one line ``restore-run: warning: <message>``; in Python it is an ordinary warning.
    """


def _unwrap_reraised(text: str) -> str:
    """The original message of a UserError re-raised from another process or thread.

    A DataLoader worker's exception reaches the main process as ``UserError(message="Caught UserError in
    DataLoader worker process 0.\nOriginal Traceback ...\nrestorekit.errors.UserError: <message>")`` (torch's
    ``ExceptionWrapper.reraise``): the user sees ``<message>``, not the worker's traceback."""
    if not text.startswith("Caught ") or "\nOriginal Traceback" not in text:
        return text
    lines = [ln for ln in text.splitlines() if ln.strip()]
    last = lines[-1] if lines else ""
    name, sep, rest = last.partition(": ")
    if sep and name.replace(".", "").replace("_", "").isalnum():
        return rest
    return text
