from csp.decorators import csp_update
from django.conf import settings
from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import (
    SpectacularAPIView,
    SpectacularRedocView,
    SpectacularSwaggerSplitView,
)

from core.apis import healthz, readyz
from core.metrics_view import metrics

# API paths answer in the one error shape (core/errors.py); admin keeps Django's pages.
handler400 = "core.errors.bad_request"
handler404 = "core.errors.page_not_found"
handler500 = "core.errors.server_error"

# The docs pages under the Content-Security-Policy (settings.CONTENT_SECURITY_POLICY): their
# bundles come from /static (drf-spectacular-sidecar), Swagger UI's start script too (the
# split view serves it as a file, not inline), but both set inline styles, and Redoc runs
# its search in a blob: worker. Only these two pages get that.
_DOCS_CSP = csp_update({"style-src": ["'unsafe-inline'"], "worker-src": ["'self'", "blob:"]})

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    path("metrics", metrics, name="metrics"),
    # The 2FA admin (core/staff_admin.py) at ADMIN_URL_PREFIX, "admin/" in development.
    path(settings.ADMIN_URL_PREFIX, admin.site.urls),
    path("v1/schema/", SpectacularAPIView.as_view(), name="schema"),
    path(
        "v1/schema/swagger/",
        _DOCS_CSP(SpectacularSwaggerSplitView.as_view(url_name="schema")),
        name="swagger",
    ),
    path(
        "v1/schema/redoc/",
        _DOCS_CSP(SpectacularRedocView.as_view(url_name="schema")),
        name="redoc",
    ),
    path("v1/", include("access.urls")),
    path("v1/", include("ingestion.urls")),
    path("v1/", include("normalized.urls")),
    path("v1/", include("jobs.urls")),
]
