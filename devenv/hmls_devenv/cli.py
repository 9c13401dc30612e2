"""The local environment's command line: ``hmls dev up|down|simulate`` in a checkout (the
product's ``hmls dev`` hands its arguments here) or ``python -m hmls_devenv``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from hmls_devenv.environment import DevEnvError, Environment


def build_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog,
                                     description="local environment: real API servers on this machine")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start hub, spokes and ingress in the background")
    up.add_argument("--dir", required=True, help="state, kubeconfigs, pids and logs go here")
    up.add_argument("--spokes", type=int, default=2, help="number of spoke clusters (default 2)")
    down = sub.add_parser("down", help="stop every process that 'up' started")
    down.add_argument("--dir", required=True)
    sim = sub.add_parser("simulate", help="run the MLService simulator (started by 'up')")
    sim.add_argument("--dir", required=True)
    sim.add_argument("--delay", type=float, default=0.5,
                     help="seconds before a changed MLService gets its status (default 0.5)")
    return parser


def main(argv: list[str] | None = None, *, prog: str = "hmls dev") -> int:
    args = build_parser(prog).parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    env = Environment(Path(args.dir))
    try:
        if args.command == "up":
            env.up(spokes=args.spokes)
            for name in env.state().clusters:
                print(f"{name}: kubectl --kubeconfig {env.kubeconfig(name)} get ns")
        elif args.command == "down":
            env.down()
        else:
            from hmls_devenv.simulator import run

            asyncio.run(run(Path(args.dir), delay=args.delay))
    except DevEnvError as exc:
        print(f"{prog} {args.command}: {exc}", file=sys.stderr)
        return 1
    return 0
