"""schema_contracts: raw values to the contract's types, a finding for each that does not fit."""
