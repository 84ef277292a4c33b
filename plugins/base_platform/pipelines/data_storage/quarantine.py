"""Read, fix and replay quarantined rows: ``python -m base_platform.pipelines.data_storage.quarantine``.

The quarantine stores protected columns as curated rows do and seals their raw values (see
:func:`base_platform.pipelines.data_security.protection.seal`); unsealing needs the pipeline's secret
from Vault, so only a user whose Vault token may read it can see them.

- ``show --pipeline NAME [--run RUN]``: the quarantined records of a run as CSV, unsealed, with
  ``_reason`` and ``_source``, to stdout or ``--out FILE``.
- ``replay --pipeline NAME --run RUN [--fixed FILE]``: the run's records (or the CSV you fixed
  from ``show``) as a new input file under the pipeline's source, named by its content, so the
  next run processes them once: replaying the same rows again adds nothing.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from base_platform.files import Location, resolve
from base_platform.pipelines.data_security import protection
from base_platform.pipelines.spec import FileSource, Pipeline, load_pipelines

META = ("_raw", "_reason", "_source")


def records(
    pipeline: Pipeline, target_uri: str, key: bytes | None, run: str | None = None
) -> Iterator[dict[str, Any]]:
    """Each quarantined record of ``run`` (default: every run), its raw values unsealed."""
    import pyarrow.dataset as ds

    target = Location.of(target_uri)
    folder = "_quarantine" + (f"/{run}" if run else "")
    if not target.exists(folder):
        return
    names = list(pipeline.contract.names)
    table = ds.dataset(target.path(folder), format="parquet", filesystem=target.fs).to_table()
    if table.num_rows == 0:  # no file left (an erasure emptied them), or only empty ones
        return
    for row in table.sort_by([("_source", "ascending"), ("_record", "ascending")]).to_pylist():
        sealed = protection.unseal(row["_sealed"], key) if row.get("_sealed") and key else {}
        values = {name: sealed[name] if name in sealed else _text(row[name]) for name in [*names, "_raw"]}
        yield values | {"_reason": row["_reason"], "_source": row["_source"]}


def erase_quarantined(
    target_uri: str,
    digests: dict[str, list[bytes]],
    subject: str,
    canonical: list[str | None],
    key: bytes,
    separators: dict[str, str] | None = None,
) -> dict[str, int]:
    """Remove a data subject's quarantined records, for ``dataset_erase``: those whose HMAC column
    holds the subject's pseudonym (``digests``, by column), and those whose sealed raw values
    hold the subject exactly, as it is or in a ``canonical`` form (a line that could not be split
    has no HMAC to match: its fields are compared one by one). Each file is rewritten
    atomically, or deleted when nothing is left.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    from pyarrow.fs import FileSelector, FileType

    target = Location.of(target_uri)
    found = target.fs.get_file_info(
        FileSelector(target.path("_quarantine"), recursive=True, allow_not_found=True)
    )
    forms = {protection.canonical_text(subject, kind) for kind in [None, *canonical]} - {""}
    rows = files = 0
    for info in found:
        if info.type != FileType.File or not info.path.endswith(".parquet"):
            continue
        table = pq.read_table(info.path, filesystem=target.fs)
        hit = pa.array([False] * table.num_rows)
        for name, found in digests.items():
            if name in table.column_names:
                matched = pc.is_in(table.column(name), value_set=pa.array(found, pa.binary()))
                hit = pc.or_(hit, pc.fill_null(matched, False))
        sealed = table.column("_sealed").to_pylist()
        held = [
            bool(s) and _holds(sealed_values(protection.unseal(s, key), separators or {}), forms, canonical)
            for s in sealed
        ]
        hit = pc.or_(hit, pa.array(held))
        matched = pc.sum(hit).as_py() or 0
        if not matched:
            continue
        kept = table.filter(pc.invert(hit))
        relative = info.path[len(target.path()) + 1 :]
        if kept.num_rows:
            buffer = pa.BufferOutputStream()
            pq.write_table(kept, buffer, compression="zstd")
            target.write_atomically(buffer.getvalue().to_pybytes(), relative)
        else:
            target.fs.delete_file(info.path)
        rows, files = rows + matched, files + 1
    return {"quarantine_rows_removed": rows, "quarantine_files_rewritten": files}


def sealed_values(record: dict[str, str | None], separators: dict[str, str]) -> list[str]:
    """The values a sealed record holds: its columns' (and each value of a multi-value column,
    split on its ``separator``) and the fields of its raw line."""
    values = [value for name, value in record.items() if name != "_raw" and value is not None]
    values += [part for name, sep in separators.items() for part in (record.get(name) or "").split(sep)]
    return values + raw_fields(record.get("_raw") or "")


