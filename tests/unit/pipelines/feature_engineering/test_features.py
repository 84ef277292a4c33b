"""account_spend on transactions committed by the engine: point-in-time retrieval that never sees
the future, incremental materialisation equal to a full one, and an online store that holds
exactly the latest values; every expectation from a plain-Python oracle, not from our SQL."""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from base_platform.pipelines.feature_engineering import offline, online
from base_platform.pipelines.feature_engineering.views import FeatureView, feature_view_named
from base_platform.pipelines.spec import duration_seconds, pipeline_named
from tests.unit.pipelines.test_engine import run

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
HEADER = (
    "transaction_id,account_id,event_time,amount,currency,merchant,merchant_country,channel,"
    "customer_email,customer_phone,card_last4,status,memo"
)
CATEGORIES = {"Metro Transit": "travel", "Acme Grocers": "grocery", "Nordic Fuel": "fuel"}


@dataclass(frozen=True)
class Tx:
    id: str
    account: str
    at: datetime
    amount: Decimal
    merchant: str = "Acme Grocers"
    status: str = "approved"

    def csv(self) -> str:
        when = self.at.strftime("%Y-%m-%dT%H:%M:%SZ")
        return (
            f"{self.id},{self.account},{when},{self.amount},EUR,{self.merchant},DE,pos,"
            f"a@example.com,+4915000,1234,{self.status},"
        )


class World:
    """Transactions and merchants landed through the real engine, run after run."""

    def __init__(self, root: Path) -> None:
        self.root, self.runs = root, 0
        self.landed: list[Tx] = []
        (root / "merchants").mkdir(parents=True)
        rows = [f"{name},{category},DE" for name, category in CATEGORIES.items()]
        (root / "merchants" / "m.csv").write_text("\n".join(["merchant,category,country", *rows]) + "\n")
        run(pipeline_named("merchants"), root / "merchants", root / "merchants-out", "merchants-1")

    def land(self, transactions: Iterable[Tx]) -> None:
        self.runs += 1
        batch = list(transactions)
        folder = self.root / f"in-{self.runs}"
        folder.mkdir()
        (folder / "tx.csv").write_text("\n".join([HEADER, *(tx.csv() for tx in batch)]) + "\n")
        record = run(pipeline_named("transactions"), folder, self.root / "tx", f"run-{self.runs}")
        assert record.rows_stored == len(batch), record
        self.landed += batch


@pytest.fixture
def view() -> FeatureView:
    return feature_view_named("account_spend")


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def oracle(
    view: FeatureView, landed: list[Tx], account: str, at: datetime, watermark: datetime
) -> dict[str, Any]:
    """The view's features and labels at (account, at), the slow and obvious way."""
    mine = [tx for tx in landed if tx.account == account]
    columns = {
        "amount": lambda tx: tx.amount,
        "merchant": lambda tx: tx.merchant,
        "merchant_category": lambda tx: CATEGORIES.get(tx.merchant),
        "status": lambda tx: tx.status,
    }
    found: dict[str, Any] = {}
    for aggregation in view.aggregations:
        for name, function, window in aggregation.features():
            rows = [
                tx
                for tx in mine
                if at - timedelta(seconds=duration_seconds(window)) < tx.at <= at
                and all(columns[c](tx) in values for c, values in aggregation.where.items())
            ]
            values = [columns[aggregation.column](tx) for tx in rows]
            present = [v for v in values if v is not None]
            if function == "sum":
                found[name] = sum(present, Decimal("0.00"))
            elif function == "mean":
                found[name] = float(sum(present) / len(present)) if present else None
            else:
                found[name] = len(set(present)) if function == "distinct_count" else len(present)
    for label in view.labels:
        ahead = timedelta(seconds=duration_seconds(label.window))
        closed = at + ahead <= watermark
        hits = [
            tx
            for tx in mine
            if at < tx.at <= at + ahead and all(columns[c](tx) in v for c, v in label.where.items())
        ]
        found[label.name] = bool(hits) if closed else None
    return found


def approx(row: dict[str, Any]) -> dict[str, Any]:
    """Means compared to 9 places (DuckDB's AVG and Python's division round differently)."""
    return {k: round(v, 9) if isinstance(v, float) else v for k, v in row.items()}


def features_of(row: dict[str, Any], view: FeatureView, labels: bool = True) -> dict[str, Any]:
    names = [*view.feature_names, *((label.name for label in view.labels) if labels else ())]
    return approx({name: row[name] for name in names})


