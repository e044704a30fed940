import os
import tempfile

# Nothing may come from a model hub: every model a test uses is built locally.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("STORYBOARD_QUIET", "1")
# File hashes are cached; tests must not read or fill the user's ~/.cache.
os.environ.setdefault("STORYBOARD_CACHE_DIR", tempfile.mkdtemp(prefix="storyboard-test-cache-"))
