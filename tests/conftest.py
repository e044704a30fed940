import os

# Nothing may come from a model hub: every model a test uses is built locally.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("STORYBOARD_QUIET", "1")
