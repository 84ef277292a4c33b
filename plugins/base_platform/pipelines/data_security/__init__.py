"""data_security: protected columns (HMAC, mask, drop, encrypt) and keyed fingerprints."""
