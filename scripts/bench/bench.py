"""The benchmarks' one command line, against real local API servers:

  python scripts/bench/bench.py suite [--quick] ...   make bench / make bench-quick (run.py)
  python scripts/bench/bench.py scale [--cases ...]   make bench-scale (fleet.py)
  python scripts/bench/bench.py ab [--base REV] ...   make bench-ab: before/after (ab.py)

``bench.py SUBCOMMAND --help`` describes each one's measurements and flags. Nothing is
asserted: figures are printed and written with ratios against baselines of the same run.
"""

from __future__ import annotations

import argparse

import ab
import fleet
import run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, module in (("suite", run), ("scale", fleet), ("ab", ab)):
        doc = module.__doc__ or ""
        one = sub.add_parser(name, help=doc.split("\n", 1)[0], description=doc,
                             formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(one)
        one.set_defaults(run=module.run)
    args = parser.parse_args()
    return int(args.run(args))


if __name__ == "__main__":
    raise SystemExit(main())
