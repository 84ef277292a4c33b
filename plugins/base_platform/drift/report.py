"""The drift report, as JSON and Markdown."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from base_platform.drift.compare import Finding


def drift_report(
    environment: str, revision: str, declared: int, findings: Sequence[Finding], generated_at: str
) -> dict[str, Any]:
    return {
        "kind": "platform_drift",
        "environment": environment,
        "revision": revision,
        "generated_at": generated_at,
        "declared": declared,
        "drifted": bool(findings),
        "counts": dict(sorted(Counter(f.kind for f in findings).items())),
        "findings": [f.to_dict() for f in findings],
        "healed": [],
    }


def drift_markdown(report: Mapping[str, Any]) -> str:
    counts = ", ".join(f"{n} {kind}" for kind, n in report["counts"].items()) or "none"
    lines = [
        f"# Platform drift: {'DRIFT' if report['drifted'] else 'clean'}",
        "",
        f"Environment `{report['environment']}` at `{report['revision']}`, {report['generated_at']}: "
        f"{report['declared']} declared apps; findings: {counts}.",
    ]
    if report["findings"]:
        lines += ["", "| app | kind | what |", "|---|---|---|"]
        lines += [f"| {f['app']} | {f['kind']} | {_cell(f['message'])} |" for f in report["findings"]]
    diffs = [(f["app"], r) for f in report["findings"] for r in f["resources"]]
    if diffs:
        lines += [
            "",
            "## Resource diffs",
            "",
            "| app | resource | field | live | target |",
            "|---|---|---|---|---|",
        ]
        for app, row in diffs:
            for fld in row["fields"] or [{"path": row.get("note", ""), "live": "", "target": ""}]:
                cells = (app, row["resource"], fld["path"], _cell(fld["live"]), _cell(fld["target"]))
                lines.append("| " + " | ".join(cells) + " |")
    if report["healed"]:
        lines += ["", "## Healing", ""]
        lines += [f"- {h['app']}: {h['action']} → {h['outcome']}" for h in report["healed"]]
    return "\n".join(lines) + "\n"


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")
