"""Pure reads of an Application's JSON: its rollback pin, and where its spec differs from ours.

Nothing here talks to Argo CD or imports Airflow, so the drift comparison can use it alone.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from base_platform.types import JSON

PIN_ANNOTATION = "platform.base/pinned-by-rollback"
"""Set on an Application by a rollback: when, to which history entry and revision. Drift leaves
a pinned app alone; only a deploy of that app (whose upsert replaces the annotations) clears it."""


def pin_annotation(history_id: int, revision: str, now: datetime | None = None) -> str:
    when = (now or datetime.now(UTC)).replace(microsecond=0).isoformat()
    return f"at={when} history={history_id} revision={revision}"


def parse_pin(app: JSON) -> dict[str, str] | None:
    """The rollback pin on an Application, as ``{"at", "history", "revision"}``, or None."""
    raw = ((app.get("metadata") or {}).get("annotations") or {}).get(PIN_ANNOTATION)
    if not raw:
        return None
    return dict(part.split("=", 1) for part in str(raw).split() if "=" in part)


def spec_changes(live: Any, desired: Any, prefix: str = "spec") -> list[str]:
    """Dotted paths where ``desired`` differs from ``live`` (keys only in live are ignored)."""
    if isinstance(live, dict) and isinstance(desired, dict):
        return [
            c for key in sorted(desired) for c in spec_changes(live.get(key), desired[key], f"{prefix}.{key}")
        ]
    return [] if live == desired else [prefix]