def amounts(n: int, rng: random.Random) -> Decimal:
    return Decimal(rng.randint(100, 50_000)) / 100


@pytest.mark.slow
def test_point_in_time_features_never_see_a_later_event(world: World, view: FeatureView) -> None:
    world.land(
        [
            Tx("t1", "acct-a", T0, Decimal("10.00"), "Metro Transit"),
            Tx("t2", "acct-a", T0 + timedelta(minutes=30), Decimal("5.50"), "Nordic Fuel"),
            Tx("t3", "acct-b", T0 + timedelta(minutes=40), Decimal("99.99"), "Unlisted Shop", "declined"),
        ]
    )
    offline.materialise(view)
    asked = pa.table(
        {
            "account_id": ["acct-a", "acct-a", "acct-b", "acct-a", "acct-a"],
            "event_timestamp": pa.array(
                [
                    T0 + timedelta(minutes=45),
                    T0,  # sees t1, at that very instant
                    T0 + timedelta(minutes=40),
                    T0 - timedelta(seconds=1),  # sees nothing
                    T0 + timedelta(hours=1),  # t1 has just left the 1h window
                ],
                pa.timestamp("us", tz="UTC"),
            ),
        }
    )
    before = offline.get_historical_features(view, asked)
    watermark = T0 + timedelta(minutes=40)
    points = list(zip(asked["account_id"].to_pylist(), asked["event_timestamp"].to_pylist(), strict=True))
    assert [features_of(row, view) for row in before.to_pylist()] == [
        approx(oracle(view, world.landed, account, at, watermark)) for account, at in points
    ]
    first = before.to_pylist()[0]
    assert first["amount_sum_1h"] == Decimal("15.50") and first["travel_sum_30d"] == Decimal("10.00")
    assert first["reversed_within_7d"] is None  # its 7 days have not passed yet

    # events after the points (one a reversal 70 minutes in, one eight days on): none of the
    # features at the points change; the label window of the 45-minute point has now closed
    world.land(
        [
            Tx("t4", "acct-a", T0 + timedelta(minutes=70), Decimal("1000.00"), "Metro Transit", "reversed"),
            Tx("t5", "acct-a", T0 + timedelta(days=8), Decimal("1.00")),
        ]
    )
    offline.materialise(view)
    after = offline.get_historical_features(view, asked)
    labels = {label.name for label in view.labels}
    unchanged = [{k: v for k, v in row.items() if k not in labels} for row in after.to_pylist()]
    assert unchanged == [{k: v for k, v in row.items() if k not in labels} for row in before.to_pylist()]
    assert after.to_pylist()[0]["reversed_within_7d"] is True
    watermark = T0 + timedelta(days=8)
    assert [features_of(row, view) for row in after.to_pylist()] == [
        approx(oracle(view, world.landed, account, at, watermark)) for account, at in points
    ]
    # the 70-minute reversal counts from its own instant on, when t1 is out of the hour
    later = offline.get_historical_features(
        view,
        pa.table({"account_id": ["acct-a"], "event_timestamp": [T0 + timedelta(minutes=70)]}),
    )
    assert later.to_pylist()[0]["amount_sum_1h"] == Decimal("1005.50")


def random_batch(rng: random.Random, start: int, count: int, begin: datetime, days: float) -> list[Tx]:
    merchants = [*CATEGORIES, "Unlisted Shop"]
    return [
        Tx(
            f"r{start + n}",
            f"acct-{rng.randint(0, 11):02d}",
            begin + timedelta(seconds=rng.randint(0, int(days * 86_400))),
            amounts(n, rng),
            rng.choice(merchants),
            rng.choice(["approved", "approved", "declined", "reversed"]),
        )
        for n in range(count)
    ]


