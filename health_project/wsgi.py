"""The WSGI application: what health_project/asgi.py (the entry of `make run`, the Dockerfile
and compose) runs on its threads for every request but a webhook delivery. Also a complete
WSGI entry on its own (`granian --interface wsgi health_project.wsgi:application`), with
the deliveries answered by the Django view.

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
from functools import partial
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

import django
from django.conf import settings
from django.core.handlers.wsgi import WSGIHandler
from django.http import HttpRequest
from django.urls import Resolver404, ResolverMatch
from django.views.decorators.csrf import csrf_exempt

from core import tracing
from core.identifiers import InvalidUserId

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "health_project.settings")


class ErrorShapeWSGIHandler(WSGIHandler):
    """Django's WSGI handler, answering unresolvable API paths in the error shape."""

    def resolve_request(self, request: HttpRequest) -> ResolverMatch:
        """Answer a path that names no view, or a person by a malformed id, in the error shape.

        Django answers both from the exception after resolving, and with DEBUG on (`make
        run`) that answer is its HTML debug page, not handler400/handler404. The callers of
        these paths are programs that parse the error shape, in development too.
        """
        try:
            return super().resolve_request(request)
        except (InvalidUserId, Resolver404) as exc:
            from core import errors  # DRF's settings: importable only once Django is set up

            if not errors.answers_json(request):
                raise  # the admin's pages: Django's own, debug page included
            bad_id = isinstance(exc, InvalidUserId)
            handler = errors.bad_request if bad_id else errors.page_not_found
            # csrf_exempt: the answer is an error, not the view; without it a POST to a path
            # that names no view was CSRF's 403 page instead of this.
            match = ResolverMatch(csrf_exempt(partial(handler, exception=exc)), (), {})
            request.resolver_match = match
            return match


class LeanWSGIHandler(ErrorShapeWSGIHandler):
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


def make_application() -> WSGIApplication:
    """Both handlers over the current settings (read once, as Django's middleware does)."""
    return _dispatcher(
        ErrorShapeWSGIHandler(),
        LeanWSGIHandler(),
        frozenset(settings.LEAN_PATHS),
        tuple(settings.LEAN_PREFIXES),
    )


django.setup(set_prefix=False)  # as django.core.wsgi.get_wsgi_application does
application = make_application()