def _holds(values: list[str], forms: set[str], canonical: list[str | None]) -> bool:
    """A value equal to the subject, as it is or in a canonical form: a column's value, or a
    field of an unsplit raw line (CSV or a JSON object). Never a substring: another person's
    address that contains this one is not theirs."""
    kinds = [None, *canonical]
    return any(protection.canonical_text(value, kind) in forms for value in values for kind in kinds)


def raw_fields(raw: str) -> list[str]:
    """The values a raw line holds: every scalar of every JSON value on it (nested ones too, and
    a second object after the first), else its CSV fields; a line neither can read gives its
    tokens between JSON and CSV punctuation, so a truncated record is still searched."""
    import json
    import re

    decoder, found, position = json.JSONDecoder(), [], 0
    text = raw.strip()
    try:
        while position < len(text):
            value, position = decoder.raw_decode(text, position)
            found += _scalars(value)
            while position < len(text) and text[position].isspace():
                position += 1
        return found
    except ValueError:
        pass
    fields = [field for row in csv.reader(io.StringIO(raw)) for field in row]
    return fields + [token for token in re.split(r"""[\s,;:"'{}\[\]]+""", raw) if token]


def _scalars(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [text for item in value.values() for text in _scalars(item)]
    if isinstance(value, list):
        return [text for item in value for text in _scalars(item)]
    return [] if value is None else [str(value)]


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("utf-8", "surrogateescape")


def show_csv(pipeline: Pipeline, rows: list[dict[str, Any]]) -> str:
    """The records with why each was quarantined: fix them here, then ``replay --fixed``."""
    return _csv([*pipeline.contract.names, *META], rows)


def input_csv(pipeline: Pipeline, rows: list[dict[str, Any]]) -> str:
    """The records as the source's CSV; a raw line that could not be split stays as it came."""
    names = list(pipeline.contract.names)
    split = [r for r in rows if any(r.get(n) not in (None, "") for n in names) or not r.get("_raw")]
    lines = [str(r["_raw"]).rstrip("\n") + "\n" for r in rows if r not in split]
    return _csv(names, split) + "".join(lines)


def _csv(names: list[str], rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(names)
    writer.writerows([["" if row.get(n) is None else row[n] for n in names] for row in rows])
    return out.getvalue()


def replay(pipeline: Pipeline, source_uri: str | None, run: str, text: str) -> str:
    """Write ``text`` as a new input of the pipeline (default: in its source folder), named by its
    content (idempotent). Only a pipeline of CSV files takes one: an API or a table is not ours
    to write to."""
    spec = pipeline.spec.source
    if not isinstance(spec, FileSource) or spec.format != "csv":
        reads = spec.format if isinstance(spec, FileSource) else f"kind {spec.kind}"
        raise SystemExit(f"replay writes CSV files; {pipeline.spec.name} reads {reads}")
    source = Location.of(source_uri or resolve(spec.uri))
    data = text.encode("utf-8", "surrogateescape")  # bad bytes go back as they came
    name = f"replay-{run}-{hashlib.sha256(data).hexdigest()[:16]}.csv"
    if not source.exists(name):
        temporary = source.path(f".{name}.partial")
        with source.fs.open_output_stream(temporary) as stream:
            stream.write(data)
        source.fs.move(temporary, source.path(name))
    return source.path(name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m base_platform.pipelines.data_storage.quarantine", description=__doc__
    )
    parser.add_argument("command", choices=["show", "replay"])
    parser.add_argument("--pipeline", required=True)
    parser.add_argument("--run", help="a run's key (default for show: every run)")
    parser.add_argument("--target-uri", help="default: the spec's storage.uri")
    parser.add_argument("--source-uri", help="replay: default the spec's source.uri")
    parser.add_argument("--out", help="show: write here instead of stdout")
    parser.add_argument("--fixed", help="replay: the CSV you fixed, instead of the run's records")
    args = parser.parse_args(argv)
    pipelines = {p.spec.name: p for p in load_pipelines()}
    if args.pipeline not in pipelines:
        parser.error(f"unknown pipeline {args.pipeline!r}; known: {', '.join(sorted(pipelines))}")
    pipeline = pipelines[args.pipeline]
    target = args.target_uri or resolve(pipeline.spec.storage.uri)
    key = protection.load_key(pipeline.spec.security)
    if args.command == "replay":
        if not args.run:
            parser.error("replay needs --run")
        if args.fixed:
            with Path(args.fixed).open(encoding="utf-8", errors="surrogateescape", newline="") as fixed:
                rows: list[dict[str, Any]] = list(csv.DictReader(fixed))
        else:
            rows = list(records(pipeline, target, key, args.run))
        text = input_csv(pipeline, rows)
        print(replay(pipeline, args.source_uri, args.run, text))
        return 0
    text = show_csv(pipeline, list(records(pipeline, target, key, args.run)))
    if args.out:
        Path(args.out).write_bytes(text.encode("utf-8", "surrogateescape"))  # raw bytes as they came
    else:
        sys.stdout.buffer.write(text.encode("utf-8", "surrogateescape"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
