"""A paginated JSON API of card transactions that misbehaves as real ones do, for the ``http``
source: ``python -m sandbox.records_api --port 8090 --token secret --rows 1000``.

``GET /v1/transactions`` pages by all three styles at once: ``limit`` with ``offset``, an opaque
``cursor`` (``next_cursor`` in the body), and ``Link: <…>; rel="next"``. ``updated_since`` keeps
the records whose ``event_time`` is after it. A bearer token is required. Every
``--throttle-every``-th request is answered 429 with ``Retry-After``, every ``--fail-every``-th
503, and ``POST /_admin/records {"count": n}`` appends n records (later times), so a test can
check an incremental read.
"""

from __future__ import annotations

import argparse
import base64
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


@dataclass
class RecordsApi:
    token: str
    start: datetime
    rows: int = 0
    throttle_every: int = 0
    fail_every: int = 0
    retry_after: int = 1
    bad_every: int = 0  # every n-th record has an amount that is not a number
    repeat_pages: bool = False  # every next cursor and link points at the page just sent: a loop
    link_origin: str | None = None  # the Link header's scheme://host:port, when another origin's
    requests: int = 0
    answered: list[int] = field(default_factory=list)  # each request's status, in order

    def record(self, number: int) -> dict[str, Any]:
        amount: Any = (
            "lots" if self.bad_every and number % self.bad_every == 0 else round(number % 1000 / 4, 2)
        )
        return {
            "transaction_id": f"api-{number:08d}",
            "account_id": f"acct-{number % 50}",
            "event_time": (self.start + timedelta(seconds=number)).strftime(TIME_FORMAT),
            "amount": amount,
            "currency": "EUR",
            "merchant": f"merchant {number % 20}",
            "merchant_country": "DE",
            "channel": "online",
            "customer_email": f"user{number}@example.com",
            "customer_phone": f"+4915100{number:06d}",
            "card_last4": f"{number % 10000:04d}",
            "status": "approved",
            "memo": None,
        }

    async def transactions(self, request: Request) -> Response:
        self.requests += 1
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return self._answer(JSONResponse({"error": "unauthorized"}, 401))
        if self.throttle_every and self.requests % self.throttle_every == 0:
            headers = {"Retry-After": str(self.retry_after)}
            return self._answer(JSONResponse({"error": "slow down"}, 429, headers=headers))
        if self.fail_every and self.requests % self.fail_every == 0:
            return self._answer(JSONResponse({"error": "upstream unavailable"}, 503))
        query = request.query_params
        limit = min(int(query.get("limit", 100)), 1000)
        first = 1
        if since := query.get("updated_since"):
            after = datetime.strptime(since, TIME_FORMAT).replace(tzinfo=UTC)
            first = max(1, int((after - self.start).total_seconds()) + 1)
        if token := query.get("cursor"):
            first = int(base64.urlsafe_b64decode(token))
        first += int(query.get("offset", 0))
        numbers = range(first, min(first + limit, self.rows + 1))
        following = numbers.stop if numbers.stop <= self.rows else None
        if self.repeat_pages and following:
            following = first
        body: dict[str, Any] = {"data": [self.record(n) for n in numbers]}
        body["next_cursor"] = (
            base64.urlsafe_b64encode(str(following).encode()).decode() if following else None
        )
        headers = {}
        if following:
            next_url = request.url.remove_query_params(["offset", "cursor"]).include_query_params(
                cursor=body["next_cursor"]
            )
            link = (
                f"{self.link_origin}{next_url.path}?{next_url.query}" if self.link_origin else str(next_url)
            )
            headers["Link"] = f'<{link}>; rel="next"'
        return self._answer(JSONResponse(body, headers=headers))

    async def add(self, request: Request) -> Response:
        self.rows += int(json.loads(await request.body())["count"])
        return JSONResponse({"rows": self.rows})

    def _answer(self, response: Response) -> Response:
        self.answered.append(response.status_code)
        return response

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/transactions", self.transactions),
                Route("/_admin/records", self.add, methods=["POST"]),
            ]
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sandbox.records_api", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--token", required=True)
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--throttle-every", type=int, default=0)
    parser.add_argument("--fail-every", type=int, default=0)
    args = parser.parse_args(argv)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
    api = RecordsApi(args.token, start, args.rows, args.throttle_every, args.fail_every)
    print(f"records API listening on http://{args.host}:{args.port}/v1/transactions", flush=True)
    uvicorn.run(api.app(), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
