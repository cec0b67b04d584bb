"""Which Oura `make run` talks to: the in-process simulator (default) or one named by OURA_*."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

OURA_URL_VARS = ("OURA_API_BASE_URL", "OURA_AUTHORIZE_URL", "OURA_TOKEN_URL", "OURA_REVOKE_URL")


class OuraConfigError(ValueError):
    """The OURA_* URLs are set only in part; the message names the missing ones."""


@dataclass(frozen=True)
class OuraTarget:
    external: bool
    api_base_url: str = ""


def oura_target(environ: Mapping[str, str]) -> OuraTarget:
    """External when OURA_API_BASE_URL is set (same rule as DATABASE_URL): then every OURA_*
    URL must be set, since a mix (real API, simulated token endpoint) can only fail later."""
    given = {name: environ.get(name, "").strip() for name in OURA_URL_VARS}
    if not any(given.values()):
        return OuraTarget(external=False)
    missing = [name for name, value in given.items() if not value]
    if missing:
        raise OuraConfigError(
            f"{', '.join(missing)} must be set too when any OURA_* URL is set "
            "(or unset them all to use the built-in Oura simulator)"
        )
    return OuraTarget(external=True, api_base_url=given["OURA_API_BASE_URL"])
