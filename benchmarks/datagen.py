"""Sample ``transactions`` data with realistic faults, generated vectorised so gigabytes take seconds.

The ``transactions`` profile of :mod:`base_platform.pipelines.data_control.synthesizer` (whose
writer it uses), with the distributions the throughput benchmark has always measured.

``python -m benchmarks.datagen --rows N --format csv|ndjson --corrupt-rate R --out DIR``

Faults, each on its own rows: bad dates, non-numeric amounts, unknown currencies, missing ids,
duplicate ids and invalid UTF-8 bytes. Quoted commas and newlines in ``memo`` are valid CSV and
must be stored, not quarantined. ``DIR/_datagen.json`` records what was injected, so tests can
check that the quarantine holds exactly the corrupt rows.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from base_platform.pipelines.data_control.synthesizer import BAD_UTF8_MARK, Summary, encode

FAULTS = ("bad_date", "bad_amount", "unknown_currency", "missing_id", "duplicate_id", "invalid_utf8")
CURRENCIES = ["EUR", "USD", "GBP", "CHF", "SEK", "NOK", "DKK", "PLN", "JPY", "CAD"]
COUNTRIES = ["DE", "FR", "NL", "GB", "US", "CH", "SE", "NO", "DK", "PL", "JP", "CA", "ES", "IT"]
MERCHANT_CATEGORIES = {  # the merchants reference's rows for these (feature view account_spend)
    "Acme Grocers": "grocery",
    "Nordic Fuel": "fuel",
    "Cafe Central": "dining",
    "Book Nook": "retail",
    "Metro Transit": "travel",
    "City Pharmacy": "retail",
}
MERCHANTS = list(MERCHANT_CATEGORIES)
MEMOS = ["", "", "", "monthly subscription", "refund, partial", 'said "thanks"', "split\nbill", "gift"]
CHANNELS = ["online", "pos", "atm", "transfer"]
STATUSES = ["approved", "approved", "approved", "declined", "reversed"]
EPOCH_2026_11_20 = 1_795_132_800


def _choice(rng: np.random.Generator, values: list[str], n: int) -> pa.Array:
    return pa.array(np.asarray(values, dtype=object)[rng.integers(0, len(values), n)], pa.string())


def _prefixed(prefix: str, numbers: np.ndarray, width: int) -> pa.Array:
    return pc.binary_join_element_wise(
        prefix, pc.utf8_lpad(pa.array(numbers).cast(pa.string()), width, "0"), ""
    )


def _amounts(rng: np.random.Generator, n: int) -> pa.Array:
    cents = rng.lognormal(7.5, 1.4, n).astype(np.int64) * np.where(rng.random(n) < 0.03, -1, 1)
    whole = pa.array(np.abs(cents) // 100).cast(pa.string())
    frac = pc.utf8_lpad(pa.array(np.abs(cents) % 100).cast(pa.string()), 2, "0")
    text = pc.binary_join_element_wise(whole, frac, ".")
    return pc.if_else(pa.array(cents < 0), pc.binary_join_element_wise("-", text, ""), text)


def clean_chunk(rng: np.random.Generator, start: int, n: int) -> dict[str, pa.Array]:
    ids = np.arange(start, start + n)
    seconds = EPOCH_2026_11_20 + rng.integers(0, 5 * 86_400, n)
    times = pc.strftime(pa.array(seconds.astype("datetime64[s]")), format="%Y-%m-%dT%H:%M:%SZ")
    customers = rng.integers(0, 2_000_000, n)
    return {
        "transaction_id": _prefixed("tx-", ids, 12),
        "account_id": _prefixed("acc-", rng.integers(0, 500_000, n), 8),
        "event_time": times,
        "amount": _amounts(rng, n),
        "currency": _choice(rng, CURRENCIES, n),
        "merchant": _choice(rng, MERCHANTS, n),
        "merchant_country": _choice(rng, COUNTRIES, n),
        "channel": _choice(rng, CHANNELS, n),
        "customer_email": pc.binary_join_element_wise(_prefixed("user", customers, 7), "example.com", "@"),
        "customer_phone": _prefixed("+4915", customers, 9),
        "card_last4": pc.utf8_lpad(pa.array(rng.integers(0, 10_000, n)).cast(pa.string()), 4, "0"),
        "status": _choice(rng, STATUSES, n),
        "memo": _choice(rng, MEMOS, n),
    }


def _set(columns: dict[str, pa.Array], name: str, rows: np.ndarray, values: pa.Array | str) -> None:
    mask = np.zeros(len(columns[name]), dtype=bool)
    mask[rows] = True
    columns[name] = pc.if_else(pa.array(mask), values, columns[name])


def corrupt(rng: np.random.Generator, columns: dict[str, pa.Array], rate: float, summary: Summary) -> None:
    """Each fault on its own rows; duplicates copy an id from a clean row of the same chunk."""
    n = len(columns["transaction_id"])
    picked = rng.permutation(n)[: int(n * rate)]
    groups = np.array_split(picked, len(FAULTS))
    taken = set(picked.tolist())
    clean = np.array(
        [i for i in range(min(n, len(picked) * 4 + 16)) if i not in taken][: max(1, len(picked))]
    )
    for fault, rows in zip(FAULTS, groups, strict=True):
        if not len(rows):
            continue
        summary.faults[fault] += len(rows)
        if fault == "bad_date":
            _set(columns, "event_time", rows, "2026-13-45T99:61:00Z")
        elif fault == "bad_amount":
            _set(columns, "amount", rows, "12,50 EUR")
        elif fault == "unknown_currency":
            _set(columns, "currency", rows, "XYZ")
        elif fault == "missing_id":
            _set(columns, "transaction_id", rows, "")
        elif fault == "duplicate_id":
            sources = clean[rng.integers(0, len(clean), len(rows))]
            copied = np.arange(n)
            copied[rows] = sources
            columns["transaction_id"] = pc.take(columns["transaction_id"], pa.array(copied))
        else:
            _set(columns, "memo", rows, BAD_UTF8_MARK)


ID_BLOCK = 1_000_000_000  # transaction ids per seed


def generate(
    rows: int,
    fmt: str,
    corrupt_rate: float,
    out: Path,
    files: int = 1,
    seed: int = 7,
    first_id: int | None = None,
    prefix: str = "transactions",
) -> Summary:
    """``rows`` transactions in ``files`` files named ``<prefix>-NNNN``, ids from ``first_id``, by
    default a block of a billion per ``seed``: a later drop of the same feed (another seed) takes
    new ids, as a real feed does, and the same seed sends the same transactions again."""
    first_id = seed * ID_BLOCK if first_id is None else first_id
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    summary = Summary(rows=rows, faults=dict.fromkeys(FAULTS, 0))
    per_file = -(-rows // files)
    chunk_rows = 500_000
    for index in range(files):
        first, last = index * per_file, min(rows, (index + 1) * per_file)
        path = out / f"{prefix}-{index:04d}.{fmt}"
        with path.open("wb") as sink:
            for start in range(first, last, chunk_rows):
                columns = clean_chunk(rng, first_id + start, min(chunk_rows, last - start))
                corrupt(rng, columns, corrupt_rate, summary)
                sink.write(encode(columns, fmt, header=start == first))
        summary.files.append(path.name)
        summary.bytes += path.stat().st_size
    (out / "_datagen.json").write_text(json.dumps(asdict(summary) | {"corrupt": summary.corrupt}, indent=2))
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--format", choices=("csv", "ndjson"), default="csv")
    parser.add_argument("--corrupt-rate", type=float, default=0.01)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--files", type=int, default=1)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    if not 0 <= args.corrupt_rate <= 1 or args.rows < 1 or args.files < 1:
        parser.error("need --rows >= 1, --files >= 1 and 0 <= --corrupt-rate <= 1")
    summary = generate(args.rows, args.format, args.corrupt_rate, args.out, args.files, args.seed)
    size = f"{summary.bytes / 1e6:.1f} MB in {len(summary.files)} file(s)"
    print(f"{summary.rows} rows, {size}, {summary.corrupt} corrupt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
