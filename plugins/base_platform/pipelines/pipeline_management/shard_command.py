"""One process_shard, as the kubernetes target runs it in its pod.

``python -m base_platform.pipelines.pipeline_management.shard_command``.

Prints nothing secret; the result goes to ``/airflow/xcom/return.json`` (the
KubernetesPodOperator's XCom) when that folder exists, and to stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from base_platform.pipelines.data_security.protection import load_key
from base_platform.pipelines.pipeline_management import engine
from base_platform.pipelines.run_records import Shard
from base_platform.pipelines.spec import load_pipelines

XCOM = Path("/airflow/xcom/return.json")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--pipeline", required=True)
    parser.add_argument("--shard", required=True, help="the shard as JSON, from discover")
    parser.add_argument("--run-key", required=True)
    parser.add_argument("--target-uri", required=True)
    args = parser.parse_args(argv)
    pipelines = {p.spec.name: p for p in load_pipelines()}
    if args.pipeline not in pipelines:
        parser.error(f"unknown pipeline {args.pipeline!r}; known: {sorted(pipelines)}")
    pipeline = pipelines[args.pipeline]
    shard = Shard.from_json(json.loads(args.shard))
    result = engine.process_shard(
        pipeline, shard, args.run_key, args.target_uri, load_key(pipeline.spec.security)
    )
    if XCOM.parent.is_dir():
        XCOM.write_text(json.dumps(result.to_json()))
    counts = ("rows_in", "rows_stored", "rows_quarantined", "seconds")
    print(json.dumps({name: getattr(result, name) for name in counts}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
