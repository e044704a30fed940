"""What every story model shares: the strict base (unknown keys are errors) and the seed range."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

# WebUI's seeds are drawn from [0, 4294967294]; -1 there means "random", which a comic cannot use.
MAX_SEED = 4294967294


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
