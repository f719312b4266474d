"""Errors caused by the user's input: the CLI prints them on one line and exits with code 2."""


class UserError(Exception):
    """Bad input (a file, an option, a checkpoint) that the user can fix; the message names the file."""
