"""What both SIMULATORS share: scenario loading and routing every request through one dispatcher."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

Handler = Callable[[Request], Awaitable[Response]]
Dispatch = Callable[[Request, Handler], Awaitable[Response]]
Model = TypeVar("Model", bound=BaseModel)


def _resolve(path: str | Path, scenario_dir: Path) -> Path:
    candidate = Path(path)
    if not candidate.exists() and (scenario_dir / candidate).exists():
        return scenario_dir / candidate
    return candidate


def _merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` on top of ``base``; mappings merge key by key, anything else replaces."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            value = _merged(merged[key], value)
        merged[key] = value
    return merged


def _read(path: Path, scenario_dir: Path) -> dict[str, Any]:
    """A scenario's raw data; ``extends: other.yaml`` starts from that scenario."""
    data: dict[str, Any] = yaml.safe_load(path.read_text()) or {}
    if parent := data.pop("extends", None):
        sibling = path.parent / parent
        parent_path = sibling if sibling.exists() else _resolve(parent, scenario_dir)
        data = _merged(_read(parent_path, scenario_dir), data)
    return data


def load_model(path: str | Path, model: type[Model], scenario_dir: Path) -> Model:
    """A scenario file (a path, or a name under ``scenario_dir``); errors name the file and key."""
    candidate = _resolve(path, scenario_dir)
    try:
        return model.model_validate(_read(candidate, scenario_dir))
    except ValidationError as exc:
        where = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"{candidate}: {where}") from exc


def routes(table: list[tuple[str, Handler, list[str]]], dispatch: Dispatch) -> list[Route]:
    """Starlette routes whose handlers all run inside ``dispatch`` (auth, faults, error bodies)."""

    def wrap(handler: Handler) -> Handler:
        async def wrapped(request: Request) -> Response:
            return await dispatch(request, handler)

        return wrapped

    return [Route(path, wrap(handler), methods=methods) for path, handler, methods in table]
