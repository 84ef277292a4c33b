"""Run the Argo CD SIMULATOR: ``python -m sandbox.argocd --port 8081 --scenario default.yaml``."""

from __future__ import annotations

import argparse

import uvicorn

from sandbox.argocd.scenario import load_scenario
from sandbox.argocd.server import Simulator


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sandbox.argocd", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument(
        "--scenario", default=None, help="YAML file, or a name under sandbox/argocd/scenarios/"
    )
    args = parser.parse_args(argv)
    simulator = Simulator(load_scenario(args.scenario))
    scenario = args.scenario or "built-in"
    print(f"Argo CD SIMULATOR listening on http://{args.host}:{args.port} (scenario: {scenario})", flush=True)
    uvicorn.run(simulator.app(), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
