"""The one exception type for mistakes a user can make; the CLI prints its message alone."""


class LabError(Exception):
    """A user-facing error: the message is one sentence that names the fix."""
