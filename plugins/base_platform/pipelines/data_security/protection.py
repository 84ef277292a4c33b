"""Security: PII and sensitive columns are protected before anything is written.

``hmac`` is HMAC-SHA256 with a key from Vault KV, stored as its 32 raw bytes, so equal inputs still join;
``mask`` keeps the last characters; ``drop`` removes the column from what is stored;
``encrypt`` stores the column with Parquet modular encryption (AES-GCM): pyarrow generates the
data keys and Vault transit wraps them (envelope encryption), so no key is ever stored plain.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from base_platform.pipelines.data_security import hashing
from base_platform.pipelines.spec import Protection, Security


def load_key(security: Security) -> bytes | None:
    """The pipeline's secret from Vault KV (``path#key`` under ``vault_default``'s mount): the HMAC
    key, from which the quarantine's seal key is derived too; None when no column is protected."""
    if not protects_anything(security):
        return None
    from base_platform.vault.client import read_secret

    secret_path, _, key = security.hmac_key.partition("#")
    return read_secret(secret_path, key).encode()


def mask(values: pa.Array, keep_last: int) -> pa.Array:
    tail = (
        pc.utf8_slice_codeunits(values, start=-keep_last)
        if keep_last
        else pc.utf8_slice_codeunits(values, 0, 0)
    )
    hidden = pc.binary_repeat("*", pc.max_element_wise(pc.subtract(pc.utf8_length(values), keep_last), 0))
    return pc.binary_join_element_wise(hidden, tail, "")


PHONE_LIKE = r"^\s*\+?\(?[0-9][0-9 ().\-/]{5,}[0-9]\s*$"  # at least 7 digits and separators


def canonical(values: pa.Array, kind: str | None) -> pa.Array:
    """The form a value is hashed in: an e-mail trimmed and lower-cased, a phone number's digits
    and leading ``+``; anything else as it is. Protecting and erasing both use it."""
    if kind == "email":  # ASCII (nearly every address) in a tenth of the time of the UTF-8 kernels
        if pc.all(pc.string_is_ascii(values)).as_py() is not False:
            return pc.ascii_lower(pc.ascii_trim_whitespace(values))
        return pc.utf8_lower(pc.utf8_trim_whitespace(values))
    if kind == "phone":  # only what looks like a number: "1" in an amount is no phone
        if pc.all(pc.match_substring_regex(values, r"^\+?[0-9]+$")).as_py() is not False:
            return values  # canonical already: digits, and a leading + at most
        digits = pc.replace_substring_regex(values, r"[^0-9]", "")
        international = pc.or_(
            pc.starts_with(pc.utf8_trim_whitespace(values), "+"), pc.starts_with(digits, "00")
        )
        plus = pc.binary_join_element_wise("+", pc.replace_substring_regex(digits, r"^00", ""), "")
        canonical = pc.if_else(international, plus, digits)
        return pc.if_else(pc.match_substring_regex(values, PHONE_LIKE), canonical, values)
    return values


def canonical_text(value: str, kind: str | None) -> str:
    """:func:`canonical` of one value."""
    found: str = canonical(pa.array([value], pa.string()), kind)[0].as_py()
    return found


def each_value_hmac(values: pa.Array, protection: Protection, key: bytes) -> pa.ListArray:
    """A multi-value column (``separator``) as the list of its values' digests, each value
    canonical alone: one person's address among others still matches their pseudonym."""
    assert protection.separator is not None
    parts = pc.split_pattern(values, protection.separator)
    flat = canonical(pc.utf8_trim_whitespace(parts.flatten()), protection.canonical)
    digests = hashing.hmac_sha256({"value": flat}, key)["value"]
    return pa.ListArray.from_arrays(
        parts.offsets, digests, type=stored_type(protection), mask=parts.is_null()
    )


def stored_type(protection: Protection) -> pa.DataType:
    """What an HMAC column stores: a digest, or a multi-value column's list of them."""
    return pa.list_(hashing.DIGEST) if protection.separator else hashing.DIGEST


def protect_column(values: pa.Array, protection: Protection) -> pa.Array | None:
    """The stored form of a column, or None when it is dropped.

    ``encrypt`` columns are encrypted by the Parquet writer (see file_encryption) and ``hmac``
    columns are hashed together, per batch, in :func:`protect`.
    """
    if protection.protect == "drop":
        return None
    if protection.protect == "mask":
        return mask(values, protection.keep_last)
    return values


def protect(batch: pa.RecordBatch, security: Security, key: bytes | None) -> pa.RecordBatch:
    """The batch as it may be stored: protected columns replaced, dropped ones gone."""
    hashed = {
        name: protection
        for name, protection in security.columns.items()
        if protection.protect == "hmac" and name in batch.schema.names
    }
    digests: dict[str, pa.Array] = {}
    if hashed:
        if key is None:
            raise ValueError("hmac needs a key")
        single = {
            name: canonical(batch.column(name), p.canonical) for name, p in hashed.items() if not p.separator
        }
        digests = hashing.hmac_sha256(single, key) if single else {}
        for name, rule in hashed.items():
            if rule.separator:
                digests[name] = each_value_hmac(batch.column(name), rule, key)
    names, arrays = [], []
    for name in batch.schema.names:
        protection = security.columns.get(name)
        values = batch.column(name) if protection is None else protect_column(batch.column(name), protection)
        if values is not None:
            names.append(name)
            arrays.append(digests.get(name, values))
    return pa.RecordBatch.from_arrays(arrays, names=names)


