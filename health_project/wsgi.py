"""The WSGI entry of `make run`, the Dockerfile and compose: `health_project.wsgi:application`.

Two Django handlers over one URLconf. Oura's webhook deliveries (LEAN_PATHS) and the REST v1
health reads (LEAN_PREFIXES) go through the middleware a machine-to-machine call needs (a
SERVER span, request id, security headers, the error shape, response metrics,
Content-Length); everything else through the whole MIDDLEWARE list, whose browser half
(sessions, CSRF, auth, 2FA, the admin lockout, CSP, static files) these calls never use: no
cookie, no user, no page. On the hottest path in the system that half, with the general
tracing middleware, was about a third of the server's Python time per delivery, and on a
year's daily page about as much as the page's SQL (issue #19). The views are the same in
both: the webhook is csrf_exempt and authenticates by signature, the reads by API key
(DRF, no session).
"""

import os
from collections.abc import Iterable
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from django.conf import settings
from django.core.handlers.wsgi import WSGIHandler
from django.core.wsgi import get_wsgi_application

from core import tracing

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "health_project.settings")


class LeanWSGIHandler(WSGIHandler):
    """Django's WSGI handler without the browser-only middleware (settings.BROWSER_MIDDLEWARE)."""

    def load_middleware(self, is_async: bool = False) -> None:
        # Django builds the chain from settings.MIDDLEWARE only. The full list is read here,
        # after the apps' ready() (tracing inserts its middleware there), and restored at
        # once: this runs while the application is created, before any request is served.
        full = settings.MIDDLEWARE
        lean = [m for m in full if m not in settings.BROWSER_MIDDLEWARE]
        instrumented = tracing.django_middleware()
        if instrumented in lean:
            # The same SERVER span, for a fraction of the work (core.tracing explains).
            lean[lean.index(instrumented)] = "core.tracing.ServerSpanMiddleware"
        settings.MIDDLEWARE = lean
        try:
            super().load_middleware(is_async)
        finally:
            settings.MIDDLEWARE = full


def _dispatcher(
    full: WSGIHandler,
    lean: WSGIHandler,
    lean_paths: frozenset[str],
    lean_prefixes: tuple[str, ...],
) -> WSGIApplication:
    def application(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        is_lean = path in lean_paths or path.startswith(lean_prefixes)
        return (lean if is_lean else full)(environ, start_response)

    return application


_full = get_wsgi_application()  # django.setup() first, then the full chain
application = _dispatcher(
    _full, LeanWSGIHandler(), frozenset(settings.LEAN_PATHS), tuple(settings.LEAN_PREFIXES)
)
