import os
import tempfile

import pytest

# Nothing may come from a model hub: every model a test uses is built locally.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("STORYBOARD_QUIET", "1")
# File hashes are cached; tests must not read or fill the user's ~/.cache.
os.environ.setdefault("STORYBOARD_CACHE_DIR", tempfile.mkdtemp(prefix="storyboard-test-cache-"))



@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A tiny random-weight SD model laid out as a WebUI root (one per test module: tests add files)."""
    from storyboard.models.tiny import write_tiny_model

    return write_tiny_model(tmp_path_factory.mktemp("webui"), seed=0)


@pytest.fixture(scope="module")
def one_thread():  # type: ignore[no-untyped-def]
    """One torch thread: the tiny model's ops are too small to gain from threads, and on a busy
    shared CPU OpenMP barriers waiting for a descheduled thread make them up to 40x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
