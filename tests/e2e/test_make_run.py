"""`make run`'s stack, started as a user would, driven by docs/ci.md's own curl blocks.

It also proves that Ctrl-C stops every process and that a second start works.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from benchmarks.streamgen import ACCOUNTS
from sandbox.argocd.scenario import load_scenario
from sandbox.vault.scenario import load_scenario as load_vault_scenario
from scripts.dev_stack import launch, wait_ready
from tests.conftest import ROOT, doc_block, free_port, vault_conn_uri

pytestmark = pytest.mark.e2e


class DevStack:
    """``make run``'s stack on free ports, via the launcher in scripts/dev_stack.py."""

    def __init__(self, home: Path) -> None:
        self.vault_port = free_port()
        self.stack = launch(home, free_port(), free_port(), self.vault_port)

    def wait_ready(self) -> None:
        wait_ready(self.stack)

    @property
    def api_port(self) -> int:
        return self.stack.api_port

    @property
    def password(self) -> str:
        return self.stack.password

    @property
    def child_pids(self) -> list[int]:
        return self.stack.child_pids

    def ctrl_c(self) -> int:
        os.killpg(self.stack.proc.pid, signal.SIGINT)  # what a terminal sends to the foreground group
        return self.stack.proc.wait(timeout=90)


def _assert_bad_params_are_a_400(stack: DevStack) -> None:
    api = f"http://127.0.0.1:{stack.api_port}"
    token = httpx.post(f"{api}/auth/token", json={"username": "admin", "password": stack.password}).json()
    headers = {"Authorization": f"Bearer {token['access_token']}"}
    for conf in ({"environment": "qa"}, {"waves": ["bogus"]}, {"components": ["nope"]}):
        answer = httpx.post(
            f"{api}/api/v2/dags/platform_deploy/dagRuns",
            headers=headers,
            json={"logical_date": None, "conf": conf},
            timeout=30,
        )
        assert answer.status_code == 400, (conf, answer.status_code, answer.text)
    runs = httpx.get(f"{api}/api/v2/dags/platform_deploy/dagRuns", headers=headers, timeout=30).json()
    assert runs["total_entries"] == 0  # refused before any run existed


