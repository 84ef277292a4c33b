"""The offline store: each view's Iceberg table of features at every source row, kept up by event time.

``features.<name>`` in the datasets' catalog holds, for every row of the source dataset, its key,
entity and event time and the view's features and labels as of that instant. A materialisation
recomputes only the rows from ``since`` on, where ``since`` is the earliest event time the new
source rows could change: their own earliest time, or, for labels, the old watermark less the
longest label window (labels there have just closed, or see new rows). Rows before ``since`` keep
their values, so history is never recomputed; one Iceberg transaction replaces the rest and
records what was read (``base.feature-state``), so a retried run finds it done. A source that lost
rows (a rollback, an erasure), a new reference snapshot or a changed definition recomputes all.

:func:`get_historical_features` answers for any (entity, timestamp) from the same source snapshot:
the features as they were known at that timestamp, never later (see :mod:`features.compute`).

A view whose rows carry a pseudonym (its entity or key an HMAC column of the source) follows
``dataset_erase`` (:func:`erase_subject`): its offline table loses the subject's rows and every
snapshot that held them, as a table made from the dataset does, and the online store its entries.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from base_platform.files import resolve
from base_platform.pipelines.data_storage import tables
from base_platform.pipelines.data_storage.derive_io import files_dataset, snapshot_dataset
from base_platform.pipelines.feature_engineering import compute, online
from base_platform.pipelines.feature_engineering.views import FeatureView, load_feature_views
from base_platform.pipelines.spec import pipeline_named

if TYPE_CHECKING:
    from collections.abc import Sequence

    import pyarrow as pa
    from pyiceberg.table import Table

    from base_platform.pipelines.data_control.erasure import ErasedSubject

FEATURES_NAMESPACE = "features"
STATE = "base.feature-state"
TIMESTAMP_COLUMN = "event_timestamp"  # of the entity rows asked for, as Feast names it


class FeatureError(ValueError):
    """A materialisation or retrieval that cannot be done as asked; retrying does not help."""


@dataclass(frozen=True)
class State:
    """What the offline table was computed from."""

    source_snapshot: int
    references: dict[str, int]
    definition: str
    watermark: str  # the source's newest event time, ISO 8601

    @property
    def watermark_time(self) -> datetime:
        return datetime.fromisoformat(self.watermark)


@dataclass(frozen=True)
class Materialised:
    view: str
    state: State
    since: str | None  # the event time recomputed from; None: everything
    rows: int  # feature rows written
    skipped: bool  # the table already held this state

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def offline_table(view: FeatureView) -> Table | None:
    from pyiceberg.exceptions import NoSuchTableError

    try:
        return tables.catalog().load_table(f"{FEATURES_NAMESPACE}.{view.name}")
    except NoSuchTableError:
        return None


def state_of(table: Table | None) -> State | None:
    text = table.properties.get(STATE) if table is not None else None
    return State(**json.loads(text)) if text else None


def _current_snapshot(name: str) -> tuple[Table, int]:
    table = tables.load(name)
    snapshot = table.current_snapshot() if table is not None else None
    if table is None or snapshot is None:
        raise FeatureError(f"dataset {name} has no published snapshot yet")
    return table, snapshot.snapshot_id


def _source(view: FeatureView, snapshot_id: int | None = None) -> tuple[Table, int]:
    table, current = _current_snapshot(view.source.dataset)
    if snapshot_id is not None and table.snapshot_by_id(snapshot_id) is None:
        raise FeatureError(f"{view.source.dataset} no longer has snapshot {snapshot_id}: materialise again")
    return table, snapshot_id or current


def _connection(view: FeatureView, source: Table, snapshot_id: int, references: dict[str, int]) -> Any:
    """DuckDB with ``events`` (the source snapshot, scanned lazily) and each ``reference_<i>``."""
    connection = compute.connect()
    keys = pipeline_named(view.source.dataset).contract.primary_key
    compute.register_events(view, connection, snapshot_dataset(source, snapshot_id), keys)
    for index, category in enumerate(view.categories):
        reference = tables.load(category.reference)
        assert reference is not None, "references() found it"
        found = snapshot_dataset(reference, references[category.reference]).to_table(
            [category.key, category.value]
        )
        compute.register(connection, f"reference_{index}", found)
    return connection


def _references(view: FeatureView) -> dict[str, int]:
    return {name: _current_snapshot(name)[1] for name in view.references}


def _since(
    view: FeatureView, before: State | None, source: Table, state: State, full_refresh: bool
) -> datetime | None:
    """The earliest event time the new source rows can change; None: recompute everything."""
    import pyarrow.compute as pc

    from base_platform.pipelines.data_storage.snapshot_diff import change

    if (
        full_refresh
        or before is None
        or (before.definition, before.references) != (state.definition, state.references)
    ):
        return None
    changed = change(source, state.source_snapshot, before.source_snapshot)
    if changed.whole:
        return None
    added = files_dataset(source, state.source_snapshot, [task.file.file_path for task in changed.tasks])
    found = pc.min(added.to_table([view.source.timestamp]).column(0)).as_py()
    earliest = found.astimezone(UTC) if found is not None else before.watermark_time
    if not view.labels:
        return earliest
    # labels look ahead: new rows change those a window before them, and the new watermark closes
    # those whose window ended after the old one
    return min(earliest, before.watermark_time) - timedelta(seconds=view.lookahead_seconds)


def materialise(view: FeatureView, *, full_refresh: bool = False) -> Materialised:
    """Bring ``features.<name>`` to the source's current snapshot, recomputing from ``since`` on."""
    source, snapshot_id = _source(view)
    references = _references(view)
    table = offline_table(view)
    before = state_of(table)
    if (
        not full_refresh
        and before is not None
        and (before.source_snapshot, before.references, before.definition)
        == (snapshot_id, references, view.definition)
    ):
        return Materialised(view.name, before, None, 0, skipped=True)
    connection = _connection(view, source, snapshot_id, references)
    watermark = compute.watermark(view, connection)
    if watermark is None:
        raise FeatureError(f"{view.source.dataset} has no rows to compute {view.name} from")
    state = State(snapshot_id, references, view.definition, watermark.isoformat())
    since = _since(view, before, source, state, full_refresh or table is None)
    keys = pipeline_named(view.source.dataset).contract.primary_key
    if since is not None:  # only the rows the recomputed ones look back to, and everything after
        compute.limit_events(view, connection, keys, since - timedelta(seconds=view.lookback_seconds))
    result = compute.at_rows(view, connection, keys, watermark, since)
    _write(view, table, result, since, state)
    return Materialised(
        view.name, state, since.isoformat() if since else None, result.num_rows, skipped=False
    )


