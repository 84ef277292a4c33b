"""Validation checks as small named functions, and the report model."""
