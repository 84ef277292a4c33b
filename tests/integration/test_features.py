"""features_account_spend under dag.test(): after each transactions commit, the offline table
grows by what changed and the online store (a real Redis behind ``features_online``, with a
password) holds exactly the latest values, which the helper and a rerun agree on."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from base_platform.pipelines.feature_engineering import offline, online
from base_platform.pipelines.feature_engineering.views import feature_view_named
from tests.conftest import ROOT
from tests.e2e.services import redis
from tests.integration.test_breaker import incoming, run_dag  # noqa: F401 (incoming: the fixture)
from tests.unit.pipelines.test_engine import generate_run

pytestmark = pytest.mark.integration
PASSWORD = "features-online-password"  # a test server's


@pytest.fixture
def online_redis(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    import redis as client

    with redis(tmp_path / "redis") as url:
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        client.Redis(port=port).config_set("requirepass", PASSWORD)
        connection = {"conn_type": "redis", "host": "127.0.0.1", "port": port, "password": PASSWORD}
        monkeypatch.setenv("AIRFLOW_CONN_FEATURES_ONLINE", json.dumps(connection))
        yield client.Redis(port=port, password=PASSWORD)


def dags() -> dict[str, Any]:
    from airflow.dag_processing.dagbag import DagBag

    found = DagBag(dag_folder=str(ROOT / "dags" / "base_pipelines.py")).dags
    return found | DagBag(dag_folder=str(ROOT / "dags" / "base_features.py")).dags


def test_each_commit_of_transactions_updates_the_offline_and_online_stores(
    incoming: Path,  # noqa: F811
    online_redis: Any,
) -> None:
    merchants = incoming.parent.parent / "merchants" / "incoming"
    merchants.mkdir(parents=True)
    (merchants / "m.csv").write_text(
        "merchant,category,country\nMetro Transit,travel,DE\nNordic Fuel,fuel,NO\n"
    )
    found = dags()
    assert run_dag(found["pipeline_merchants"])[0].state == "success"
    view = feature_view_named("account_spend")
    for number in (1, 2):
        generate_run(1500, incoming / f"hour-{number}", number)
        assert run_dag(found["pipeline_transactions"])[0].state == "success"
        features, states = run_dag(found["features_account_spend"])
        assert features.state == "success" and states == {
            "materialize": "success",
            "publish_online": "success",
        }
        done = features.get_task_instance("materialize").xcom_pull(task_ids="materialize")
        assert (done["since"] is None) == (number == 1) and not done["skipped"]

    table = offline.read_offline(view)
    assert table.num_rows == 3000
    state, latest = offline.latest_features(view)
    assert online_redis.hlen("base:features:account_spend") == latest.num_rows > 0
    accounts = latest.column("account_id").to_pylist()[:100]
    served = online.get_online_features("account_spend", accounts)
    assert served["watermark"] == state.watermark and served["source_snapshot"] == str(state.source_snapshot)
    expected = dict(online.encoded(latest.slice(0, 100), "account_id"))
    assert {a: json.dumps(v, separators=(",", ":")) for a, v in served["entities"].items()} == expected

    again, states = run_dag(found["features_account_spend"])  # no new snapshot: nothing to redo
    assert again.get_task_instance("materialize").xcom_pull(task_ids="materialize")["skipped"] is True
    assert online_redis.hlen("base:features:account_spend") == latest.num_rows
