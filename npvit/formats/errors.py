"""The one error type checkpoint reading raises: what was found, what was expected, what to do.

It subclasses ValueError so callers (and the CLI, which reports ValueErrors) need nothing new.
"""


class CheckpointError(ValueError):
    """A file that is not a checkpoint npvit can read, or one whose contents do not fit together."""
