"""storyboard: a story file in, a comic out, characters on-model, rendered the way WebUI would."""

__version__ = "0.1.0"
