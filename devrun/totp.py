"""`python -m devrun.totp`: the current login code of `make run`'s demo admin.

`make run` enrols its `admin` with a TOTP device whose secret it keeps in the git-ignored
state dir (.devstack/admin-totp, 0600); this prints the code that secret gives now, as an
authenticator app would. Development only: production staff enrol their own app.
"""

from __future__ import annotations

import os
import sys
import time

from django_otp.oath import TOTP

from devstack.stack import DEFAULT_ROOT

KEY_FILE = DEFAULT_ROOT / "admin-totp"


def current_code(key_hex: str, at: float | None = None) -> str:
    """The 6-digit code of a hex TOTP secret (django-otp's defaults: 30 s steps, t0 0)."""
    totp = TOTP(bytes.fromhex(key_hex), step=30, t0=0, digits=6)
    totp.time = time.time() if at is None else at
    return f"{totp.token():06d}"


def main() -> int:
    if os.environ.get("HEALTH_ENV", "development") == "production":
        print("devrun.totp is for make run's demo admin, not production", file=sys.stderr)
        return 2
    if not KEY_FILE.exists():
        print(f"no {KEY_FILE}: start `make run` first (it enrols the admin)", file=sys.stderr)
        return 1
    print(current_code(KEY_FILE.read_text().strip()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
