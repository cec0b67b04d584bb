"""The embedded S3: moto's S3 application, served by gunicorn (see services.S3Service).

`python -m moto.server` serves every AWS service through moto's `DomainDispatcherApplication`,
which works out the service of each request from its host and path, listing moto's modules on
disk (an `isdir` per module) on every request, under a process-wide lock. We only serve S3,
so requests go straight to moto's S3 application; `/moto-api` (its health and reset endpoints)
keeps its own. Served by werkzeug's development server, every request also opened a new
connection (it answers HTTP/1.0); one gunicorn worker keeps connections alive.

Measured on the 2-core VM (1 KiB PUTs with SSE and a SHA-256 checksum, server CPU per PUT):
~3.0 ms under `python -m moto.server`; 2.7 ms under gunicorn with moto's dispatcher;
1.3-1.5 ms under gunicorn with this one (439 PUT/s from one client thread, 502/s from four).
Without flask-cors's response hook (MOTO_DISABLE_GLOBAL_CORS, set by services.S3Service) a
further ~10 %.
One worker, because moto keeps the whole store in that process's memory.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from moto.moto_server.werkzeug_app import create_backend_app

_s3 = create_backend_app("s3")
_moto_api = create_backend_app("moto_api")
# moto turns on Flask's debug mode, whose request hooks we do not need.
_s3.debug = _moto_api.debug = False


def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    path = environ.get("PATH_INFO", "")
    backend = _moto_api if path.startswith("/moto-api") else _s3
    return backend(environ, start_response)
