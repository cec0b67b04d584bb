"""Counts every response by route and status class, for webhook availability (5xx / all).

Placed right after core.errors.UnhandledErrorMiddleware, so a view's unexpected exception
is counted as the 500 that middleware answers with. The route is the resolved URL's name
(namespaced, e.g. `admin:index`), never the path: paths carry user ids.
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponseBase

from core.metrics import http_responses_total, process_started


class ResponseMetricsMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response
        process_started("web")  # once per process that serves requests

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        response = self.get_response(request)
        match = request.resolver_match
        route = (match.view_name if match is not None else "") or "unmatched"
        status_class = f"{response.status_code // 100}xx"
        http_responses_total.labels(route=route, status_class=status_class).inc()
        return response
