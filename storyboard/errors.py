"""User-facing errors.

Anything a user can fix (a bad story file, a missing model, a wrong sampler name) raises
StoryboardError with a sentence that says what is wrong and what to do; the CLI prints it without a
traceback. Bugs stay ordinary exceptions so they keep their tracebacks.
"""

from __future__ import annotations


class StoryboardError(Exception):
    """An error caused by user input, with a message fit to print as-is."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(message if hint is None else f"{message}\n  hint: {hint}")


class ModelError(StoryboardError):
    """A model, LoRA, VAE or embedding file is missing, ambiguous, unsafe or incompatible."""
