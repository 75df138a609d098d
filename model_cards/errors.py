"""Errors of card rendering and publishing; each message names the problem and the fix."""

from matryoshka_llava.errors import UserError


class ModelCardError(UserError, ValueError):
    """A model card cannot be rendered or is invalid."""


class PushError(UserError, RuntimeError):
    """A checkpoint folder cannot be published (invalid folder, no token, Hub unreachable...)."""
