from django.urls import path

from jobs.apis import JobCancelApi, JobDetailApi, JobRetryApi, JobStartApi

urlpatterns = [
    path("health/oura/sync", JobStartApi.as_view(), name="oura-sync-start"),
    path("health/oura/sync/<uuid:job_id>", JobDetailApi.as_view(), name="oura-sync-status"),
    path("health/oura/sync/<uuid:job_id>/cancel", JobCancelApi.as_view(), name="oura-sync-cancel"),
    path("health/oura/sync/<uuid:job_id>/retry", JobRetryApi.as_view(), name="oura-sync-retry"),
]
