"""The one exception type for bad input.

Scripts catch `UserError`, print its message as a single line and exit with status 2.
The message names the fix ("... pass --preset tiny", "... must be >= 1").
"""


class UserError(Exception):
    """Bad input from the user: a flag, a path, a model that does not fit the role."""
