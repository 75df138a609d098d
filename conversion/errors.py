"""The errors conversion raises: each message names the problem and, where there is one, the fix."""


class ConversionError(Exception):
    """A checkpoint cannot be converted as asked."""


class VerificationError(ConversionError):
    """The converted model does not reproduce the source model's logits."""
