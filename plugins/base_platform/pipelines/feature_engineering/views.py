"""Typed feature views (config/features/<name>.yaml), checked against their datasets' contracts at load.

A view names an entity column and a source dataset with its event-time column. Its features are
aggregates of the source's rows over trailing windows ``(t - window, t]``; categories add a
column looked up in a reference dataset (merchant -> category) before aggregating; labels look
forward, ``(t, t + window]``, and exist only once that window has closed.
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from base_platform.catalog.loader import CONFIG_DIR, CatalogError, load_model
from base_platform.pipelines.spec import NAME, Pipeline, duration_seconds, load_pipelines
from base_platform.types import StrictModel

Function = Literal["sum", "count", "mean", "distinct_count"]
NUMERIC = ("int64", "float64")  # and every decimal(p,s)


class ViewSource(StrictModel):
    dataset: str = Field(pattern=NAME, description="a dataset of config/pipelines")
    timestamp: str = Field(pattern=NAME, description="its event-time column")


class Category(StrictModel):
    """A column looked up in a reference dataset, as the reference is when the view materialises."""

    column: str = Field(pattern=NAME, description="the source's column to look up")
    reference: str = Field(pattern=NAME, description="the reference dataset")
    key: str = Field(pattern=NAME, description="the reference's column matching `column`")
    value: str = Field(pattern=NAME, description="the reference's column to add")
    name: str = Field(pattern=NAME, description="the added column's name (null where not found)")


class Aggregation(StrictModel):
    """``<name>_<function>_<window>`` for each function and window, over the rows ``where`` keeps."""

    column: str = Field(pattern=NAME)
    name: str | None = Field(default=None, pattern=NAME, description="default: the column")
    functions: tuple[Function, ...] = Field(min_length=1)
    windows: tuple[str, ...] = Field(min_length=1)
    where: dict[str, tuple[str, ...]] = Field(default={}, description="column -> the values kept")

    @field_validator("windows")
    @classmethod
    def _durations(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for window in value:
            duration_seconds(window)
        return value

    def features(self) -> list[tuple[str, Function, str]]:
        """(feature name, function, window) of every feature this aggregation makes."""
        prefix = self.name or self.column
        return [(f"{prefix}_{f}_{w}", f, w) for w in self.windows for f in self.functions]


class Label(StrictModel):
    """True when a row ``where`` keeps follows within ``window``; null until that window has closed."""

    name: str = Field(pattern=NAME)
    window: str
    where: dict[str, tuple[str, ...]] = Field(min_length=1)

    @field_validator("window")
    @classmethod
    def _duration(cls, value: str) -> str:
        duration_seconds(value)
        return value


class FeatureView(StrictModel):
    name: str = Field(pattern=NAME)
    description: str = ""
    entity: str = Field(pattern=NAME, description="the source's column features are kept per")
    source: ViewSource
    categories: tuple[Category, ...] = ()
    aggregations: tuple[Aggregation, ...] = Field(min_length=1)
    labels: tuple[Label, ...] = ()

    @model_validator(mode="after")
    def _unique_names(self) -> FeatureView:
        names = [*self.feature_names, *(label.name for label in self.labels)]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"feature and label names must be unique: {repeated} repeat")
        return self

    @property
    def feature_names(self) -> list[str]:
        return [name for aggregation in self.aggregations for name, _, _ in aggregation.features()]

    @property
    def lookback_seconds(self) -> int:
        """How far back the longest window reaches: what a point's features can depend on."""
        return max(
            duration_seconds(window) for aggregation in self.aggregations for window in aggregation.windows
        )

    @property
    def lookahead_seconds(self) -> int:
        return max((duration_seconds(label.window) for label in self.labels), default=0)

    @property
    def references(self) -> tuple[str, ...]:
        return tuple(sorted({category.reference for category in self.categories}))

    @property
    def definition(self) -> str:
        """A digest of what the features mean: a change makes the next materialisation a full one."""
        text = self.model_dump_json(include={"entity", "source", "categories", "aggregations", "labels"})
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _check(view: FeatureView, path: Path, pipelines: dict[str, Pipeline]) -> None:
    """Every dataset and column the view names exists, with a type its use needs."""
    source = pipelines.get(view.source.dataset)
    if source is None:
        raise CatalogError(path, "source.dataset", f"unknown dataset {view.source.dataset!r}")
    columns = _Columns(view, source, path)
    if columns.type_of(view.entity, "entity") not in ("string", "int64"):
        raise CatalogError(path, "entity", f"{view.entity!r} must be a string or int64 column")
    if columns.type_of(view.source.timestamp, "source.timestamp") != "timestamp":
        raise CatalogError(path, "source.timestamp", f"{view.source.timestamp!r} must be a timestamp column")
    for index, category in enumerate(view.categories):
        _check_category(category, f"categories[{index}]", columns, pipelines)
    for index, aggregation in enumerate(view.aggregations):
        key = f"aggregations[{index}]"
        kind = columns.type_of(aggregation.column, f"{key}.column")
        numeric = kind in NUMERIC or kind.startswith("decimal(")
        if not numeric and set(aggregation.functions) & {"sum", "mean"}:
            message = f"sum and mean need a number; {aggregation.column} is {kind}"
            raise CatalogError(path, f"{key}.functions", message)
        for column in aggregation.where:
            columns.type_of(column, f"{key}.where.{column}")
    for index, label in enumerate(view.labels):
        for column in label.where:
            columns.type_of(column, f"labels[{index}].where.{column}")


