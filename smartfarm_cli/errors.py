"""Errors that end a farmctl command with one clear line instead of a traceback."""


class FarmctlError(Exception):
    """Something outside the user's input went wrong (AWS, disk, network): exit code 1."""

    exit_code = 1


class UserError(FarmctlError):
    """The user asked for something that cannot work as given: exit code 2."""

    exit_code = 2
