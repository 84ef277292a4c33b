"""Read, fix and replay quarantined rows: ``python -m base_platform.pipelines.quarantine``.

The quarantine stores protected columns as curated rows do and seals their raw values (see
:func:`base_platform.pipelines.modules.security.seal`); unsealing needs the pipeline's secret
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
from base_platform.pipelines.modules import security
from base_platform.pipelines.spec import Pipeline, load_pipelines

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
    for row in table.sort_by([("_source", "ascending"), ("_record", "ascending")]).to_pylist():
        sealed = security.unseal(row["_sealed"], key) if row.get("_sealed") and key else {}
        values = {name: sealed[name] if name in sealed else _text(row[name]) for name in [*names, "_raw"]}
        yield values | {"_reason": row["_reason"], "_source": row["_source"]}


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


def replay(pipeline: Pipeline, source_uri: str, run: str, text: str) -> str:
    """Write ``text`` as a new input of the pipeline, named by its content (idempotent)."""
    if pipeline.spec.source.format != "csv":
        raise SystemExit(f"replay writes CSV; {pipeline.spec.name} reads {pipeline.spec.source.format}")
    source = Location.of(source_uri)
    data = text.encode("utf-8", "surrogateescape")  # bad bytes go back as they came
    name = f"replay-{run}-{hashlib.sha256(data).hexdigest()[:16]}.csv"
    if not source.exists(name):
        temporary = source.path(f".{name}.partial")
        with source.fs.open_output_stream(temporary) as stream:
            stream.write(data)
        source.fs.move(temporary, source.path(name))
    return source.path(name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m base_platform.pipelines.quarantine", description=__doc__)
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
    key = security.load_key(pipeline.spec.security)
    if args.command == "replay":
        if not args.run:
            parser.error("replay needs --run")
        if args.fixed:
            with Path(args.fixed).open(encoding="utf-8", errors="surrogateescape", newline="") as fixed:
                rows: list[dict[str, Any]] = list(csv.DictReader(fixed))
        else:
            rows = list(records(pipeline, target, key, args.run))
        text = input_csv(pipeline, rows)
        print(replay(pipeline, args.source_uri or resolve(pipeline.spec.source.uri), args.run, text))
        return 0
    text = show_csv(pipeline, list(records(pipeline, target, key, args.run)))
    if args.out:
        Path(args.out).write_bytes(text.encode("utf-8", "surrogateescape"))  # raw bytes as they came
    else:
        sys.stdout.buffer.write(text.encode("utf-8", "surrogateescape"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
