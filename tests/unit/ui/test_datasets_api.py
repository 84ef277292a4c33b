"""The datasets and features APIs over HTTP, as the api-server serves them (real tokens, the FAB
auth manager, real tables): every malformed or hostile parameter is a 4xx that names it, an
ungranted caller learns nothing of what exists, and only snapshots on ``main``'s history leave."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pytest

from base_platform.pipelines.data_control import table_actions
from base_platform.pipelines.data_distribution import serving
from base_platform.pipelines.pipeline_management import breaker
from base_platform.pipelines.spec import pipeline_named
from base_platform.ui.datasets_api import ARROW_STREAM
from benchmarks.datagen import generate
from tests.unit.pipelines.test_engine import generate_run, run
from tests.unit.ui.conftest import Callers

ROWS = "/api/datasets/transactions/rows"
JSON = "application/json"


def refused(answer: object, status: int, *words: str) -> None:
    """A refusal with that status whose detail names each word (a parameter, a reason)."""
    assert getattr(answer, "status_code", None) == status, getattr(answer, "text", answer)
    detail = json.dumps(answer.json()["detail"])  # type: ignore[attr-defined]
    for word in words:
        assert word in detail, detail


@pytest.mark.slow
def test_a_decimal_filter_of_any_scale_that_is_exact_reads_and_one_that_is_not_is_a_400(
    callers: Callers, catalog: Path
) -> None:
    everything = callers.get("dev", ROWS, params={"limit": 10_000, "columns": "amount"}).json()["rows"]
    over = callers.get("dev", ROWS, params={"filter": "amount>10", "limit": 10_000, "columns": "amount"})
    assert over.status_code == 200, over.text
    expected = sorted(Decimal(r["amount"]) for r in everything if Decimal(r["amount"]) > 10)
    assert sorted(Decimal(r["amount"]) for r in over.json()["rows"]) == expected
    assert 0 < len(expected) < len(everything)
    exact = callers.get(
        "dev", ROWS, params={"filter": "amount>=10.5000", "limit": 10_000, "columns": "amount"}
    )
    assert exact.status_code == 200 and all(
        Decimal(r["amount"]) >= Decimal("10.5") for r in exact.json()["rows"]
    )
    for bad, reason in [
        ("amount>10.001", "decimal places"),
        ("amount=NaN", "not a finite number"),
        ("amount<-Infinity", "not a finite number"),
        ("amount=sNaN", "not a finite number"),
        ("amount>1e400", "does not fit"),
        ("amount in 1, NaN", "not a finite number"),
        ("amount=12345678901234567.5", "does not fit"),
        ("event_time>2026-13-01T00:00Z", "not a timestamp"),
        ("amount>abc", "not a decimal"),
        ("amount in ,", "at least one value"),
        ("amount in  , ,", "at least one value"),
    ]:
        answer = callers.get("dev", ROWS, params={"filter": bad})
        refused(answer, 400, "amount" if "amount" in bad else "event_time", reason)
        assert answer.json()["detail"].startswith(f"filter {bad!r}: "), answer.text


@pytest.mark.slow
@pytest.mark.parametrize(
    ("params", "status", "words"),
    [
        ({"as_of": "2026-13-01T00:00Z"}, 400, ("as_of", "not a real time")),
        ({"as_of": "2026-11-30T25:00+00:00"}, 400, ("as_of", "not a real time")),
        ({"as_of": "2026-11-30T10:00"}, 400, ("as_of", "time zone")),
        ({"as_of": "yesterday"}, 422, ("as_of",)),
        ({"as_of": "99999999999999999999999999"}, 404, ("as_of", "no snapshot")),
        ({"as_of": "1999-01-01T00:00Z"}, 404, ("as_of", "had no snapshot")),
        ({"limit": 0}, 422, ("limit",)),
        ({"limit": 10_001}, 422, ("limit",)),
        ({"limit": -1}, 422, ("limit",)),
        ({"limit": "ten"}, 422, ("limit",)),
        ({"limit": "1e3"}, 422, ("limit",)),
        ({"columns": "amount,,currency"}, 422, ("columns",)),
        ({"columns": "amount , currency"}, 200, ()),
        ({"columns": "", "as_of": "", "cursor": ""}, 200, ()),  # empty: all columns, now, the first page
        ({"columns": "amount,nope"}, 400, ("columns", "nope")),
        ({"filter": "nope=1"}, 400, ("filter", "nope")),
        ({"filter": ["amount>1", "amount>abc"]}, 400, ("filter 'amount>abc'", "not a decimal")),
        (
            {"filter": "event_time>2026-11-21T00:00"},
            400,
            ("filter 'event_time>2026-11-21T00:00'", "time zone"),
        ),
        ({"filter": "amount~1"}, 400, ("filter",)),
        ({"filter": "x" * 5000}, 422, ("filter",)),
        ({"filter": "transaction_id=\x00"}, 200, ()),
        ({"cursor": "garbage"}, 400, ("cursor", "not one this API gave")),
        ({"cursor": "a.b.c.d"}, 400, ("cursor",)),
        ({"cursor": "!!!!.????"}, 400, ("cursor",)),
    ],
)
def test_every_bad_parameter_is_a_4xx_that_names_it(
    callers: Callers, catalog: Path, params: dict[str, object], status: int, words: tuple[str, ...]
) -> None:
    answer = callers.get("dev", ROWS, params=params)
    if status == 200:
        assert answer.status_code == 200, answer.text
    else:
        refused(answer, status, *words)
    if status == 400:  # the docs' promise: the detail starts with the parameter
        assert answer.json()["detail"].startswith(words[0]), answer.text


def _edit(cursor: str, **changes: int) -> str:
    """The cursor's position changed by a caller who cannot sign: its signature kept as it was."""
    body, dot, signature = cursor.partition(".")
    position = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    position.update(changes)
    edited = base64.urlsafe_b64encode(json.dumps(position).encode()).decode().rstrip("=")
    return f"{edited}{dot}{signature}"