def _run_block(marker: str, env: dict[str, str]) -> str:
    """Run a docs/ci.md block verbatim after the setup block, as a user would paste them; it must exit 0."""
    script = doc_block("setup") + doc_block(marker)
    result = subprocess.run(
        ["bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, f"{marker}: " + result.stdout + result.stderr
    return result.stdout


def _assert_no_credentials_in_logs(logs: Path) -> None:
    """The runs above used the Argo CD token and Vault's password; no log may contain either."""
    secrets = {
        load_scenario("default.yaml").tokens[0],
        load_vault_scenario("default.yaml").users["airflow"].password,
        json.loads((logs.parent / "local-secrets.json").read_text())["breaker_password"],  # airflow_api
        json.loads((logs.parent / "local-secrets.json").read_text())["streams_redis_password"],
    }
    files = [f for f in logs.rglob("*") if f.is_file()]
    assert any("task_id=" in str(f) for f in files), "no task logs were written"
    leaked = [str(f) for f in files for secret in secrets if secret in f.read_text(errors="replace")]
    assert leaked == []


def _assert_no_protected_value_written(home: Path) -> None:
    """Every e-mail and phone number of the sample data, searched in every byte the stack wrote:
    curated data, quarantine, manifests, reports, task logs, and the metadata DB (XCom)."""
    protected: set[str] = set()
    for path in (home / "data" / "transactions" / "incoming").glob("*.csv"):
        for row in csv.DictReader(io.StringIO(path.read_text(errors="replace"))):
            protected |= {row[c] for c in ("customer_email", "customer_phone") if row.get(c)}
    assert len(protected) > 1000
    protected |= {f"holder{account}@example.com" for account in range(ACCOUNTS)}  # the card stream's
    planted = {  # the sample media's e-mails, phone numbers and GPS marker, searched as they are
        value.encode()
        for made in (home / "data").glob("*/incoming/_mediagen.json")
        for value in json.loads(made.read_text())["planted"]
    }
    assert len(planted) > 10
    datasets = [p for p in (home / "data").glob("*/*") if p.name != "incoming"]  # all we wrote, not the drops
    written = [*datasets, home / "logs", home / "artifacts"]  # curated, its splits, reports, logs
    files = [f for folder in written for f in folder.rglob("*") if f.is_file()]
    files += [f for pattern in ("airflow.db*", "iceberg.db*") for f in home.glob(pattern) if f.is_file()]
    assert any("_quarantine" in str(f) for f in files) and any(f.name == "airflow.db" for f in files)
    # Every token that looks like an e-mail or a phone number, then the ones the data holds.
    token = re.compile(rb"[\w.+-]+@[\w-]+(?:\.[\w-]+)*|\+\d{6,15}")
    leaked = {}
    for f in files:
        data = f.read_bytes()
        found = {t.decode(errors="replace") for t in token.findall(data)} & protected
        found |= {value.decode() for value in planted if value in data}
        if found:
            leaked[str(f)] = found
    assert leaked == {}


def _token(stack: DevStack, user: str, home: Path) -> str:
    password = json.loads((home / "local-secrets.json").read_text())[f"{user}_password"]
    answer = httpx.post(
        f"http://127.0.0.1:{stack.api_port}/auth/token",
        json={"username": user, "password": password},
        timeout=30,
    )
    assert answer.status_code in (200, 201), answer.text
    return str(answer.json()["access_token"])


def _assert_platform_page_access_and_metrics(stack: DevStack, home: Path) -> None:
    """The plugin's routes need a login (401) and the role's DAGs (403); /metrics holds the
    figures of the deploys and the pipeline run above."""
    from prometheus_client.parser import text_string_to_metric_families

    page = f"http://127.0.0.1:{stack.api_port}/base-platform"
    admin, ds = (_token(stack, user, home) for user in ("admin", "ds"))
    assert httpx.get(f"{page}/api/tabs", timeout=30).status_code == 401
    assert httpx.get(f"{page}/metrics", timeout=30).status_code == 401
    as_ds = {"Authorization": f"Bearer {ds}"}
    assert httpx.get(f"{page}/api/platform", headers=as_ds, timeout=30).status_code == 403
    assert httpx.get(f"{page}/metrics", headers=as_ds, timeout=30).status_code == 403
    answer = httpx.get(f"{page}/metrics", headers={"Authorization": f"Bearer {admin}"}, timeout=30)
    assert answer.status_code == 200, answer.text
    values = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(answer.text)
        for s in family.samples
    }
    vault = (("app", "vault"), ("environment", "dev"), ("status", "Healthy"), ("wave", "core"))
    assert values[("base_app_health", vault)] == 1.0
    assert values[("base_deploy_last_ok", (("environment", "dev"),))] == 1.0
    assert values[("base_dataset_rows", (("dataset", "transactions"), ("outcome", "in")))] == 20_000
    assert values[("base_dataset_gb_per_hour", (("dataset", "transactions"),))] > 0
    overview = httpx.get(f"{page}/api/pipelines/overview", headers=as_ds, timeout=30)
    rows = {row["dataset"]: row for row in overview.json()}
    assert list(rows) == sorted(rows) and {"transactions", "card_events", "account_spend_5m"} <= set(rows)
    row = rows["transactions"]
    assert (row["dataset"], row["schedule"], row["is_paused"]) == ("transactions", "0 * * * *", False), row
    assert isinstance(row["snapshot_id"], int) and row["gb_per_hour"] > 0 and 0 < row["quarantine_rate"] < 1
    assert row["last_dag_run"]["state"] in {"success", "running", "queued"}, row


def _assert_each_role_sees_its_tabs_in_chromium(stack: DevStack, home: Path, shots: Path) -> None:
    """Headless Chromium loads the page as admin and as a data scientist; a blank page, or a tab
    of another role, fails. Screenshots go to ``shots``."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(argument)
    api = f"http://127.0.0.1:{stack.api_port}"
    for user, tabs in (("admin", ["Platform", "Drift", "Pipelines"]), ("ds", ["Pipelines"])):
        browser = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
        try:
            browser.get(f"{api}/api/v2/monitor/health")  # the cookie's origin
            browser.add_cookie({"name": "_token", "value": _token(stack, user, home), "path": "/"})
            browser.get(f"{api}/base-platform/")
            WebDriverWait(browser, 30).until(
                lambda b: b.find_elements(By.CSS_SELECTOR, ".card, #pipelines tr[data-dataset]")
            )
            browser.save_screenshot(str(shots / f"platform-page-{user}.png"))
            assert [b.text for b in browser.find_elements(By.CSS_SELECTOR, "nav button")] == tabs
            if user == "admin":
                cards = {
                    c.get_attribute("data-app"): c.text
                    for c in browser.find_elements(By.CSS_SELECTOR, ".card")
                }
                assert len(cards) == 28 and "Synced · Healthy" in cards["vault"]
                # each card: its newest deploy (deploy-curl: core and shared; platformctl: cert-manager)
                assert all("deployed" in cards[app] for app in ("vault", "monitoring", "cert-manager"))
                assert "no deploy yet" in cards["kubeflow"]
                assert browser.find_elements(By.CSS_SELECTOR, "#graph circle")
            else:
                found = browser.find_elements(By.CSS_SELECTOR, "#pipelines tr[data-dataset]")
                rows = {str(r.get_attribute("data-dataset")): r for r in found}
                assert list(rows) == sorted(rows) and {"transactions", "card_events"} <= set(rows)
                assert "20000" in rows["transactions"].text
                assert rows["transactions"].find_element(By.CSS_SELECTOR, "td.breaker").text == "closed"
        finally:
            browser.quit()


def _run_dataset_blocks(stack: DevStack, env: dict[str, str], home: Path) -> None:
    """docs/ci.md's data_control blocks: Python reads with time travel, the synthesizer, then a
    split and an erasure over REST, the subject handed over through Vault."""
    import hvac

    trained = _run_block("features-python", env)
    assert re.search(r"^1000 rows, 21 columns; \d+ labels still open$", trained, re.M), trained
    assert re.search(r"^(\d+) of \1 accounts online as of 2026-", trained, re.M), trained
    read = _run_block("dataset-python", env | {"TMPDIR": str(home.parent)})
    assert re.search(r"now \d+ rows; [1-9]\d* since 2026-\d\d-\d\dT00:00:00\+00:00; \d+ at snapshot", read), (
        read
    )
    assert "5000 rows, " in read and (home.parent / "synth-transactions" / "transactions-0000.csv").exists()
    subject = _a_stored_subject(home / "data" / "transactions" / "incoming")
    vault = hvac.Client(url=f"http://127.0.0.1:{stack.vault_port}")
    vault.auth.userpass.login("airflow", load_vault_scenario("default.yaml").users["airflow"].password)
    done = _run_block(
        "dataset-curl",
        env
        | {
            "VAULT_ADDR": f"http://127.0.0.1:{stack.vault_port}",
            "VAULT_TOKEN": vault.token,
            "SUBJECT": subject,
        },
    )
    parts = dict(re.findall(r"^(train|validation|test) +base\.transactions__\w+ +(\d+) rows", done, re.M))
    assert set(parts) == {"train", "validation", "test"} and int(parts["train"]) > int(parts["test"]) > 0, (
        done
    )
    erased = re.search(r"transactions: (\d+) rows and (\d+) quarantined records erased", done)
    assert erased and int(erased[1]) >= 1, done


def _a_stored_subject(incoming: Path) -> str:
    """A well-formed e-mail of the first sample file, so a table row goes (the export check after
    this waits on it), not of whichever file a directory listing happens to give first."""
    for path in sorted(incoming.glob("*.csv")):
        with path.open(errors="replace") as source:
            for row in csv.DictReader(source):
                if re.fullmatch(r"[\w.+-]+@[\w-]+(\.[\w-]+)+", row.get("customer_email") or ""):
                    return str(row["customer_email"])
    raise AssertionError(f"no sample file with an e-mail in {incoming}")


def _assert_the_dataset_api_serves_what_it_should(stack: DevStack, home: Path, served: str) -> None:
    """datasets-curl's output, then the refusals: 401 without a token, 404 (and an empty listing)
    for a role without dataset grants, as for a dataset that does not exist; 400 naming a bad
    filter or column; and as_of (404 before the first snapshot)."""
    listed = re.search(r"^transactions: (\d+) rows at snapshot (\d+), contract ", served, re.M)
    assert listed and int(listed[1]) > 0, served
    day = re.search(r"^(\d+) rows; (\d+) of (\d+) files planned; more: (True|False)$", served, re.M)
    assert day and 0 < int(day[1]) <= 1000 and int(day[2]) < int(day[3]), served
    assert re.search(r"^5000 rows as Arrow$", served, re.M), served

    api = f"http://127.0.0.1:{stack.api_port}/base-platform/api/datasets"
    admin, ds = ({"Authorization": f"Bearer {_token(stack, user, home)}"} for user in ("admin", "ds"))
    assert httpx.get(api, timeout=30).status_code == 401
    assert httpx.get(f"{api}/transactions/rows", timeout=30).status_code == 401
    assert httpx.get(api, headers=ds, timeout=30).json() == []
    assert httpx.get(f"{api}/transactions/rows", headers=ds, timeout=30).status_code == 404
    assert httpx.get(f"{api}/transactions/schema", headers=ds, timeout=30).status_code == 404
    bad = httpx.get(f"{api}/transactions/rows", headers=admin, params={"filter": "amount>lots"}, timeout=30)
    assert bad.status_code == 400 and "'lots' is not a decimal" in bad.text, bad.text
    bad = httpx.get(f"{api}/transactions/rows", headers=admin, params={"columns": "nope"}, timeout=30)
    assert bad.status_code == 400 and "nope" in bad.text, bad.text
    schema = httpx.get(f"{api}/transactions/schema", headers=admin, timeout=30).json()
    email = next(c for c in schema["columns"] if c["name"] == "customer_email")
    assert (email["classification"], email["protection"]) == ("pii", "hmac")
    pinned = {"as_of": listed[2], "limit": 1}
    then = httpx.get(f"{api}/transactions/rows", headers=admin, params=pinned, timeout=30)
    assert then.status_code == 200 and then.json()["snapshot_id"] == int(listed[2]), then.text
    before = {"as_of": "2020-01-01T00:00:00Z"}  # before the table's first snapshot
    assert httpx.get(f"{api}/transactions/rows", headers=admin, params=before, timeout=30).status_code == 404


def _assert_the_features_api_refuses_what_it_should(stack: DevStack, home: Path) -> None:
    """The features API has the datasets API's auth: 401 without a token, 404 (and an empty
    listing) for a role that may not read transactions, as for no view; 422 without entities."""
    api = f"http://127.0.0.1:{stack.api_port}/base-platform/api/features"
    admin, ds = ({"Authorization": f"Bearer {_token(stack, user, home)}"} for user in ("admin", "ds"))
    online = f"{api}/account_spend/online"
    assert httpx.get(online, params={"entity": "acc-00000001"}, timeout=30).status_code == 401
    assert httpx.get(api, headers=ds, timeout=30).json() == []
    assert httpx.get(online, headers=ds, params={"entity": "acc-00000001"}, timeout=30).status_code == 404
    none = httpx.get(online, headers=admin, timeout=30)
    assert none.status_code == 422 and "entity" in none.text, none.text
    assert (
        httpx.get(f"{api}/nope/online", headers=admin, params={"entity": "a"}, timeout=30).status_code == 404
    )
    unknown = httpx.get(online, headers=admin, params={"entity": "no-such-account"}, timeout=30)
    assert unknown.status_code == 200 and unknown.json()["entities"] == {"no-such-account": None}


def _use_the_stacks_catalog(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from scripts.dev_stack import sqlite_iceberg_connection

    connection = sqlite_iceberg_connection(home / "iceberg.db", home / "warehouse")
    monkeypatch.setenv("AIRFLOW_CONN_ICEBERG_DEFAULT", json.dumps(connection))


def _assert_merchant_daily_matches_duckdb(derived: str, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """derived-curl's run was started by a transactions event, and its snapshot of merchant_daily
    is what DuckDB computes from the transactions snapshot it names."""
    from base_platform.pipelines.data_storage import tables
    from tests.unit.pipelines.test_derived import duckdb_merchant_daily

    found = re.search(r"merchant_daily: (\d+) rows from transactions snapshot (\d+)", derived)
    assert found and re.search(r"^run \S+ \(asset_triggered\): success$", derived, re.M), derived
    _use_the_stacks_catalog(home, monkeypatch)
    table = tables.load("merchant_daily")
    assert table is not None
    (made,) = [r for r in tables.history(table) if (r.lineage or {}).get("transactions") == found[2]]
    rows = table.scan(snapshot_id=made.snapshot_id).to_arrow()
    keys = [("day", "ascending"), ("merchant", "ascending"), ("currency", "ascending")]
    assert rows.num_rows == int(found[1]) > 0
    assert rows.sort_by(keys).to_pylist() == duckdb_merchant_daily(int(found[2]))


def _assert_the_erasure_reached_the_export(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The erasure's event (through the alias) made the scheduler run publish_transactions on its
    own: the erased snapshot is exported, and its manifest says what it replaced."""
    from base_platform.pipelines.data_control import erasure
    from base_platform.pipelines.data_storage import tables

    _use_the_stacks_catalog(home, monkeypatch)
    table = tables.load("transactions")
    assert table is not None
    erased = json.loads(table.properties[erasure.ERASURES_PROPERTY])[-1]["snapshot_id"]
    manifest = home / "data" / "transactions" / "exports" / f"snapshot={erased}" / "_manifest.json"
    deadline = time.monotonic() + 180
    while not manifest.exists():
        assert time.monotonic() < deadline, f"no export of the erased snapshot {erased}"
        time.sleep(3)
    assert json.loads(manifest.read_text())["since_snapshot_id"] is not None


