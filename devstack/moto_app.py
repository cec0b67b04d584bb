"""The embedded S3: moto's WSGI application, served by gunicorn (see services.S3Service).

`python -m moto.server` serves the same application with werkzeug's development server,
which answers HTTP/1.0 and so closes the connection after every request. Measured on the
2-core VM (1 KiB PUTs with SSE and a SHA-256 checksum, one client thread): 130-140 PUT/s at
~3.0 ms of server CPU each under werkzeug, 328 PUT/s at ~2.1 ms under one gunicorn worker
with keep-alive. One worker, because moto keeps the whole store in that process's memory.
"""

from __future__ import annotations

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

app = DomainDispatcherApplication(create_backend_app)