def protected_schema(schema: pa.Schema, security: Security) -> pa.Schema:
    """What protection does to the contract's schema: hmac stores 32 bytes, mask a string, drop nothing."""
    fields = []
    for field in schema:
        protection = security.columns.get(field.name)
        if protection is None or protection.protect in ("none", "encrypt"):
            fields.append(field)
        elif protection.protect != "drop":
            stored = stored_type(protection) if protection.protect == "hmac" else pa.string()
            fields.append(pa.field(field.name, stored, nullable=field.nullable))
    return pa.schema(fields)


def _kms_client_class() -> type:
    import pyarrow.parquet.encryption as pe

    class VaultTransitKms(pe.KmsClient):  # type: ignore[misc]
        """pyarrow's KMS interface over Vault transit: wrap and unwrap Parquet key-encryption keys."""

        def __init__(self, config: pe.KmsConnectionConfig) -> None:
            super().__init__()

        def wrap_key(self, key_bytes: bytes, master_key_identifier: str) -> str:
            from base_platform.vault.client import transit_encrypt

            return transit_encrypt(master_key_identifier, key_bytes)

        def unwrap_key(self, wrapped_key: str, master_key_identifier: str) -> bytes:
            from base_platform.vault.client import transit_decrypt

            return transit_decrypt(master_key_identifier, wrapped_key)

    return VaultTransitKms


def _crypto() -> tuple[Any, Any]:
    import pyarrow.parquet.encryption as pe

    kms = _kms_client_class()
    return pe.CryptoFactory(lambda config: kms(config)), pe.KmsConnectionConfig()


def file_encryption(security: Security) -> Callable[[], Any] | None:
    """New Parquet encryption properties for each data file of the ``encrypt`` columns, or None.

    Each file gets its own data keys (Parquet refuses properties used for another file); Vault
    transit wraps them. The footer stays plaintext, so row counts read without a key.
    """
    if not security.encrypted:
        return None
    import pyarrow.parquet.encryption as pe

    factory, connection = _crypto()
    config = pe.EncryptionConfiguration(
        footer_key=security.transit_key,
        column_keys={security.transit_key: security.encrypted},
        encryption_algorithm="AES_GCM_V1",
        plaintext_footer=True,
    )
    return lambda: factory.file_encryption_properties(connection, config)


def decryption_properties() -> Any:
    """For readers of encrypted columns (anyone with decrypt on the transit key)."""
    import pyarrow.parquet.encryption as pe

    factory, connection = _crypto()
    return factory.file_decryption_properties(connection, pe.DecryptionConfiguration())


SEAL_INFO = b"base-platform/quarantine-seal/v1"
NONCE_BYTES = 12


def protects_anything(security: Security) -> bool:
    return any(p.protect != "none" or p.classification != "public" for p in security.columns.values())


def seal_key(key: bytes) -> bytes:
    """The AES-256 key that seals quarantined raw records, derived from the pipeline's secret.

    HKDF with its own ``info`` keeps it apart from the HMAC key it starts from: whoever may read
    the secret in Vault may unseal, and nobody else.
    """
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=SEAL_INFO).derive(key)


def seal(records: list[dict[str, str | None]], key: bytes) -> list[bytes]:
    """Each record as AES-GCM (a random nonce, then the ciphertext and tag) of its JSON."""
    import json
    import os

    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    aead = AESGCM(seal_key(key))
    sealed = []
    for record in records:
        nonce = os.urandom(NONCE_BYTES)
        sealed.append(nonce + aead.encrypt(nonce, json.dumps(record, sort_keys=True).encode(), SEAL_INFO))
    return sealed


def unseal(sealed: bytes, key: bytes) -> dict[str, str | None]:
    """A sealed record back, for an authorised reader.

    ``python -m base_platform.pipelines.data_storage.quarantine`` uses it.
    """
    import json

    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    plain = AESGCM(seal_key(key)).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], SEAL_INFO)
    record: dict[str, str | None] = json.loads(plain)
    return record


def protect_raw(values: list[bytes | None], protection: Protection, key: bytes | None) -> list[bytes | None]:
    """A quarantined column's raw values as curated rows store them: HMAC, masked, or nothing
    (a multi-value column too: its values stay in the sealed record alone)."""
    import hashlib
    import hmac

    if protection.protect == "hmac" and protection.separator:
        return [None] * len(values)
    if protection.protect == "hmac":
        if key is None:
            raise ValueError("hmac needs a key")
        forms = _canonical_bytes(values, protection.canonical)
        return [None if v is None else hmac.new(key, v, hashlib.sha256).digest() for v in forms]
    if protection.protect == "mask":
        keep = protection.keep_last
        masked = []
        for value in values:
            text = None if value is None else value.decode("utf-8", "replace")
            masked.append(
                None
                if text is None
                else (
                    "*" * max(len(text) - keep, 0) + text[len(text) - keep :] if keep else "*" * len(text)
                ).encode()
            )
        return masked
    if protection.protect == "none":
        return values
    return [None] * len(values)  # drop and encrypt: only the sealed record holds them


def _canonical_bytes(values: list[bytes | None], kind: str | None) -> list[bytes | None]:
    """:func:`canonical` of raw values, all at once (a quarantined batch's column); a value that
    is not UTF-8 is hashed as it is."""
    if kind is None:
        return values
    raw = pa.array(values, pa.binary())
    try:
        texts = raw.cast(pa.string())
    except pa.ArrowInvalid:  # not UTF-8 somewhere: those values one by one
        return [None if v is None else _canonical_one(v, kind) for v in values]
    found: list[bytes | None] = canonical(texts, kind).cast(pa.binary()).to_pylist()
    return found


def _canonical_one(value: bytes, kind: str) -> bytes:
    try:
        return canonical_text(value.decode(), kind).encode()
    except UnicodeDecodeError:
        return value
