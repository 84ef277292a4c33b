"""Run the Vault SIMULATOR: ``python -m sandbox.vault --port 8200 --scenario default.yaml``."""

from __future__ import annotations

import argparse

import uvicorn

from sandbox.vault.scenario import load_scenario
from sandbox.vault.server import VaultSimulator


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sandbox.vault", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8200)
    parser.add_argument(
        "--scenario", default=None, help="YAML file, or a name under sandbox/vault/scenarios/"
    )
    args = parser.parse_args(argv)
    simulator = VaultSimulator(load_scenario(args.scenario))
    print(f"Vault SIMULATOR listening on http://{args.host}:{args.port}", flush=True)
    uvicorn.run(simulator.app(), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
