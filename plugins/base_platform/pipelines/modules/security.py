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

from base_platform.pipelines import fusion
from base_platform.pipelines.spec import Protection, Security


def load_key(security: Security) -> bytes | None:
    """The HMAC key from Vault KV (``path#key`` under ``vault_default``'s mount); None if unused."""
    if not any(protection.protect == "hmac" for protection in security.columns.values()):
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
    hmac_columns = {
        name: batch.column(name)
        for name, protection in security.columns.items()
        if protection.protect == "hmac" and name in batch.schema.names
    }
    digests: dict[str, pa.Array] = {}
    if hmac_columns:
        if key is None:
            raise ValueError("hmac needs a key")
        digests = fusion.hmac_sha256(hmac_columns, key)
    names, arrays = [], []
    for name in batch.schema.names:
        protection = security.columns.get(name)
        values = batch.column(name) if protection is None else protect_column(batch.column(name), protection)
        if values is not None:
            names.append(name)
            arrays.append(digests.get(name, values))
    return pa.RecordBatch.from_arrays(arrays, names=names)


def stored_schema(schema: pa.Schema, security: Security) -> pa.Schema:
    """What protection does to the contract's schema: hmac stores 32 bytes, mask a string, drop nothing."""
    fields = []
    for field in schema:
        protection = security.columns.get(field.name)
        if protection is None or protection.protect in ("none", "encrypt"):
            fields.append(field)
        elif protection.protect != "drop":
            stored = fusion.DIGEST if protection.protect == "hmac" else pa.string()
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