class _Columns:
    """The source's readable columns (not dropped or encrypted at storage) and the categories added."""

    def __init__(self, view: FeatureView, source: Pipeline, path: Path) -> None:
        protected = source.spec.security.columns.items()
        hidden = {name for name, rule in protected if rule.protect in ("drop", "encrypt")}
        self.types = {c.name: c.type for c in source.contract.columns if c.name not in hidden}
        self.hidden, self.dataset, self.path = hidden, view.source.dataset, path

    def type_of(self, name: str, key: str) -> str:
        if name not in self.types:
            why = "dropped or encrypted at storage in" if name in self.hidden else "not a column of"
            raise CatalogError(self.path, key, f"{name!r} is {why} {self.dataset}")
        return self.types[name]


def _check_category(category: Category, key: str, columns: _Columns, pipelines: dict[str, Pipeline]) -> None:
    columns.type_of(category.column, f"{key}.column")
    reference = pipelines.get(category.reference)
    if reference is None:
        raise CatalogError(columns.path, f"{key}.reference", f"unknown dataset {category.reference!r}")
    for field in ("key", "value"):
        if getattr(category, field) not in reference.contract.names:
            raise CatalogError(columns.path, f"{key}.{field}", f"not a column of {category.reference}")
    if category.name in columns.types:
        raise CatalogError(
            columns.path, f"{key}.name", f"{category.name!r} is already a column of the source"
        )
    columns.types[category.name] = "string"


def load_feature_view(path: Path, pipelines: dict[str, Pipeline]) -> FeatureView:
    view = load_model(FeatureView, path)
    if view.name != path.stem:
        raise CatalogError(path, "name", f"must match the file name {path.stem!r}")
    _check(view, path, pipelines)
    return view


@cache
def load_feature_views(config_dir: Path = CONFIG_DIR) -> tuple[FeatureView, ...]:
    """Every view under config/features, sorted by name."""
    pipelines = {pipeline.spec.name: pipeline for pipeline in load_pipelines(config_dir)}
    return tuple(
        load_feature_view(path, pipelines) for path in sorted((config_dir / "features").glob("*.yaml"))
    )


def feature_view_named(name: str) -> FeatureView:
    found = {view.name: view for view in load_feature_views()}
    if name not in found:
        raise KeyError(f"no feature view {name!r} in config/features (there are {sorted(found)})")
    return found[name]