def _assert_the_breaker_stops_a_bad_batch(stack: DevStack, env: dict[str, str], home: Path) -> None:
    """A batch with 30% bad rows: its run fails at the audit and pauses the DAG through the API
    (as the ``breaker`` service user); docs/ci.md's breaker-curl discards it and resumes."""
    from benchmarks.datagen import generate

    generate(2000, "csv", 0.3, home / "data" / "transactions" / "incoming" / "bad-batch", seed=11)
    api = f"http://127.0.0.1:{stack.api_port}/api/v2/dags/pipeline_transactions"
    admin = {"Authorization": f"Bearer {_token(stack, 'admin', home)}"}
    run = httpx.post(f"{api}/dagRuns", headers=admin, json={"logical_date": None, "conf": {}}, timeout=30)
    assert run.status_code == 200, run.text
    deadline = time.monotonic() + 300
    while (
        state := httpx.get(f"{api}/dagRuns/{run.json()['dag_run_id']}", headers=admin).json()["state"]
    ) in (
        "queued",
        "running",
    ):
        assert time.monotonic() < deadline, "the bad batch's run did not finish"
        time.sleep(3)
    assert state == "failed"
    audit = httpx.get(f"{api}/dagRuns/{run.json()['dag_run_id']}/taskInstances/audit", headers=admin).json()
    assert audit["state"] == "failed", audit
    while not httpx.get(api, headers=admin, timeout=30).json()["is_paused"]:  # the failure callback's
        assert time.monotonic() < deadline, "the tripped pipeline was not paused"
        time.sleep(2)
    resolved = _run_block("breaker-curl", env)
    assert re.search(
        r"^transactions: breaker open, paused True: quarantine rate \d+\.\d% \(\d+ of \d+ rows\) is above",
        resolved,
        re.M,
    ), resolved
    assert "pipeline_transactions paused: False" in resolved, resolved


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.timeout(900)  # starts the stack twice and deploys through it
def test_make_run_serves_the_ui_runs_the_readme_curl_and_stops_cleanly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = DevStack(tmp_path / "home")
    try:
        stack.wait_ready()
        assert stack.password and len(stack.child_pids) == 7  # 2 simulators, the streams' Redis, 4 Airflow
        ui = httpx.get(f"http://127.0.0.1:{stack.api_port}/", timeout=10)
        assert ui.status_code == 200
        env = os.environ | {
            "AIRFLOW": f"http://127.0.0.1:{stack.api_port}",
            "AIRFLOW_PASSWORD": stack.password,
        }
        smoke = _run_block("smoke-curl", env)
        assert "success" in smoke
        _assert_bad_params_are_a_400(stack)
        deploy = _run_block("deploy-curl", env)
        assert "verdict: OK" in deploy and "vault" in deploy
        validate = _run_block("validate-curl", env)
        assert "Platform validation: HEALTHY" in validate and "vault_health" in validate
        pipeline = _run_block("pipeline-curl", env)
        assert re.search(r"rows in 20000 = stored \d+ \+ quarantined [1-9]\d*; [1-9]\d* files", pipeline), (
            pipeline
        )
        published = _run_block("publish-curl", env)
        exports = tmp_path / "home" / "data" / "transactions" / "exports"
        first = re.search(r"exports: snapshot (\d+)", published)
        assert first and (exports / f"snapshot={first[1]}" / "_manifest.json").exists(), published
        derived = _run_block("derived-curl", env)
        _assert_merchant_daily_matches_duckdb(derived, tmp_path / "home", monkeypatch)
        stream_env = env | {
            "BASE_DEV_HOME": str(tmp_path / "home"),
            "BASE_STREAMS_REDIS_PORT": str(stack.stack.streams_port),
            "TMPDIR": str(tmp_path),
        }
        streamed = _run_block("stream-curl", stream_env)
        assert re.search(r"card_events (\d+) \(of \1 good events\)", streamed), streamed
        media = _run_block("media-curl", stream_env)
        assert len(re.findall(r"^\w+: \d+ rows of 50 files \(\d unreadable\)$", media, re.M)) == 4, media
        assert len(re.findall(r"'language': '(en|de|fr)'", media)) == 2, media
        served = _run_block("datasets-curl", env | {"TMPDIR": str(tmp_path)})
        overview = {row["dataset"]: row for row in json.loads(_run_block("readme-overview", env))}
        assert {row["breaker"]["state"] for row in overview.values()} == {"closed"}, overview
        features = _run_block("features-curl", env)
        assert re.search(r"account_spend: 18 features and 1 labels of transactions per account_id", features)
        assert len(re.findall(r"^acc-\d+: 30d -?\d+\.\d\d in [1-9]\d* payments", features, re.M)) == 3, (
            features
        )
        readme = json.loads(_run_block("readme-datasets", env))
        assert readme["rows"] and set(readme["rows"][0]) == {"transaction_id", "amount"}, readme
        _assert_the_dataset_api_serves_what_it_should(stack, tmp_path / "home", served)
        _assert_the_features_api_refuses_what_it_should(stack, tmp_path / "home")
        replay_env = env | {
            "AIRFLOW_CONN_VAULT_DEFAULT": vault_conn_uri(stack.vault_port),
            "BASE_PIPELINES_ROOT": str(tmp_path / "home"),
            "TMPDIR": str(tmp_path),
        }
        replayed = _run_block("quarantine-replay", replay_env)
        lines = replayed.splitlines()
        assert any(line.startswith("transaction_id,") and "_reason" in line for line in lines), replayed
        assert "@example.com" in replayed  # unsealed for whoever may read the key in Vault
        replay_file = Path(replayed.strip().splitlines()[-1])
        assert "/data/transactions/incoming/replay-fix-1-" in str(replay_file) and replay_file.exists()
        # its rows are the unfixed quarantined ones: the next run (the hourly one, if the clock
        # strikes) quarantines them all, its breaker trips and pauses the pipeline, as it should
        replay_file.unlink()
        _run_dataset_blocks(stack, replay_env, tmp_path / "home")
        _assert_the_erasure_reached_the_export(tmp_path / "home", monkeypatch)
        ctl = _run_block("platformctl", env)
        assert "cert-manager" in ctl and "deployed" in ctl and "Platform validation: HEALTHY" in ctl
        _assert_platform_page_access_and_metrics(stack, tmp_path / "home")
        _assert_each_role_sees_its_tabs_in_chromium(stack, tmp_path / "home", tmp_path)
        _assert_the_breaker_stops_a_bad_batch(stack, env, tmp_path / "home")
        _assert_no_credentials_in_logs(tmp_path / "home" / "logs")
        _assert_no_protected_value_written(tmp_path / "home")
    finally:
        assert stack.ctrl_c() == 0
    time.sleep(1)
    assert [pid for pid in stack.child_pids if _alive(pid)] == []

    again = DevStack(tmp_path / "home")  # a second `make run` on the same home works
    try:
        again.wait_ready()
        assert again.password == stack.password
    finally:
        assert again.ctrl_c() == 0
