from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from core.apis import healthz, readyz
from core.metrics_view import metrics

# API paths answer in the one error shape (core/errors.py); admin keeps Django's pages.
handler400 = "core.errors.bad_request"
handler404 = "core.errors.page_not_found"
handler500 = "core.errors.server_error"

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    path("metrics", metrics, name="metrics"),
    path("admin/", admin.site.urls),
    path("v1/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("v1/schema/swagger/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger"),
    path("v1/schema/redoc/", SpectacularRedocView.as_view(url_name="schema"), name="redoc"),
    path("v1/", include("access.urls")),
    path("v1/", include("ingestion.urls")),
    path("v1/", include("normalized.urls")),
    path("v1/", include("jobs.urls")),
]
