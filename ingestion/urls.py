from django.urls import path

from ingestion import connection_apis

urlpatterns = [
    path(
        "health/<str:user_id>/oura/connection",
        connection_apis.OuraConnectionApi.as_view(),
        name="oura-connection",
    ),
    path("oauth/oura/callback", connection_apis.oura_oauth_callback, name="oura-oauth-callback"),
]
