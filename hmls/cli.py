"""The ``hmls`` command: controller, cluster registration, status, and the local dev environment."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path


def _dev(args: argparse.Namespace) -> int:
    from hmls.devenv.environment import DevEnvError, Environment

    env = Environment(Path(args.dir))
    try:
        if args.dev_command == "up":
            env.up(spokes=args.spokes)
            for name in env.state().clusters:
                print(f"{name}: kubectl --kubeconfig {env.kubeconfig(name)} get ns")
        elif args.dev_command == "down":
            env.down()
        elif args.dev_command == "simulate":
            from hmls.devenv.simulator import run

            asyncio.run(run(Path(args.dir), delay=args.delay))
    except DevEnvError as exc:
        print(f"hmls dev {args.dev_command}: {exc}", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hmls", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    dev = sub.add_parser("dev", help="local environment: real API servers on this machine")
    dev_sub = dev.add_subparsers(dest="dev_command", required=True)
    up = dev_sub.add_parser("up", help="start hub, spokes and ingress in the background")
    up.add_argument("--dir", required=True, help="state, kubeconfigs, pids and logs go here")
    up.add_argument("--spokes", type=int, default=2, help="number of spoke clusters (default 2)")
    down = dev_sub.add_parser("down", help="stop every process that 'up' started")
    down.add_argument("--dir", required=True)
    sim = dev_sub.add_parser("simulate", help="run the MLService simulator (started by 'up')")
    sim.add_argument("--dir", required=True)
    sim.add_argument("--delay", type=float, default=0.5,
                     help="seconds before a changed MLService gets its status (default 0.5)")
    dev.set_defaults(func=_dev)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
