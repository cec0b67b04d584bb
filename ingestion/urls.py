from django.urls import path

from ingestion import connection_apis, webhook_apis

urlpatterns = [
    path("webhooks/oura", webhook_apis.OuraWebhookApi.as_view(), name="oura-webhook"),
    path(
        "health/<user_id:user_id>/oura/connection",
        connection_apis.OuraConnectionApi.as_view(),
        name="oura-connection",
    ),
    path("oauth/oura/start", connection_apis.oura_oauth_start, name="oura-oauth-start"),
    path("oauth/oura/callback", connection_apis.oura_oauth_callback, name="oura-oauth-callback"),
]
