"""Erase a data subject (GDPR art. 17) from a dataset and from every table made from it.

The subject is matched exactly, by pseudonym: the HMAC of its canonical form (an e-mail
lower-cased, a phone number's digits: ``protection.canonical``) in each HMAC column, as the
engine stored it. The subject's rows leave:

- the dataset's table, and the tables made from it that hold the pseudonym: its samples and
  splits (``sampling``), and the datasets derived from it (``inputs``, transitively) that keep
  the same HMAC column;
- every snapshot that reaches a file that held the subject (and only those: time travel is
  kept where the subject never was);
- the quarantine, by pseudonym, and by an exact match of a sealed raw record's fields.

The dataset's suppression list (``table_keys.SUPPRESSED``) gains the subject's tokens, which are not
the pseudonym (``hashing.digest_tokens``): ingest drops a row that carries one, so a replay, a
re-sent file or a full refresh never brings the subject back. A publication scrubs its earlier
exports against the same list (``publishing``). The audit names the request, never the subject.

The layers above (the datasets API's page cache, the feature stores) follow through
``followers``: each gets the subject as an :class:`ErasedSubject` (its pseudonyms, never its
value) once the tables are done, and reports what it removed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from base_platform.files import Location, read_file
from base_platform.pipelines.data_control import maintenance
from base_platform.pipelines.data_control.form_params import SPLITS
from base_platform.pipelines.data_control.table_actions import ControlError
from base_platform.pipelines.data_quality import table_keys
from base_platform.pipelines.data_storage import tables
from base_platform.pipelines.spec import Pipeline, load_pipelines

if TYPE_CHECKING:
    from pyiceberg.expressions import BooleanExpression
    from pyiceberg.table import Table

ERASURES_PROPERTY = f"{tables.PREFIX}erasures"
ERASURE = f"{tables.PREFIX}erasure"  # a delete snapshot's property: the request that made it
ENTRIES_KEPT = 50  # the newest erasures the table property keeps (the reports keep all)
CUT_TABLES = ("sample", *SPLITS)  # ``<dataset>__<cut>``, made by ``sampling``


@dataclass(frozen=True)
class ErasedSubject:
    """What a follower of an erasure needs: where the subject was and its pseudonyms, not its value."""

    dataset: str
    request: str
    digests: dict[str, list[bytes]]  # HMAC column -> the subject's pseudonyms in it
    tables: tuple[str, ...]  # the dataset's table and those made from it that exist


Follower = Callable[[ErasedSubject], dict[str, Any]]


def subject_digests(pipeline: Pipeline, subject: str, key: bytes) -> dict[str, list[bytes]]:
    """The subject's pseudonyms in each HMAC column: the HMAC of the column's canonical form of
    it, and of the subject as given (rows stored before the column hashed a canonical form)."""
    import pyarrow as pa

    from base_platform.pipelines.data_security import hashing, protection

    digests: dict[str, list[bytes]] = {}
    for column, rule in pipeline.spec.security.columns.items():
        if rule.protect != "hmac":
            continue
        forms = list(dict.fromkeys([protection.canonical_text(subject, rule.canonical), subject]))
        hashed = hashing.hmac_sha256({"subject": pa.array(forms, pa.string())}, key)["subject"]
        digests[column] = [digest for digest in hashed.to_pylist() if digest is not None]
    return digests


def made_from(pipeline: Pipeline) -> list[str]:
    """The tables made from the dataset: its samples and splits, and the derived datasets that
    read it (and theirs), whatever their columns; :func:`erase` keeps those that hold a column."""
    names = [f"{pipeline.spec.name}__{cut}" for cut in CUT_TABLES]
    frontier, seen = [pipeline.spec.name], {pipeline.spec.name}
    everything = load_pipelines()
    while frontier:
        source = frontier.pop()
        for other in everything:
            if source in other.spec.references and other.spec.name not in seen:
                seen.add(other.spec.name)
                frontier.append(other.spec.name)
                names += [other.spec.name, *(f"{other.spec.name}__{cut}" for cut in CUT_TABLES)]
    return names


def erase(
    pipeline: Pipeline,
    subject: str,
    key: bytes | None,
    *,
    who: str,
    request: str,
    followers: Sequence[Follower] = (),
) -> dict[str, Any]:
    """Erase the subject from the dataset, the tables made from it and the quarantine, then
    let each follower erase its copies (a follower's report goes under its name).

    Safe to repeat: a retry of the request finds nothing left, finishes an expiry a crash (or a
    pipeline's commit racing ours) interrupted, and still reports the rows the request removed,
    which the delete snapshots it tagged record; its quarantine count is that attempt's own.
    """
    from base_platform.pipelines.data_security import hashing
    from base_platform.pipelines.data_storage import quarantine
    from base_platform.pipelines.pipeline_management import breaker

    name = pipeline.spec.name
    report: dict[str, Any] = {
        "dataset": name,
        "request": request,
        "who": who,
        "at": datetime.now(UTC).isoformat(),
    }
    if not any(rule.protect == "hmac" for rule in pipeline.spec.security.columns.values()):
        return report | {"searchable": False, "rows_removed": 0}
    if key is None:
        raise ControlError(f"dataset {name!r} has HMAC columns: erasing needs its key")
    import pyarrow as pa

    digests = subject_digests(pipeline, subject, key)
    report |= {"searchable": True, "hmac_columns": sorted(digests), "rows_removed": 0}
    table = tables.load(name)
    tokens = hashing.digest_tokens(pa.array([d for found in digests.values() for d in found], pa.binary()))
    # first: a run that commits meanwhile drops the subject already
    table_keys.suppress(Location.of(tables.location_of(pipeline, table)), tokens)
    if table is not None:
        if (dropped := breaker.drop_audit(table, f"erasure {request}")) is not None:
            report["audit_dropped"] = dropped  # it may hold the subject: discard it, the run goes again
        report |= erase_rows(table.refresh(), digests, request, pipeline.contract.primary_key)
        entry = {k: report.get(k) for k in ("request", "who", "at", "rows_removed", "snapshot_id")}
        earlier = json.loads(table.refresh().properties.get(ERASURES_PROPERTY, "[]"))
        kept = [e for e in earlier if e["request"] != request]  # a retry's entry replaces its own
        with table.transaction() as tx:
            tx.set_properties({ERASURES_PROPERTY: json.dumps([*kept, entry][-ENTRIES_KEPT:])})
    made, present = {}, [name] if table is not None else []
    for other in made_from(pipeline):
        found = tables.load(other)
        present += [other] if found is not None else []
        if found is not None and set(digests) & set(found.schema().column_names):
            made[other] = erase_rows(found, digests, request, pipeline.contract.primary_key)
    report["tables_made_from_it"] = made
    canonical = {rule.canonical for rule in pipeline.spec.security.columns.values() if rule.protect == "hmac"}
    report |= quarantine.erase_quarantined(
        tables.location_of(pipeline, table),
        digests,
        subject,
        sorted(canonical, key=str),
        key,
        pipeline.spec.security.separators,
    )
    erased = ErasedSubject(name, request, digests, tuple(present))
    for follower in followers:
        report[follower.__name__] = follower(erased)
    return report


def erase_rows(
    table: Table, digests: dict[str, list[bytes]], request: str, key: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Delete the rows holding a pseudonym from ``main``, then expire every other snapshot that
    reaches a file holding one: those the delete replaced, and any other (an audit an erasure
    dropped, a snapshot from before a compaction). Each candidate file is read once. ``key``:
    what a multi-value row is deleted by where the table's own contract does not say."""
    present = [name for name in digests if name in table.schema().column_names]
    if not present or not table.snapshots():
        return {"rows_removed": 0}
    if table.current_snapshot() is not None:
        match = _match(table, digests, key)
        if (
            match is not None
            and table.scan(row_filter=match, selected_fields=(present[0],)).to_arrow().num_rows
        ):
            table.delete(match, snapshot_properties={ERASURE: request})
        table = table.refresh()
    current = table.current_snapshot()
    reach = maintenance.Reach(table)
    now = reach.data_files(current) if current is not None else set()
    others = [s for s in table.snapshots() if current is None or s.snapshot_id != current.snapshot_id]
    held = _files_erased_by(table, request, reach)
    unknown = set().union(*(reach.data_files(s) for s in others)) - now - held
    held |= {file for file in unknown if _file_holds(file, digests)}
    holders = [s.snapshot_id for s in others if reach.data_files(s) & held]
    return {
        "rows_removed": _rows_erased_by(table, request),
        "snapshot_id": current.snapshot_id if current is not None else None,
        **maintenance.expire(table, holders),
    }


def _file_holds(uri: str, digests: dict[str, list[bytes]]) -> bool:
    """Whether a data file has a row with one of the pseudonyms (its HMAC columns read alone)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from base_platform.pipelines.data_security import hashing

    folder, name = uri.rsplit("/", 1)
    location = Location.of(folder)
    with location.fs.open_input_file(location.path(name)) as source:
        present = [c for c in digests if c in pq.read_schema(source).names]
    if not present:
        return False
    rows = read_file(location, name, None, columns=present)
    wanted = {c: pa.array(digests[c], pa.binary(32)) for c in present}
    return any(
        pc.any(pc.is_in(hashing.each_digest(rows.column(c).combine_chunks())[0], value_set=wanted[c])).as_py()
        for c in present
    )


def _match(table: Table, digests: dict[str, list[bytes]], key: tuple[str, ...]) -> BooleanExpression | None:
    """The rows of ``main`` holding a pseudonym: by value in a digest column, and, in a
    multi-value column (a list, which Iceberg cannot filter on), by the keys of the rows that
    hold it (the table's contract names them, else ``key``: a sample's or a split's)."""
    from pyiceberg.expressions import In
    from pyiceberg.types import ListType

    schema = table.schema()
    present = [name for name in digests if name in schema.column_names]
    lists = {name: digests[name] for name in present if isinstance(schema.find_type(name), ListType)}
    terms: list[BooleanExpression] = [
        In(term=n, literals=digests[n]) for n in present if n not in lists and digests[n]
    ]
    terms += _rows_holding(table, lists, key) if lists else []
    return _any_of(terms) if terms else None


def _any_of(terms: list[BooleanExpression]) -> BooleanExpression:
    """``Or`` of the terms as a balanced tree: pyiceberg's visitors recurse once a level, and a
    chain of a subject's 500 documents overflowed Python's stack."""
    from pyiceberg.expressions import Or

    while len(terms) > 1:
        terms = [Or(*terms[i : i + 2]) if i + 1 < len(terms) else terms[i] for i in range(0, len(terms), 2)]
    return terms[0]


def _rows_holding(
    table: Table, digests: dict[str, list[bytes]], key: tuple[str, ...]
) -> list[BooleanExpression]:
    """Each row of ``main`` with a pseudonym in a multi-value column, as an expression on its key."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    from pyiceberg.expressions import And, EqualTo, In

    from base_platform.pipelines.data_security import hashing
    from base_platform.pipelines.spec import Contract

    if table.current_snapshot() is None:
        return []
    if tables.CONTRACT_PROPERTY in table.properties:
        key = Contract.model_validate_json(table.properties[tables.CONTRACT_PROPERTY]).primary_key
    if not key:
        raise ControlError(f"{'.'.join(table.name())}: no key to erase its multi-value rows by")
    rows = table.scan(selected_fields=(*key, *digests)).to_arrow()
    held = np.zeros(rows.num_rows, dtype=bool)
    for name, found in digests.items():
        values, row_of = hashing.each_digest(rows.column(name).combine_chunks())
        hits = pc.is_in(values, value_set=pa.array(found, pa.binary(32))).to_numpy(zero_copy_only=False)
        held[row_of[hits]] = True
    holders = rows.filter(pa.array(held)).select(list(key))
    if not holders.num_rows:
        return []
    if len(key) == 1:
        return [In(term=key[0], literals=holders.column(key[0]).to_pylist())]
    terms: list[BooleanExpression] = []
    for row in holders.to_pylist():
        term: BooleanExpression = EqualTo(term=key[0], value=row[key[0]])
        for column in key[1:]:
            term = And(term, EqualTo(term=column, value=row[column]))
        terms.append(term)
    return terms


def _files_erased_by(table: Table, request: str, reach: maintenance.Reach) -> set[str]:
    """The data files the request's deletes replaced: each held the subject."""
    files: set[str] = set()
    for snapshot in table.snapshots():
        summary = snapshot.summary.additional_properties if snapshot.summary else {}
        parent = table.snapshot_by_id(snapshot.parent_snapshot_id) if snapshot.parent_snapshot_id else None
        if summary.get(ERASURE) == request and parent is not None:
            files |= reach.data_files(parent) - reach.data_files(snapshot)
    return files


def _rows_erased_by(table: Table, request: str) -> int:
    """The rows the delete snapshots of ``request`` removed (a copy-on-write delete also adds back
    the other rows of the files it rewrote)."""
    removed = 0
    for snapshot in table.snapshots():
        summary = snapshot.summary.additional_properties if snapshot.summary else {}
        if summary.get(ERASURE) == request:
            removed += int(summary.get("deleted-records", 0)) - int(summary.get("added-records", 0))
    return removed
