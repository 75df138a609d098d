"""The base of every error that is the user's to fix (a bad argument, file or checkpoint): the command line prints
these as one `error:` line instead of a traceback."""


class UserError(Exception):
    """A problem with what the user gave, named in the message together with the fix."""
