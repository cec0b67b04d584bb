"""HEALTHCHECK of the web image: GET /healthz on the local server, exit 0 when it answers 200.

Django answers 400 to a Host it does not allow, so the probe presents the first entry of
DJANGO_ALLOWED_HOSTS (a leading dot, "any subdomain", is dropped). It also says it came over
HTTPS, so a probe never depends on /healthz being exempt from the HTTPS redirect.
"""

from __future__ import annotations

import os
import sys
import urllib.request

URL = "http://127.0.0.1:8000/healthz"


def host_header(allowed_hosts: str) -> str:
    for host in (h.strip() for h in allowed_hosts.split(",")):
        if host and host != "*":
            return host.lstrip(".")
    return "localhost"


def main() -> int:
    request = urllib.request.Request(
        URL,
        headers={
            "Host": host_header(os.environ.get("DJANGO_ALLOWED_HOSTS", "")),
            "X-Forwarded-Proto": "https",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=4) as response:  # noqa: S310 - fixed URL
            return 0 if response.status == 200 else 1
    except OSError as exc:
        print(f"healthz failed: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
