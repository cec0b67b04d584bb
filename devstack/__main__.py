"""`python -m devstack up|down|status|env [--root DIR] [--nats-cluster N]`."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from devstack.services import ServiceError
from devstack.stack import DEFAULT_ROOT, Stack

DESCRIPTION = """\
Start and stop the embedded PostgreSQL, NATS JetStream and S3 servers under one folder.

NATS runs as one server unless `up --nats-cluster 3` starts a JetStream cluster of three
nats-server processes (n1..n3, each with its own store and free client, cluster and
monitoring ports). The choice is recorded in the folder: `env`, `status`, `down`, a later
`up` and `make run` follow it until `up --nats-cluster 1` returns to one server. On a
cluster `env` prints the seed list as NATS_URL and NATS_STREAM_REPLICAS=3.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devstack",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("action", choices=["up", "down", "status", "env"])
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    parser.add_argument(
        "--nats-cluster",
        type=int,
        choices=[1, 3, 5],
        metavar="N",
        help="with up: run NATS as a JetStream cluster of N nodes (3 or 5; 1 = one server). "
        "Default: what the last up in this folder chose, else one server.",
    )
    args = parser.parse_args(argv)
    if args.nats_cluster is not None and args.action != "up":
        parser.error("--nats-cluster goes with up; the other actions follow what up chose")
    stack = Stack(args.root.resolve(), nats_cluster=args.nats_cluster)
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
                if name == "nats" and stack.nats_cluster_size > 1:
                    for node in stack.nats_nodes():
                        print(
                            f"  {node.name:7} {'running' if node.running else 'stopped'}  "
                            f"client {node.client_port}  cluster {node.cluster_port}  "
                            f"monitor {node.monitor_port}  pid {node.pid}"
                        )
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