@pytest.mark.parametrize("labelled", [True, False])
@pytest.mark.slow
def test_incremental_materialisation_equals_a_full_one_row_for_row(
    world: World, view: FeatureView, labelled: bool
) -> None:
    view = view if labelled else view.model_copy(update={"labels": ()})
    rng = random.Random(7)
    batches = [
        random_batch(rng, 0, 400, T0, 20),  # twenty days
        random_batch(rng, 400, 150, T0 + timedelta(days=20), 3),  # the next three, in order
        random_batch(rng, 550, 60, T0 + timedelta(days=12), 2),  # late: eleven days back
        random_batch(rng, 610, 80, T0 + timedelta(days=23), 1),
    ]
    week = timedelta(days=7)  # the label's window: new rows also close or change labels a week back
    # without labels only the rows from the new ones' earliest time on can change
    for number, batch in enumerate(batches):
        watermark_before = max((tx.at for tx in world.landed), default=None)
        world.land(batch)
        done = offline.materialise(view)
        assert not done.skipped
        if number == 0:
            assert done.since is None and done.rows == len(batch)  # the first computes everything
            continue
        assert watermark_before is not None
        earliest = min(tx.at for tx in batch)
        expected = min(earliest, watermark_before) - week if labelled else earliest
        assert done.since == expected.isoformat()
        assert done.rows == sum(tx.at >= expected for tx in world.landed) < len(world.landed)
    incremental = offline.read_offline(view)
    assert offline.materialise(view).skipped  # nothing new: nothing written

    offline.materialise(view, full_refresh=True)
    full = offline.read_offline(view)
    assert incremental.num_rows == full.num_rows == len(world.landed)
    assert incremental.to_pylist() == full.to_pylist()

    watermark = max(tx.at for tx in world.landed)
    by_id = {tx.id: tx for tx in world.landed}
    for row in rng.sample(full.to_pylist(), 60):
        tx = by_id[row["transaction_id"]]
        assert features_of(row, view) == approx(oracle(view, world.landed, tx.account, tx.at, watermark))


def stored_online(view: FeatureView, into: online.OnlineStore, accounts: list[str]) -> dict[str, Any]:
    found = online.get_online_features(view.name, accounts, into)["entities"]
    return {account: values for account, values in found.items() if values is not None}


def expected_online(view: FeatureView, world: World) -> dict[str, Any]:
    watermark = max(tx.at for tx in world.landed)
    reach = timedelta(seconds=view.lookback_seconds)
    live = sorted({tx.account for tx in world.landed if watermark - reach < tx.at <= watermark})
    return {
        account: {
            k: str(v) if isinstance(v, Decimal) else v
            for k, v in approx(oracle(view, world.landed, account, watermark, watermark)).items()
            if k in view.feature_names
        }
        for account in live
    }


@pytest.mark.slow
def test_the_online_store_holds_exactly_the_latest_values_after_each_run(
    world: World, view: FeatureView, tmp_path: Path
) -> None:
    rng = random.Random(11)
    into = online.SqliteOnlineStore(str(tmp_path / "online.db"))
    accounts = [f"acct-{n:02d}" for n in range(12)]
    for batch in (
        random_batch(rng, 0, 300, T0, 10),
        random_batch(rng, 300, 20, T0 + timedelta(days=45), 1),  # most accounts leave the 30-day window
        random_batch(rng, 320, 50, T0 + timedelta(days=46), 1),
    ):
        world.land(batch)
        offline.materialise(view)
        published = offline.publish_online(view, into)
        expected = expected_online(view, world)
        assert published["entities"] == len(expected)
        assert {a: approx(v) for a, v in stored_online(view, into, accounts).items()} == expected
    meta = online.get_online_features(view.name, [], into)
    assert meta["watermark"] == max(tx.at for tx in world.landed).isoformat()


@pytest.mark.slow
def test_a_retried_materialisation_finds_its_work_done(world: World, view: FeatureView) -> None:
    world.land(random_batch(random.Random(3), 0, 100, T0, 5))
    first = offline.materialise(view)
    table = offline.offline_table(view)
    assert table is not None
    snapshots = len(table.snapshots())
    again = offline.materialise(view)
    assert again.skipped and again.state == first.state
    assert len(offline.offline_table(view).snapshots()) == snapshots  # type: ignore[union-attr]


@pytest.mark.slow
def test_retrieval_refuses_what_it_cannot_answer(world: World, view: FeatureView) -> None:
    with pytest.raises(offline.FeatureError, match="has no published snapshot"):
        offline.materialise(view)
    world.land(random_batch(random.Random(5), 0, 10, T0, 1))
    with pytest.raises(offline.FeatureError, match="not been materialised"):
        offline.get_historical_features(view, pa.table({"account_id": ["a"], "event_timestamp": [T0]}))
    offline.materialise(view)
    with pytest.raises(offline.FeatureError, match="'event_timestamp' column"):
        offline.get_historical_features(view, pa.table({"account_id": ["a"], "when": [T0]}))
