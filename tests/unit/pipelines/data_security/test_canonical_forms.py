"""A quarantined value is hashed in the same canonical form as a stored one, whichever way it
is computed: a column at once, or one value at a time (bytes that are not UTF-8 included)."""

from __future__ import annotations

import hashlib
import hmac

import pyarrow as pa
from hypothesis import given
from hypothesis import strategies as st

from base_platform.pipelines.data_security import protection
from base_platform.pipelines.spec import Protection

KEY = b"k"
VALUES = st.lists(
    st.one_of(
        st.none(),
        st.binary(max_size=12),
        st.text(max_size=16).map(str.encode),
        st.sampled_from([b" Ann@Example.COM ", b"+49 (151) 123-4567", b"0049 151 1234567", b"\xff\xfe@x"]),
    ),
    max_size=20,
)


@given(values=VALUES, kind=st.sampled_from(["email", "phone", None]))
def test_a_quarantined_column_is_hashed_as_its_values_one_by_one(
    values: list[bytes | None], kind: str | None
) -> None:
    rule = Protection(classification="pii", protect="hmac", canonical=kind)
    expected: list[bytes | None] = []
    for value in values:
        if value is None:
            expected.append(None)
            continue
        try:
            form = protection.canonical_text(value.decode(), kind).encode()
        except UnicodeDecodeError:
            form = value
        expected.append(hmac.new(KEY, form, hashlib.sha256).digest())
    assert protection.protect_raw(values, rule, KEY) == expected


def test_a_stored_and_a_quarantined_address_share_one_pseudonym() -> None:
    rule = Protection(classification="pii", protect="hmac", canonical="email")
    stored = protection.canonical(pa.array(["ann@example.com"]), "email")[0].as_py().encode()
    quarantined = protection.protect_raw([b" ANN@Example.com"], rule, KEY)
    assert quarantined == [hmac.new(KEY, stored, hashlib.sha256).digest()]
