"""WebUI prompt language: parsing, scheduling, composing and encoding."""
