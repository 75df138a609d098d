"""Errors of card rendering and publishing; each message names the problem and the fix."""


class ModelCardError(ValueError):
    """A model card cannot be rendered or is invalid."""


class PushError(RuntimeError):
    """A checkpoint folder cannot be published (invalid folder, no token, Hub unreachable...)."""