def _write(
    view: FeatureView, table: Table | None, result: pa.Table, since: datetime | None, state: State
) -> None:
    """Rows from ``since`` on replaced by ``result`` and the state recorded, in one Iceberg commit."""
    from pyiceberg.expressions import AlwaysTrue, GreaterThanOrEqual
    from pyiceberg.transforms import DayTransform

    if table is None:
        catalog = tables.catalog()
        catalog.create_namespace_if_not_exists(FEATURES_NAMESPACE)
        location = resolve(f"data/features/{view.name}")
        hidden = set(tables.unbounded_columns(pipeline_named(view.source.dataset))) & set(result.column_names)
        table = catalog.create_table(
            f"{FEATURES_NAMESPACE}.{view.name}",
            schema=result.schema,
            location=location,
            # an entity or key that is a pseudonym leaves no bound in the manifests (``tables``)
            properties={f"write.metadata.metrics.column.{name}": "none" for name in sorted(hidden)},
        )
        with table.update_spec() as update:
            update.add_field(view.source.timestamp, DayTransform(), "day")
    which = (
        AlwaysTrue()
        if since is None
        else GreaterThanOrEqual(term=view.source.timestamp, value=since.isoformat())
    )
    with table.transaction() as transaction:
        if table.current_snapshot() is None:
            transaction.append(result)  # a new table: nothing to replace
        else:
            transaction.overwrite(result, overwrite_filter=which)
        transaction.set_properties({STATE: json.dumps(asdict(state), sort_keys=True)})


def read_offline(view: FeatureView) -> pa.Table:
    """The whole offline table, sorted by entity, time and key (what the tests compare)."""
    table = offline_table(view)
    if table is None:
        raise FeatureError(f"{view.name} has not been materialised yet")
    keys = pipeline_named(view.source.dataset).contract.primary_key
    order = [(c, "ascending") for c in (view.entity, view.source.timestamp, *keys)]
    return table.scan().to_arrow().sort_by(order)


