"""The errors conversion raises: each message names the problem and, where there is one, the fix."""

from matryoshka_llava.errors import UserError


class ConversionError(UserError, ValueError):
    """A checkpoint cannot be converted as asked (a user error: the command line reports it in one line)."""


class VerificationError(ConversionError):
    """The converted model does not reproduce the source model's logits."""
