"""feature_engineering's online read: a view's latest features for some entities, for a model server.

Beside the datasets API, with its auth: the caller's Airflow token (401 without one) and the
dataset grants of ``config/roles.yaml``; a role that may read a view's source dataset and its
references may read the view. Any other view is missing from the listing and answers as one that
does not exist (404), so the API tells no one which views exist. A query parameter no route takes
is a 422 that names it, as on the datasets API.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from base_platform.ui.access import NO_PARAMS, CurrentUser, refusals
from base_platform.ui.datasets_api import NAME, NoParams, readable
from base_platform.ui.threads import off_loop

MAX_ENTITIES = 1000  # a page of a batch scorer; more is an offline job
router = APIRouter(prefix="/api/features", responses=refusals(401, 404))


class FeatureViewEntry(BaseModel):
    """One view of the listing."""

    name: str
    description: str
    entity: str
    source: str
    features: list[str]
    labels: list[str]


class OnlineParams(BaseModel):
    """The online route's query parameters: a malformed or unknown one is a 422 that names it."""

    model_config = ConfigDict(extra="forbid")

    entity: list[Annotated[str, Field(min_length=1, max_length=256)]] = Field(
        min_length=1, max_length=MAX_ENTITIES, description="an entity key (repeat: ?entity=a&entity=b)"
    )


def _views(user: Any) -> dict[str, Any]:
    from base_platform.pipelines.feature_engineering.views import load_feature_views

    allowed = readable(user)
    return {
        view.name: view
        for view in load_feature_views()
        if all(name in allowed for name in (view.source.dataset, *view.references))
    }


@router.get("", responses=NO_PARAMS)
@off_loop
def views(user: CurrentUser, params: Annotated[NoParams, Query()]) -> list[FeatureViewEntry]:
    return [
        FeatureViewEntry(
            name=name,
            description=view.description,
            entity=view.entity,
            source=view.source.dataset,
            features=list(view.feature_names),
            labels=[label.name for label in view.labels],
        )
        for name, view in sorted(_views(user).items())
    ]


@router.get("/{name}/online")
@off_loop
def online_features(
    name: Annotated[str, Path(pattern=NAME, max_length=128, description="a view of config/features")],
    user: CurrentUser,
    params: Annotated[OnlineParams, Query()],
) -> dict[str, Any]:
    """``?entity=a&entity=b``: each entity's latest features (null for one the store does not hold),
    while the snapshot they were computed from is on its dataset's main history (else a 404)."""
    from base_platform.pipelines.data_storage.tables import NotServed
    from base_platform.pipelines.feature_engineering import offline

    view = _views(user).get(name)
    if view is None:
        raise HTTPException(404, f"no feature view {name!r} that you may read")
    try:
        return offline.served_online(view, params.entity)
    except NotServed as exc:
        raise HTTPException(404, str(exc)) from exc
