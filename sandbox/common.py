"""What both SIMULATORS share: scenario loading and routing every request through one dispatcher."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

Handler = Callable[[Request], Awaitable[Response]]
Dispatch = Callable[[Request, Handler], Awaitable[Response]]
Model = TypeVar("Model", bound=BaseModel)


def load_model(path: str | Path, model: type[Model], scenario_dir: Path) -> Model:
    """A scenario file (a path, or a name under ``scenario_dir``); errors name the file and key."""
    candidate = Path(path)
    if not candidate.exists() and (scenario_dir / candidate).exists():
        candidate = scenario_dir / candidate
    try:
        return model.model_validate(yaml.safe_load(candidate.read_text()) or {})
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
