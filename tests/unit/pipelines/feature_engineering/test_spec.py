"""A bad feature definition fails at load, naming the file and the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from base_platform.catalog.loader import CONFIG_DIR, CatalogError
from base_platform.pipelines.feature_engineering.views import feature_view_named, load_feature_view
from base_platform.pipelines.spec import load_pipelines

GOOD = yaml.safe_load((CONFIG_DIR / "features" / "account_spend.yaml").read_text())


def load(tmp_path: Path, change: dict[str, Any]) -> Any:
    path = tmp_path / "account_spend.yaml"
    path.write_text(yaml.safe_dump(GOOD | change))
    return load_feature_view(path, {p.spec.name: p for p in load_pipelines()})


def test_the_shipped_view_loads_with_its_features_named_by_column_function_and_window() -> None:
    view = feature_view_named("account_spend")
    assert view.feature_names[:3] == ["amount_sum_1h", "amount_count_1h", "amount_mean_1h"]
    assert "merchant_category_distinct_count_30d" in view.feature_names
    assert view.lookback_seconds == 30 * 86_400 and view.lookahead_seconds == 7 * 86_400


@pytest.mark.parametrize(
    ("change", "key", "message"),
    [
        ({"entity": "acount_id"}, "entity", "'acount_id' is not a column of transactions"),
        ({"source": {"dataset": "payments", "timestamp": "event_time"}}, "source.dataset", "unknown dataset"),
        (
            {"source": {"dataset": "transactions", "timestamp": "amount"}},
            "source.timestamp",
            "must be a timestamp",
        ),
        (
            {"aggregations": [{"column": "merchant", "functions": ["sum"], "windows": ["1h"]}]},
            "aggregations[0].functions",
            "sum and mean need a number; merchant is string",
        ),
        (
            {"aggregations": [{"column": "amount", "functions": ["sum"], "windows": ["2w"]}]},
            "aggregations[0].windows",
            "'2w' is not a duration",
        ),
        (
            {"aggregations": [{"column": "amount", "functions": ["median"], "windows": ["1h"]}]},
            "aggregations[0].functions[0]",
            "Input should be 'sum', 'count', 'mean' or 'distinct_count'",
        ),
        (
            {
                "categories": [
                    {
                        "column": "merchant",
                        "reference": "merchants",
                        "key": "name",
                        "value": "category",
                        "name": "c",
                    }
                ]
            },
            "categories[0].key",
            "not a column of merchants",
        ),
        (
            {"labels": [{"name": "x", "window": "7d", "where": {"customer_emial": ["a"]}}]},
            "labels[0].where.customer_emial",
            "not a column of transactions",
        ),
        (
            {"labels": [{"name": "amount_sum_1h", "window": "7d", "where": {"status": ["reversed"]}}]},
            "(root)",
            "repeat",
        ),
        ({"online": True}, "online", "Extra inputs are not permitted"),
    ],
)
def test_a_bad_definition_names_file_and_key(
    tmp_path: Path, change: dict[str, Any], key: str, message: str
) -> None:
    with pytest.raises(CatalogError) as error:
        load(tmp_path, change)
    assert error.value.key == key and message in str(error.value), str(error.value)
    assert error.value.path == str(tmp_path / "account_spend.yaml")


def test_a_view_named_unlike_its_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="name: must match the file name"):
        load(tmp_path, {"name": "spend"})
