"""Check results and the validation verdict: every check says what it saw, whatever its verdict."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

HARD_SCOPES = frozenset({"core", "security"})
DEGRADED_PASS_RATE = 0.8


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


class Verdict(StrEnum):
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    FAILED = "failed"


@dataclass(frozen=True)
class CheckResult:
    """``scope`` is a validation scope (core, ..., security); ``target`` is what was checked."""

    name: str
    scope: str
    target: str
    passed: bool
    message: str
    severity: Severity = Severity.ERROR

    @property
    def is_error(self) -> bool:
        return not self.passed and self.severity is Severity.ERROR

    @property
    def mark(self) -> str:
        return "PASS" if self.passed else ("FAIL" if self.is_error else "WARN")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"verdict": "pass" if self.passed else "fail"}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CheckResult:
        fields = {k: data[k] for k in ("name", "scope", "target", "passed", "message")}
        return cls(**fields, severity=Severity(data.get("severity", "error")))

    def line(self) -> str:
        return f"[{self.mark}] {self.scope}/{self.target}/{self.name}: {self.message}"


def verdict(results: Iterable[CheckResult]) -> Verdict:
    """healthy: no errors; degraded: >= 80% pass and no error in core or security; else failed."""
    results = list(results)
    errors = [r for r in results if r.is_error]
    if not errors:
        return Verdict.HEALTHY
    pass_rate = sum(r.passed for r in results) / len(results)
    if pass_rate >= DEGRADED_PASS_RATE and not any(r.scope in HARD_SCOPES for r in errors):
        return Verdict.DEGRADED
    return Verdict.FAILED


def validation_report(
    environment: str, scope: str, results: Iterable[CheckResult], generated_at: str
) -> dict[str, Any]:
    results = list(results)
    return {
        "kind": "platform_validate",
        "environment": environment,
        "scope": scope,
        "generated_at": generated_at,
        "verdict": verdict(results).value,
        "total": len(results),
        "passed": sum(r.passed for r in results),
        "errors": sum(r.is_error for r in results),
        "warnings": sum(not r.passed and not r.is_error for r in results),
        "checks": [r.to_dict() for r in results],
    }


def validation_markdown(report: Mapping[str, Any]) -> str:
    lines = [
        f"# Platform validation: {report['verdict'].upper()}",
        "",
        f"Environment `{report['environment']}`, scope `{report['scope']}`, at {report['generated_at']}: "
        f"{report['passed']}/{report['total']} passed, {report['errors']} errors, "
        f"{report['warnings']} warnings.",
        "",
        "| result | scope | target | check | severity | message |",
        "|---|---|---|---|---|---|",
    ]
    for row in sorted(report["checks"], key=lambda r: (r["passed"], r["scope"], r["target"], r["name"])):
        result = CheckResult.from_dict(row)
        message = result.message.replace("|", "\\|").replace("\n", " ")
        cells = (result.mark, result.scope, result.target, result.name, result.severity, message)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
