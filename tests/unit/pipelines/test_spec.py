"""Pipeline specs and contracts: the shipped ones load, and every error names the file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from base_platform.catalog.loader import CONFIG_DIR, CatalogError
from base_platform.pipelines.spec import (
    Contract,
    FileSource,
    classify_change,
    load_pipeline,
    load_pipelines,
    pipeline_named,
)

CONTRACT = """name: t
version: 1.0.0
primary_key: [id]
columns:
  - {name: id, type: string, nullable: false}
  - {name: amount, type: "decimal(18,2)"}
"""
SPEC = """name: t
contract: t
source: {uri: in, format: csv}
storage: {uri: out}
"""


def write(tmp_path: Path, spec: str = SPEC, contract: str = CONTRACT) -> Path:
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "contracts").mkdir()
    (tmp_path / "contracts" / "t.yaml").write_text(contract)
    path = tmp_path / "pipelines" / "t.yaml"
    path.write_text(spec)
    return path


def test_the_transactions_pipeline_ships_and_protects_its_pii() -> None:
    names = [p.spec.name for p in load_pipelines()]
    assert names == sorted(path.stem for path in (CONFIG_DIR / "pipelines").glob("*.yaml"))
    assert {"transactions", "merchant_daily", "card_events", "account_spend_5m"} <= set(names)
    pipeline = pipeline_named("transactions")
    assert pipeline.contract.primary_key == ("transaction_id",)
    protections = pipeline.spec.security.columns
    assert {n: p.protect for n, p in protections.items() if p.classification == "pii"} == {
        "customer_email": "hmac",
        "customer_phone": "hmac",
    }
    assert protections["card_last4"].classification == "sensitive"
    assert pipeline.contract.column("amount").decimal == (18, 2)


@pytest.mark.parametrize(
    ("spec", "contract", "where", "message"),
    [
        (
            SPEC.replace("csv", "xml"),
            CONTRACT,
            "pipelines/t.yaml: source.format",
            "'csv', 'ndjson' or 'parquet'",
        ),
        (
            SPEC + "quality: [{rule: range, column: nope, min: 0}]\n",
            CONTRACT,
            "pipelines/t.yaml: quality[0]",
            "nope",
        ),
        (SPEC + "quality: [{rule: often, column: id}]\n", CONTRACT, "pipelines/t.yaml: quality[0]", "often"),
        (
            SPEC
            + "quality: [{rule: unique, columns: [id]}]\n"
            + "security: {columns: {id: {classification: pii, protect: hmac}}}\n",
            CONTRACT,
            "pipelines/t.yaml: quality[0]",
            "stored as hmac",
        ),
        (
            SPEC + "security: {columns: {id: {classification: pii}}}\n",
            CONTRACT,
            "pipelines/t.yaml: security.columns.id",
            "needs a protection",
        ),
        (
            SPEC + "security: {transit_key: 'a b', columns: {id: {classification: pii, protect: encrypt}}}\n",
            CONTRACT,
            "pipelines/t.yaml: security.transit_key",
            "pattern",
        ),
        (
            SPEC,
            CONTRACT.replace("decimal(18,2)", "money"),
            "contracts/t.yaml: columns[1] (amount).type",
            "unknown type",
        ),
        (SPEC, CONTRACT.replace("nullable: false", "nullable: true"), "contracts/t.yaml: (root)", "nullable"),
        (SPEC.replace("name: t", "name: u"), CONTRACT, "pipelines/t.yaml: name", "file name"),
        (
            SPEC
            + "distribution: [{target: s3, name: a, uri: x}, {target: webhook, name: a, http_conn_id: h}]\n",
            CONTRACT,
            "pipelines/t.yaml: distribution",
            "unique",
        ),
        (
            SPEC + "distribution: [{target: kafka, name: a}]\n",
            CONTRACT,
            "pipelines/t.yaml: distribution[0]",
            "postgres",
        ),
        (
            SPEC
            + "security: {columns: {amount: {classification: sensitive, protect: encrypt}}}\n"
            + "distribution: [{target: postgres, name: w, conn_id: c, table: s.t}]\n",
            CONTRACT,
            "pipelines/t.yaml: distribution[0]",
            "amount are encrypted",
        ),
        (
            SPEC.replace("{uri: in, format: csv}", "{kind: ftp, uri: in}"),
            CONTRACT,
            "pipelines/t.yaml: source",
            "'files', 'http', 'postgres'",
        ),
        (
            SPEC.replace("{uri: in, format: csv}", "{kind: postgres, table: s.t, cursor: nope}"),
            CONTRACT,
            "pipelines/t.yaml: source.cursor",
            "unknown column 'nope'",
        ),
        (
            SPEC.replace("{uri: in, format: csv}", "{kind: postgres, table: s.t, cursor: id}"),
            CONTRACT,
            "pipelines/t.yaml: source.cursor",
            "must be a required timestamp or date or int64 column",
        ),
        (
            SPEC.replace("{uri: in, format: csv}", "{kind: postgres, table: 'x; DROP', cursor: id}"),
            CONTRACT,
            "pipelines/t.yaml: source.table",
            "pattern",
        ),
        (
            SPEC.replace(
                "{uri: in, format: csv}",
                "{kind: http, connection: api, path: /v1, pagination: {type: cursor}, cursor: id}",
            ),
            CONTRACT,
            "pipelines/t.yaml: source",
            "needs both `cursor` and `cursor_param`",
        ),
        (SPEC + "inputs: [u]\n", CONTRACT, "pipelines/t.yaml", "needs `inputs` and a `transform`"),
        (
            "name: t\ncontract: t\nstorage: {uri: out}\ninputs: [u]\ntransform: SELECT 1\nschedule: '@daily'",
            CONTRACT,
            "pipelines/t.yaml",
            "runs when its inputs change: it has no `schedule`",
        ),
    ],
)
def test_a_bad_spec_or_contract_names_the_file_and_key(
    tmp_path: Path, spec: str, contract: str, where: str, message: str
) -> None:
    path = write(tmp_path, spec, contract)
    with pytest.raises(CatalogError) as error:
        load_pipeline(path)
    assert f"{tmp_path}/{where}" in str(error.value) and message in str(error.value), str(error.value)


def contract(columns: str, key: str = "[id]") -> Contract:
    import yaml

    return Contract.model_validate(
        yaml.safe_load(f"name: t\nversion: 1.0.0\nprimary_key: {key}\ncolumns: {columns}")
    )


BASE = "[{name: id, type: string, nullable: false}, {name: a, type: int64}]"


@pytest.mark.parametrize(
    ("new", "key", "verdict", "reason"),
    [
        (BASE[:-1] + ", {name: b, type: string}]", "[id]", "compatible", "column b added (nullable)"),
        ("[{name: id, type: string, nullable: false}]", "[id]", "breaking", "column a removed"),
        (BASE.replace("int64", "string"), "[id]", "breaking", "column a type int64 -> string"),
        (BASE.replace("type: int64", "type: int64, nullable: false"), "[id]", "breaking", "became required"),
        (
            BASE[:-1] + ", {name: b, type: string, nullable: false}]",
            "[id]",
            "breaking",
            "new column b is required",
        ),
        (BASE.replace("type: int64", "type: int64, nullable: false"), "[id, a]", "breaking", "primary key"),
    ],
)
def test_a_new_contract_version_is_classified(new: str, key: str, verdict: str, reason: str) -> None:
    found, reasons = classify_change(contract(BASE), contract(new, key))
    assert found == verdict and any(reason in r for r in reasons), reasons


DERIVED = "name: {name}\ncontract: t\nstorage: {{uri: {name}}}\ninputs: {inputs}\ntransform: SELECT 1\n"
OPERATOR = "name: t\ncontract: t\nstorage: {{uri: t}}\ninputs: [u]\n{operator}\n"
SOURCE = SPEC.replace("name: t", "name: u")


@pytest.mark.parametrize(
    ("specs", "where", "message"),
    [
        ({"t": DERIVED.format(name="t", inputs="[nope]")}, "t.yaml: inputs[0]", "unknown dataset 'nope'"),
        (
            {"t": DERIVED.format(name="t", inputs="[u]"), "u": DERIVED.format(name="u", inputs="[t]")},
            "t.yaml: inputs",
            "inputs form a cycle: t -> u -> t",
        ),
        (
            {
                "t": DERIVED.format(name="t", inputs="[u]"),
                "u": SPEC.replace("name: t", "name: u")
                + "security: {columns: {amount: {classification: sensitive, protect: encrypt}}}\n",
            },
            "t.yaml: inputs[0]",
            "u has encrypted columns (amount), which a transform cannot read",
        ),
        (
            {"t": OPERATOR.format(operator="route: {field: kind, value: x}"), "u": SOURCE},
            "t.yaml: route.field",
            "u has no column 'kind'",
        ),
        (
            {"t": OPERATOR.format(operator="join: {dataset: v, key: id, columns: [id]}"), "u": SOURCE},
            "t.yaml: join.dataset",
            "unknown dataset 'v'",
        ),
        (
            {
                "t": OPERATOR.format(
                    operator="window: {key: id, time: id, size_minutes: 5, aggregates: {n: 'COUNT(*)'}}"
                ),
                "u": SOURCE,
            },
            "t.yaml: window",
            "the contract's columns must be ['id', 'n', 'window_end', 'window_start']",
        ),
        (
            {"t": OPERATOR.format(operator="route: {field: id, value: x}\ntransform: SELECT 1"), "u": SOURCE},
            "t.yaml",
            "a `transform` or stream operators, not both",
        ),
        (
            {
                "t": OPERATOR.format(operator="route: {field: id, value: x}"),
                "u": SOURCE + "security: {columns: {amount: {classification: pii, protect: hmac}}}\n",
            },
            "t.yaml: contract",
            "u stores ['amount'] as HMAC digests, not text",
        ),
    ],
)
def test_inputs_are_checked_across_the_specs(
    tmp_path: Path, specs: dict[str, str], where: str, message: str
) -> None:
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "contracts").mkdir()
    (tmp_path / "contracts" / "t.yaml").write_text(CONTRACT)
    for name, text in specs.items():
        (tmp_path / "pipelines" / f"{name}.yaml").write_text(text)
    with pytest.raises(CatalogError) as error:
        load_pipelines.__wrapped__(tmp_path)
    assert f"pipelines/{where}" in str(error.value) and message in str(error.value), str(error.value)


def test_a_derived_spec_reads_its_results_from_its_own_folder() -> None:
    spec = pipeline_named("merchant_daily").spec
    assert spec.inputs == ("transactions",) and spec.schedule is None
    assert isinstance(spec.source, FileSource)
    assert (spec.source.uri, spec.source.format) == ("data/merchant_daily/derived", "parquet")
    with pytest.raises(
        KeyError, match=r"no pipeline 'nope' in config/pipelines \(there are \['account_spend_5m"
    ):
        pipeline_named("nope")
