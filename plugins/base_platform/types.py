"""The two shapes every layer shares: a JSON document, and a config model that rejects unknown keys."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

JSON = dict[str, Any]


class StrictModel(BaseModel):
    """A frozen config model: an unknown or misspelt key is an error at load, never ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)