@pytest.mark.slow
def test_a_cursor_is_the_servers_own_for_its_dataset_and_query_and_an_edited_one_is_a_400(
    callers: Callers, catalog: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = callers.get("dev", ROWS, params={"limit": 100})
    cursor = first.json()["next_cursor"]
    assert cursor and callers.get("dev", ROWS, params={"limit": 100, "cursor": cursor}).status_code == 200
    # "o" was the offset of the unsigned cursors before this issue: a negative one dropped the connection
    for changes in ({"offset": -5, "o": -5}, {"offset": 1}, {"file_index": 0, "f": 0, "offset": 0, "o": 0}):
        refused(
            callers.get("dev", ROWS, params={"limit": 100, "cursor": _edit(cursor, **changes)}), 400, "cursor"
        )
    refused(callers.get("dev", ROWS, params={"limit": 101, "cursor": cursor}), 400, "cursor", "another query")
    unsigned = cursor.partition(".")[0]
    refused(callers.get("dev", ROWS, params={"limit": 100, "cursor": unsigned}), 400, "cursor")
    monkeypatch.setenv(serving.CURSOR_KEY_ENV, "another deployment's key")
    refused(
        callers.get("dev", ROWS, params={"limit": 100, "cursor": cursor}), 400, "cursor", "another server"
    )


def _signed(position: dict[str, object]) -> str:
    """A cursor signed with the server's own key: what only a leaked key could make."""
    body = base64.urlsafe_b64encode(json.dumps(position).encode()).decode().rstrip("=")
    signature = hmac.new(serving.cursor_key(), body.encode(), hashlib.sha256).digest()
    return f"{body}.{base64.urlsafe_b64encode(signature).decode().rstrip('=')}"


@pytest.mark.slow
def test_even_a_signed_cursor_must_point_inside_its_snapshot_of_its_dataset(
    callers: Callers, catalog: Path
) -> None:
    first = callers.get("dev", ROWS, params={"limit": 100}).json()
    body = first["next_cursor"].partition(".")[0]
    position = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    for changes in (
        {"offset": -1},
        {"file_index": -1},
        {"file_index": 10**6},
        {"offset": 10**9},
        {"offset": "5"},
        {"offset": True},
        {"dataset": "merchants"},
        {"snapshot_id": 1},
        {"extra": 1},
    ):
        answer = callers.get("dev", ROWS, params={"limit": 100, "cursor": _signed(position | changes)})
        assert answer.status_code in (400, 404) and "cursor" in answer.json()["detail"], (
            changes,
            answer.text,
        )


@pytest.mark.slow
def test_an_ungranted_caller_gets_the_same_404_for_a_dataset_that_exists_and_one_that_does_not(
    callers: Callers, catalog: Path
) -> None:
    for route in ("/api/datasets/{}/schema", "/api/datasets/{}/rows"):
        there = callers.get("ds", route.format("transactions"))
        absent = callers.get("ds", route.format("no_such_dataset"))
        assert there.status_code == absent.status_code == 404
        assert there.json() == {"detail": "no dataset 'transactions' that you may read"}
        assert absent.json() == {"detail": "no dataset 'no_such_dataset' that you may read"}
    there = callers.get("ds", "/api/features/account_spend/online", params={"entity": "a"})
    absent = callers.get("ds", "/api/features/no_such_view/online", params={"entity": "a"})
    assert there.status_code == absent.status_code == 404
    assert there.json() == {"detail": "no feature view 'account_spend' that you may read"}
    assert absent.json() == {"detail": "no feature view 'no_such_view' that you may read"}
    assert callers.get("ds", "/api/datasets").json() == []
    refused(callers.get("dev", "/api/features/account_spend/online"), 422, "entity")
    too_many = [("entity", str(n)) for n in range(1001)]
    refused(callers.get("dev", "/api/features/account_spend/online", params=too_many), 422, "entity")


@pytest.mark.slow
def test_a_staged_snapshot_or_one_its_audit_discarded_is_a_404_that_says_why(
    callers: Callers, iceberg: Path, tmp_path: Path
) -> None:
    pipeline = pipeline_named("transactions")
    generate_run(500, tmp_path / "good", 1)
    good = run(pipeline, tmp_path / "good", tmp_path / "out", "run-1")
    generate(1000, "csv", 0.5, tmp_path / "bad", seed=2)  # half its rows bad: the audit fails
    bad = run(pipeline, tmp_path / "bad", tmp_path / "out", "run-2")
    assert good.published and not bad.published and bad.snapshot_id
    staged = callers.get("dev", ROWS, params={"as_of": str(bad.snapshot_id)})
    refused(staged, 404, "as_of", str(bad.snapshot_id), "audit branch", "not served")
    now = callers.get("dev", ROWS, params={"limit": 10_000})
    assert now.json()["snapshot_id"] == good.snapshot_id and len(now.json()["rows"]) == 500
    table = table_actions.dataset_table("transactions")
    breaker.resolve_audit(table, "discard", who="ops", why="half the batch is bad")
    discarded = callers.get("dev", ROWS, params={"as_of": str(bad.snapshot_id)})
    refused(discarded, 404, "as_of", "not on main's history", "not served")
    by_id = callers.get("dev", ROWS, params={"as_of": str(good.snapshot_id), "limit": 10_000})
    assert by_id.status_code == 200 and len(by_id.json()["rows"]) == 500


@pytest.mark.slow
@pytest.mark.parametrize(
    ("path", "params", "unknown"),
    [
        (ROWS, {"fitler": "amount>10"}, "fitler"),
        (ROWS, {"limt": 5, "limit": 10}, "limt"),
        (ROWS, [("filter", "amount>10"), ("Filter", "amount<20")], "Filter"),
        ("/api/datasets", {"limit": 5}, "limit"),
        ("/api/datasets/transactions/schema", {"columns": "amount"}, "columns"),
        ("/api/features", {"entity": "a"}, "entity"),
        ("/api/features/account_spend/online", {"entity": "a", "entitty": "b"}, "entitty"),
    ],
)
def test_a_query_parameter_no_route_takes_is_a_422_that_names_it_not_an_unfiltered_answer(
    callers: Callers, catalog: Path, path: str, params: object, unknown: str
) -> None:
    answer = callers.get("dev", path, params=params)
    assert answer.status_code == 422, answer.text
    assert ["query", unknown] in [error["loc"] for error in answer.json()["detail"]], answer.text


def test_the_page_sends_only_query_parameters_its_routes_take() -> None:
    """The page's own fetches: a parameter the strict routes refuse would break the page."""
    import re

    from base_platform.ui.app import PAGE, create_app

    page = PAGE.read_text()
    fetched = set(re.findall(r"get\(`?\"?(api/[a-z/]+)", page))
    sent = set(re.findall(r"[?&]([a-z_]+)=", page))
    assert fetched and sent == {"environment"}, (fetched, sent)
    paths = create_app().openapi()["paths"]
    for path in fetched:
        taken = {p["name"] for p in paths["/" + path]["get"].get("parameters", []) if p["in"] == "query"}
        assert path in ("api/pipelines", "api/tabs") or sent <= taken, (path, taken)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, JSON),
        ("*/*", JSON),
        ("application/json, application/vnd.apache.arrow.stream;q=0", JSON),
        ("application/vnd.apache.arrow.stream;q=0, */*", JSON),
        ("application/vnd.apache.arrow.stream, application/json", JSON),  # a tie: JSON
        ("application/vnd.apache.arrow.stream;q=0.5, application/json;q=0.4", ARROW_STREAM),
        (ARROW_STREAM, ARROW_STREAM),
        ("application/json;q=0, */*", ARROW_STREAM),
        ("text/html, application/*;q=0.2", JSON),
        ("text/html", 406),
        ("application/json;q=0, application/vnd.apache.arrow.stream;q=0", 406),
        ("text/*, image/png", 406),
    ],
)
def test_the_accept_header_picks_json_or_arrow_by_its_q_values_and_neither_is_a_406(
    callers: Callers, catalog: Path, accept: str | None, expected: str | int
) -> None:
    headers = {"Accept": accept} if accept is not None else {}
    answer = callers.get("dev", ROWS, params={"limit": 5}, headers=headers)
    if expected == 406:
        refused(answer, 406, "application/json", ARROW_STREAM)
        return
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].split(";")[0] == expected
    assert "Accept" in answer.headers["vary"]
    if expected == ARROW_STREAM:
        assert pa.ipc.open_stream(answer.content).read_all().num_rows == 5
    else:
        assert len(answer.json()["rows"]) == 5


