"""feature_engineering's online read: a view's latest features for some entities, for a model server.

Beside the datasets API, with its auth: the caller's Airflow token (401 without one) and the
dataset grants of ``config/roles.yaml``; a role that may read a view's source dataset and its
references may read the view (403 otherwise, and the view is missing from the listing).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query

from base_platform.ui.access import CurrentUser
from base_platform.ui.datasets_api import readable

MAX_ENTITIES = 1000  # a page of a batch scorer; more is an offline job
router = APIRouter(prefix="/api/features")


def _views(user: Any) -> dict[str, Any]:
    from base_platform.pipelines.feature_engineering.views import load_feature_views

    allowed = readable(user)
    return {
        view.name: view
        for view in load_feature_views()
        if all(name in allowed for name in (view.source.dataset, *view.references))
    }


@router.get("")
def views(user: CurrentUser) -> list[dict[str, Any]]:
    return [
        {
            "name": name,
            "description": view.description,
            "entity": view.entity,
            "source": view.source.dataset,
            "features": view.feature_names,
            "labels": [label.name for label in view.labels],
        }
        for name, view in sorted(_views(user).items())
    ]


@router.get("/{name}/online")
def online_features(
    name: str, user: CurrentUser, entity: Annotated[list[str] | None, Query()] = None
) -> dict[str, Any]:
    """``?entity=a&entity=b``: each entity's latest features (null for one the store does not hold)."""
    from base_platform.pipelines.feature_engineering import online
    from base_platform.pipelines.feature_engineering.views import feature_view_named

    try:
        feature_view_named(name)
    except KeyError as exc:
        raise HTTPException(404, f"no feature view {name!r}") from exc
    if name not in _views(user):
        raise HTTPException(403, f"your roles may not read {name!r}")
    if not entity or len(entity) > MAX_ENTITIES:
        raise HTTPException(400, f"give 1 to {MAX_ENTITIES} `entity` parameters")
    return online.get_online_features(name, entity)
