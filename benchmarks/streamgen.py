"""Card events into a Redis stream at a steady rate: ``python -m benchmarks.streamgen --rate N``.

``[--seconds S] [--url URL (default $BASE_STREAMS_REDIS_URL) | --connection redis_default]``
``[--stream card_events]``
``[--late-fraction F] [--bad-fraction F] [--seed S]``

Each entry holds one event as JSON in the field ``event`` (what ``config/pipelines/card_events``
reads): authorisations, and reversals of earlier ones, for 20,000 accounts at 500 merchants,
with PII (the cardholder's e-mail, the card's last digits). ``--late-fraction`` of the events
carry an event time 20 minutes old (past the windows' allowed lateness); ``--bad-fraction`` are
refused by the contract (an amount that is not a number). The amount is a JSON number, as
every JSON library writes one. Sends a pipelined batch every 50 ms,
so the rate holds within a batch; prints what it produced as JSON when it stops (Ctrl-C too).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

TICK_SECONDS = 0.05
ACCOUNTS, MERCHANTS = 20_000, 500  # merchant 000 to 499, as the merchants reference names them
LATE = timedelta(minutes=20)


@dataclass
class Produced:
    events: int = 0
    late: int = 0
    bad: int = 0
    first_id: str | None = None
    last_id: str | None = None
    seconds: float = 0.0
    ticks: list[tuple[str, int]] = field(default_factory=list, repr=False)  # each send's last id and size


CATEGORIES = ("grocery", "fuel", "travel", "dining", "retail", "digital")


def merchant_name(number: int) -> str:
    return f"merchant {number:03d}"


def write_merchants(path: Path, count: int = MERCHANTS) -> None:
    """The merchants reference (``config/pipelines/merchants``) of the events' merchants and of the
    generated transactions' (``benchmarks.datagen``), as CSV."""
    from benchmarks.datagen import MERCHANT_CATEGORIES

    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [f"{merchant_name(n)},{CATEGORIES[n % len(CATEGORIES)]},DE" for n in range(count)]
    rows += [f"{name},{category},DE" for name, category in MERCHANT_CATEGORIES.items()]
    path.write_text("\n".join(["merchant,category,country", *rows]) + "\n")


def events(
    first: int, count: int, rng: random.Random, late: float, bad: float
) -> Iterator[tuple[bytes, str]]:
    """``count`` events numbered from ``first``, as (JSON, kind) with kind ``ok``, ``late`` or ``bad``.

    Formatted from a template, not ``json.dumps``: at 50,000 a second the generator shares the
    machine with what it measures, so it should cost as little as it can (about 3 µs an event).
    """
    now = datetime.now(UTC).replace(microsecond=0)
    fresh, old = now.strftime("%Y-%m-%dT%H:%M:%SZ"), (now - LATE).strftime("%Y-%m-%dT%H:%M:%SZ")
    draw = rng.random
    for number in range(first, first + count):
        account = int(draw() * ACCOUNTS)
        chance = draw()
        kind = "bad" if chance < bad else "late" if chance < bad + late else "ok"
        reversal = number > 100 and draw() < 0.05
        amount = '"n/a"' if kind == "bad" else f"{int(draw() * 49_900 + 100) / 100:.2f}"  # a JSON number
        reverses = f'"ev-{number - 1 - int(draw() * 100):012d}"' if reversal else "null"
        event_type = "reversal" if reversal else "authorisation"
        yield (
            (
                f'{{"event_id":"ev-{number:012d}","event_type":"{event_type}",'
                f'"account_id":"acct-{account:05d}","merchant":"merchant {int(draw() * MERCHANTS):03d}",'
                f'"amount":{amount},"currency":"EUR","card_email":"holder{account}@example.com",'
                f'"card_last4":"{account % 10_000:04d}","event_time":"{old if kind == "late" else fresh}",'
                f'"reverses":{reverses}}}'
            ).encode(),
            kind,
        )


def produce(
    client: Any,
    stream: str,
    rate: int,
    seconds: float,
    late: float = 0.0,
    bad: float = 0.0,
    seed: int = 7,
    keep_ticks: bool = False,
    first: int = 0,
) -> Produced:
    """XADD ``rate`` events a second for ``seconds`` (forever for 0), in a pipeline per tick."""
    rng, produced = random.Random(seed), Produced()
    started = time.monotonic()
    stop = [False]
    previous = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, lambda *_: stop.__setitem__(0, True))
    try:
        while not stop[0] and (not seconds or time.monotonic() - started < seconds):
            due = int((time.monotonic() - started + TICK_SECONDS) * rate) - produced.events
            pipe = client.pipeline(transaction=False)
            for payload, kind in events(first + produced.events, max(due, 0), rng, late, bad):
                pipe.xadd(stream, {"event": payload})
                produced.late += kind == "late"
                produced.bad += kind == "bad"
            ids = [i.decode() for i in pipe.execute()]
            produced.events += len(ids)
            if ids:
                produced.first_id = produced.first_id or ids[0]
                produced.last_id = ids[-1]
                if keep_ticks:  # the benchmark's clock: an entry id is Redis's time of the XADD
                    produced.ticks.append((ids[-1], len(ids)))
            time.sleep(max(0.0, started + (produced.events / rate) - time.monotonic()))
    finally:
        signal.signal(signal.SIGINT, previous)
    produced.seconds = round(time.monotonic() - started, 3)
    return produced


def main(argv: list[str] | None = None) -> int:
    import redis

    parser = argparse.ArgumentParser(prog="python -m benchmarks.streamgen", description=__doc__)
    parser.add_argument("--rate", type=int, required=True, help="events per second")
    parser.add_argument("--seconds", type=float, default=0, help="stop after this long (0: at Ctrl-C)")
    target = parser.add_mutually_exclusive_group()
    target.add_argument(
        "--url",
        default=os.environ.get("BASE_STREAMS_REDIS_URL"),
        help="the Redis (default: $BASE_STREAMS_REDIS_URL), e.g. redis://:password@127.0.0.1:6390/0",
    )
    target.add_argument("--connection", default="redis_default", help="else this Airflow connection")
    parser.add_argument("--stream", default="card_events")
    parser.add_argument("--late-fraction", type=float, default=0.0)
    parser.add_argument("--bad-fraction", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--first", type=int, default=0, help="the first event's number (ids must not repeat)")
    parser.add_argument("--ticks", help="write each send's last entry id and size here (JSON)")
    args = parser.parse_args(argv)
    if args.url:
        client = redis.Redis.from_url(args.url)
    else:
        from airflow.sdk import BaseHook

        from base_platform.pipelines.data_ingestion.redis_streams import redis_settings

        client = redis.Redis(**redis_settings(BaseHook.get_connection(args.connection)))
    produced = produce(
        client,
        args.stream,
        args.rate,
        args.seconds,
        args.late_fraction,
        args.bad_fraction,
        args.seed,
        keep_ticks=bool(args.ticks),
        first=args.first,
    )
    if args.ticks:
        Path(args.ticks).write_text(json.dumps(produced.ticks))
    print(json.dumps(asdict(produced) | {"ticks": len(produced.ticks)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