@pytest.mark.slow
def test_the_api_opens_one_iceberg_catalog_per_connection_settings_not_one_per_table_and_request(
    callers: Callers, catalog: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pyiceberg.catalog.sql import SqlCatalog

    from base_platform.pipelines.data_storage import tables
    from tests.conftest import iceberg_connection

    opened: list[str] = []
    init = SqlCatalog.__init__

    def counted(self: SqlCatalog, name: str, **properties: str) -> None:
        opened.append(properties["uri"])
        init(self, name, **properties)

    monkeypatch.setattr(SqlCatalog, "__init__", counted)
    tables.forget_shared_catalogs()
    for limit in (5, 6, 5):
        assert callers.get("dev", ROWS, params={"limit": limit}).status_code == 200
        assert callers.get("dev", "/api/datasets").status_code == 200
        assert callers.get("dev", "/api/datasets/transactions/schema").status_code == 200
    assert len(opened) == 1, opened

    def transactions() -> object:
        listed = callers.get("dev", "/api/datasets").json()
        return next(entry["snapshot_id"] for entry in listed if entry["name"] == "transactions")

    with monkeypatch.context() as other:  # another catalog: a catalog of its own, at once
        other.setenv("AIRFLOW_CONN_ICEBERG_DEFAULT", iceberg_connection(tmp_path / "i.db", tmp_path / "w"))
        assert transactions() is None and transactions() is None
    assert transactions() is not None  # the first connection's catalog, still open
    assert len(opened) == 2 and opened[0] != opened[1], opened


@pytest.mark.slow
def test_a_catalog_database_that_refuses_connections_is_a_503_that_names_no_host(
    callers: Callers, catalog: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Postgres behind iceberg_default down mid-life: the data routes answer 503 with
    Retry-After (a retry will do), not a 500, and the detail carries no host, port or password."""
    import json

    from tests.conftest import free_port

    port = free_port()  # nothing listens there
    down = {"conn_type": "postgres", "host": "127.0.0.1", "port": port, "login": "u", "password": "pw-x9"}
    monkeypatch.setenv("AIRFLOW_CONN_ICEBERG_DEFAULT", json.dumps(down | {"schema": "iceberg"}))
    for path in (ROWS, "/api/datasets", "/api/datasets/transactions/schema"):
        answer = callers.get("dev", path)
        assert answer.status_code == 503 and answer.headers["Retry-After"].isdigit(), (path, answer.text)
        assert (
            "OperationalError" in answer.text and str(port) not in answer.text and "pw-x9" not in answer.text
        )
