"""The one exception type for bad input.

Scripts catch `UserError`, print its message as a single line and exit with status 2.
The message names the fix ("... pass --preset tiny", "... must be >= 1").
"""


class UserError(Exception):
    """Bad input from the user: a flag, a path, a model that does not fit the role."""


def first_line(exc: BaseException, limit: int | None = 120) -> str:
    """The first line of an exception's message (a library's multi-line error shrunk for a one-line
    UserError), or its type name when it has no message."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__


def unavailable(what: str, exc: BaseException, fix: str) -> UserError:
    """The one-line error for data or a model that cannot be reached here (offline, no cache)."""
    return UserError(f"{what} is not available here ({type(exc).__name__}: {first_line(exc)}); {fix}")
