"""The one exception type users see: the CLI prints it as a single line and exits with 2."""


class ToolkitError(Exception):
    """A user mistake or an unusable input, described in one line.

    The message names the file, key or value at fault and, where it helps, what would be valid.
    """
