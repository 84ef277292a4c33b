"""Adopt a dataset written in the format before Iceberg into its table, in place, with one command:

``python -m base_platform.pipelines.data_storage.legacy_import --pipeline NAME [--target-uri URI]
[--dry-run]``

That format was a folder of Parquet files plus one JSON manifest per run
(``_manifests/<run>.json``: its files with SHA-256 and rows, its inputs, rows in, stored and
quarantined, null counts, stage seconds). Each manifest becomes one snapshot, oldest first, whose
summary is the run's record, so the history, the monitor and ``discover``'s skip list carry on
as if the runs had committed to the table. The files stay where they are; each is checked
against its manifest's SHA-256 and row count before anything is committed.

Safe to repeat: a run that already has its snapshot is skipped, so a command killed halfway
finishes on the next try. The manifests stay, under ``_manifests/``, and may be deleted after.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from base_platform.files import Location, file_digests, resolve, row_count
from base_platform.pipelines.data_storage import tables
from base_platform.pipelines.run_records import RunRecord, summary_key
from base_platform.pipelines.spec import Contract, Pipeline, classify_change, load_pipelines

MANIFESTS = "_manifests"
MANIFEST_KEYS = (  # what a run record holds that the old manifests held too
    "dataset", "run", "interval", "started_at", "rows_in", "rows_stored", "rows_quarantined", "bytes_in",
    "null_counts", "freshness", "quarantine", "inputs", "wall_seconds", "processing_seconds",
    "stage_seconds", "gb_per_hour",
)  # fmt: skip
ADDED = ("dag_run", "contract_version", "full_refresh", "adopted_committed_at")  # what the manifests lacked


class AdoptionFailed(RuntimeError):
    """The old dataset does not match its manifests, or its contract no longer fits."""


def old_manifests(target: Location) -> list[dict[str, Any]]:
    """The live runs' manifests, oldest first (``_history`` holds superseded ones: their files are gone)."""
    from pyarrow.fs import FileSelector

    if not target.exists(MANIFESTS):
        return []
    found = [
        target.read_json(MANIFESTS, info.base_name)
        for info in target.fs.get_file_info(FileSelector(target.path(MANIFESTS)))
        if info.base_name.endswith(".json") and not info.base_name.startswith("_")
    ]
    return sorted(found, key=lambda manifest: manifest["committed_at"])


def adopt(pipeline: Pipeline, target_uri: str, dry_run: bool = False) -> dict[str, Any]:
    """One snapshot per old run not yet in the table; returns what was (or would be) adopted."""
    from base_platform.pipelines.data_security import protection

    target = Location.of(target_uri)
    manifests = old_manifests(target)
    if not manifests:
        raise AdoptionFailed(f"{target_uri}: no {MANIFESTS}/*.json, so nothing to adopt")
    for manifest in manifests:
        _check_contract(pipeline, manifest)
    report: dict[str, Any] = {"dataset": pipeline.spec.name, "runs": [], "dry_run": dry_run}
    table = None if dry_run else tables.prepare(pipeline, tables.stored_schema(pipeline), target_uri, False)
    decryption = protection.decryption_properties() if pipeline.spec.security.encrypted else None
    for manifest in manifests:
        done = table is not None and tables.snapshot_of_run(table, manifest["run"]) is not None
        entry = {"run": manifest["run"], "files": len(manifest["files"]), "rows": manifest["rows_stored"]}
        if not done:
            _check_files(target, manifest)
        if not done and table is not None:
            properties = _properties(_record(pipeline, manifest))
            paths = [target.uri(file["path"]) for file in manifest["files"]]
            entry["snapshot_id"] = tables.commit_files(
                table, paths, properties, False, decryption
            ).snapshot_id
        report["runs"].append(entry | {"adopted": not done})
    return report


def _check_contract(pipeline: Pipeline, manifest: dict[str, Any]) -> None:
    old = Contract.model_validate(manifest["contract"])
    kind, reasons = classify_change(old, pipeline.contract)
    if kind == "breaking":
        raise AdoptionFailed(
            f"run {manifest['run']} was written under contract {old.name} {old.version}, and "
            f"{pipeline.contract.version} breaks it ({'; '.join(reasons)}): adopt under the old contract"
        )


def _check_files(target: Location, manifest: dict[str, Any]) -> None:
    files = manifest["files"]
    digests = file_digests(target, [target.path(file["path"]) for file in files])
    for file, (digest, _) in zip(files, digests, strict=True):
        if digest != file["sha256"]:
            raise AdoptionFailed(f"{file['path']}: SHA-256 differs from run {manifest['run']}'s manifest")
        if row_count(target, file["path"]) != file["rows"]:
            raise AdoptionFailed(f"{file['path']}: row count differs from run {manifest['run']}'s manifest")


def _record(pipeline: Pipeline, manifest: dict[str, Any]) -> RunRecord:
    kept = {key: manifest[key] for key in MANIFEST_KEYS if key in manifest}
    return RunRecord.from_json(
        kept
        | {
            "dag_run": "",
            "contract_version": manifest["contract"]["version"],
            "full_refresh": False,
            "adopted_committed_at": manifest["committed_at"],
        }
    )


def _properties(record: RunRecord) -> dict[str, str]:
    """The record's summary properties in the order adoption has always written them."""
    order = [summary_key(name) for name in (*MANIFEST_KEYS, *ADDED)]
    return dict(sorted(record.to_properties().items(), key=lambda item: order.index(item[0])))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m base_platform.pipelines.data_storage.legacy_import", description=__doc__
    )
    parser.add_argument("--pipeline", required=True)
    parser.add_argument("--target-uri", help="default: the spec's storage.uri")
    parser.add_argument(
        "--dry-run", action="store_true", help="check the files and say what would be adopted"
    )
    args = parser.parse_args(argv)
    pipelines = {p.spec.name: p for p in load_pipelines()}
    if args.pipeline not in pipelines:
        parser.error(f"unknown pipeline {args.pipeline!r}; known: {', '.join(sorted(pipelines))}")
    pipeline = pipelines[args.pipeline]
    try:
        report = adopt(pipeline, args.target_uri or resolve(pipeline.spec.storage.uri), args.dry_run)
    except (AdoptionFailed, tables.TableMismatch) as exc:
        print(f"adopt: {exc}", file=sys.stderr)
        return 1
    verb = "would adopt" if args.dry_run else "adopted"
    for run in report["runs"]:
        state = verb if run["adopted"] else "already in the table"
        print(f"{run['run']}: {run['files']} files, {run['rows']} rows: {state}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
