"""`python -m devrun [--no-demo]` (what `make run` runs).

Services first, then Django: settings only read the URLs, so the embedded services whose
URL variable is unset are started here, before settings are imported.
"""

from __future__ import annotations

import argparse
import os
import sys

from devrun.oura import OuraConfigError, oura_target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devrun", description=__doc__)
    parser.add_argument(
        "--no-demo", action="store_true", help="Skip the demo user, backfill and ticker."
    )
    args = parser.parse_args(argv)
    env = os.environ.setdefault("HEALTH_ENV", "development")
    if env == "production":
        print("make run is for development; deploy with compose.yaml", file=sys.stderr)
        return 2
    try:
        target = oura_target(os.environ)
    except OuraConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    from devstack import ensure_running
    from health_project.serving import BACKGROUND_NICE

    # The embedded S3 serves mostly the relay, which yields to webhooks: so does the S3.
    os.environ.setdefault("DEVSTACK_S3_NICE", str(BACKGROUND_NICE))
    embedded = ensure_running(only_missing_from=dict(os.environ))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "health_project.settings")
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    # OAuth redirects and webhook callbacks must come back to the port the web server uses.
    os.environ.setdefault(
        "PUBLIC_BASE_URL", f"http://127.0.0.1:{os.environ.get('WEB_PORT', '8000')}"
    )
    import django

    django.setup()
    from devrun.orchestrator import run

    return run(target=target, embedded=embedded, with_demo=not args.no_demo)


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # The children are gone by now. Library threads of this process (the simulator's server,
    # a connection pool) are not daemons and would hold the exit; nothing is left to flush.
    os._exit(code)
