"""The exception types users see: the CLI prints them as a single line and exits non-zero."""


class ToolkitError(Exception):
    """A user mistake or an unusable input, described in one line (exit code 2).

    The message names the file, key or value at fault and, where it helps, what would be valid.
    """

    exit_code = 2


class Interrupted(ToolkitError):
    """The user pressed Ctrl-C; a checkpoint was saved first (exit code 130, as for SIGINT)."""

    exit_code = 130


class NonFiniteLoss(ToolkitError):
    """The loss became NaN or infinite; the last good checkpoint is kept (exit code 3)."""

    exit_code = 3
