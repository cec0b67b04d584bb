"""Django's DEBUG error page (settings.DEFAULT_EXCEPTION_REPORTER), safe for a URL whose
resolution raises.

The page names the view by resolving the request's path again and expects at most Http404
from that. A bad user id raises InvalidUserId (a BadRequest) inside resolution
(core/identifiers.py), so under DEBUG, as `make run` serves, the page itself failed and a bad
id was answered 500 instead of 400. Production (DEBUG off) never builds this page.
"""

from __future__ import annotations

from typing import Any

from django.http import Http404, HttpRequest, HttpResponse
from django.urls import ResolverMatch, resolve
from django.views import debug


def unresolvable_url(request: HttpRequest) -> HttpResponse:
    """Stands in for the view of a URL that cannot be resolved without an error (the page
    names it); never routed to."""
    raise Http404


class ExceptionReporter(debug.ExceptionReporter):
    def get_traceback_data(self) -> dict[str, Any]:
        request = self.request
        if request is not None and request.resolver_match is None:
            try:
                resolve(request.path)
            except Http404:
                pass
            except Exception:  # the error the page reports: resolve nothing more
                request.resolver_match = ResolverMatch(unresolvable_url, (), {})
        data: dict[str, Any] = super().get_traceback_data()
        return data
