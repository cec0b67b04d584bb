"""`python -m devstack up|down|status|env [--root DIR]`."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from devstack.services import ServiceError
from devstack.stack import DEFAULT_ROOT, Stack


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack")
    parser.add_argument("action", choices=["up", "down", "status", "env"])
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    args = parser.parse_args(argv)
    stack = Stack(args.root)
    try:
        if args.action == "up":
            for var, url in stack.up().items():
                print(f"{var}={url}")
        elif args.action == "down":
            stack.down()
            print("embedded services stopped")
        elif args.action == "status":
            running = stack.status()
            for name, ok in running.items():
                print(f"{name:9} {'running' if ok else 'stopped'}")
            return 0 if all(running.values()) else 1
        else:
            for var, url in stack.env().items():
                print(f"export {var}={shlex.quote(url)}")
    except ServiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
