"""Helpers for values that may arrive as rendered template strings."""

from __future__ import annotations

from typing import Any

TRUE_WORDS = frozenset({"true", "1", "yes", "on"})
FALSE_WORDS = frozenset({"false", "0", "no", "off", "", "none"})


def as_bool(value: Any) -> bool:
    """``"False"`` from a rendered template must mean False, not a non-empty string."""
    if isinstance(value, str):
        word = value.strip().lower()
        if word not in TRUE_WORDS | FALSE_WORDS:
            raise ValueError(f"not a boolean: {value!r}")
        return word in TRUE_WORDS
    return bool(value)
