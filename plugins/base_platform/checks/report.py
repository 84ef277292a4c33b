"""The result of one check: every check says what it saw, whatever its verdict."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True)
class CheckResult:
    name: str
    scope: str
    passed: bool
    message: str
    severity: Severity = Severity.ERROR

    @property
    def is_error(self) -> bool:
        return not self.passed and self.severity is Severity.ERROR

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"verdict": "pass" if self.passed else "fail"}

    def line(self) -> str:
        mark = "PASS" if self.passed else ("FAIL" if self.is_error else "WARN")
        return f"[{mark}] {self.scope}/{self.name}: {self.message}"
