"""Django's admin app with the 2FA site as its default site (core/staff_admin.py).

Its own module: INSTALLED_APPS imports it before the models exist, and the site needs them.
"""

from __future__ import annotations

from django.contrib.admin.apps import AdminConfig


class StaffAdminConfig(AdminConfig):
    default_site = "core.staff_admin.StaffAdminSite"
