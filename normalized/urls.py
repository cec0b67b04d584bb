from django.urls import path

from normalized import apis

urlpatterns = [
    path(
        "health/<user_id:user_id>/oura/daily",
        apis.OuraDailyListApi.as_view(),
        name="oura-daily-list",
    ),
    path(
        "health/<user_id:user_id>/oura/activities",
        apis.OuraActivityListApi.as_view(),
        name="oura-activity-list",
    ),
    path(
        "health/<user_id:user_id>/oura/sleep",
        apis.OuraSleepPeriodListApi.as_view(),
        name="oura-sleep-period-list",
    ),
    path(
        "health/<user_id:user_id>/oura/sleep_time",
        apis.OuraSleepTimeListApi.as_view(),
        name="oura-sleep-time-list",
    ),
    path(
        "health/<user_id:user_id>/oura/tags",
        apis.OuraTagListApi.as_view(),
        name="oura-tag-list",
    ),
    path(
        "health/<user_id:user_id>/oura/rest_mode_periods",
        apis.OuraRestModePeriodListApi.as_view(),
        name="oura-rest-mode-period-list",
    ),
    path(
        "health/<user_id:user_id>/oura/heartrate",
        apis.OuraHeartRateListApi.as_view(),
        name="oura-heart-rate-list",
    ),
]