def get_historical_features(
    view: FeatureView, entities: pa.Table, timestamp_column: str = TIMESTAMP_COLUMN
) -> pa.Table:
    """``entities`` (an entity column and ``timestamp_column``) with each row's features and labels as
    known at its timestamp, from the source snapshot the offline table was last materialised from."""
    import pyarrow as pa

    state = state_of(offline_table(view))
    if state is None:
        raise FeatureError(f"{view.name} has not been materialised yet")
    for column in (view.entity, timestamp_column):
        if column not in entities.column_names:
            raise FeatureError(
                f"the entity rows need a {column!r} column (they have {entities.column_names})"
            )
    source, snapshot_id = _source(view, state.source_snapshot)
    connection = _connection(view, source, snapshot_id, state.references)
    points = pa.table(
        {
            view.entity: entities.column(view.entity),
            view.source.timestamp: entities.column(timestamp_column).cast(pa.timestamp("us", tz="UTC")),
            compute.POINT_COLUMN: pa.array(range(entities.num_rows), pa.int64()),
        }
    )
    compute.register(connection, "points", points)
    columns = compute.source_columns(view)
    found = compute.at_points(view, connection, columns, state.watermark_time)
    return pa.Table.from_arrays(
        [*entities.columns, *found.drop_columns([compute.POINT_COLUMN]).columns],
        names=[*entities.column_names, *found.drop_columns([compute.POINT_COLUMN]).column_names],
    )


def latest_features(view: FeatureView) -> tuple[State, pa.Table]:
    """Each entity's features at the watermark of the last materialisation: the online store's rows."""
    state = state_of(offline_table(view))
    if state is None:
        raise FeatureError(f"{view.name} has not been materialised yet")
    source, snapshot_id = _source(view, state.source_snapshot)
    connection = _connection(view, source, snapshot_id, state.references)
    return state, compute.latest(view, connection, state.watermark_time)


def publish_online(view: FeatureView, into: online.OnlineStore | None = None) -> dict[str, Any]:
    """The latest values of the last materialisation, replacing the view's online values."""
    state, rows = latest_features(view)
    meta = {"source_snapshot": str(state.source_snapshot), "watermark": state.watermark}
    return {"entities": online.publish(view.name, rows, view.entity, meta, into), **meta}


def served_online(
    view: FeatureView, entities: list[str], into: online.OnlineStore | None = None
) -> dict[str, Any]:
    """The entities' online features, unless the source snapshot they were computed from is still
    in its dataset's table but off ``main``'s history (a rollback left it, its audit discarded
    it): then they are not served, as the datasets API would not serve that snapshot's rows,
    until the view is materialised again. An expired snapshot is no such case: maintenance
    expires old ones, and an erasure expires the ones that held the subject after its follower
    removed the subject from this store, so those features stay served.

    :raises tables.NotServed: the source snapshot may not leave the platform.
    """
    found = online.get_online_features(view.name, entities, into)
    if snapshot := found.get("source_snapshot"):
        table = tables.load(view.source.dataset, within=tables.shared_catalog())
        if table is not None and table.snapshot_by_id(int(snapshot)) is not None:
            tables.served(table, int(snapshot), f"feature view {view.name!r} (materialise it again)")
    return found


def erase_subject(
    subject: ErasedSubject, views: Sequence[FeatureView] | None = None, into: online.OnlineStore | None = None
) -> dict[str, Any]:
    """``dataset_erase``'s follower: out of each view over a table the erasure touched, whose
    offline table keeps one of the subject's HMAC columns, go the subject's rows and the snapshots
    that held them; out of the online store, the subject's entries when the entity is one."""
    from base_platform.pipelines.data_control.erasure import erase_rows

    report: dict[str, Any] = {}
    for view in load_feature_views() if views is None else views:
        if view.source.dataset not in subject.tables:
            continue
        table = offline_table(view)
        if table is not None and set(subject.digests) & set(table.schema().column_names):
            report[view.name] = erase_rows(table, subject.digests, subject.request)
        if view.entity in subject.digests:
            entities = [online.entity_text(digest) for digest in subject.digests[view.entity]]
            removed = (into or online.store()).delete(view.name, entities)
            report.setdefault(view.name, {})["online_entries_removed"] = removed
    return report
