"""The staff admin: two-factor login (django-otp, TOTP) with enrolment on first login, and
the absolute cap of a staff session.

core.admin_config.StaffAdminConfig makes StaffAdminSite Django's default admin site, so every app's
`@admin.register` lands on it. The site is django-otp's OTPAdminSite: a session counts as
staff only once a TOTP code verified its login. Its login form asks for the code with the
password (and picks the account's device itself). An account without a confirmed device
logs in with its password alone, and is then sent to the enrolment page, which shows the
otpauth URI and its QR code and lets the admin in once a first code confirms the device.
Lockout after wrong passwords is django-axes' (settings.AXES_*), the policy django-csp's.
"""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Callable
from typing import Any

from django import forms
from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth import logout, user_logged_in
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.http import HttpRequest, HttpResponseBase, HttpResponseRedirect
from django.shortcuts import render
from django.urls import NoReverseMatch, URLPattern, URLResolver, path, reverse
from django.utils.decorators import method_decorator
from django.utils.html import format_html
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect
from django_otp import devices_for_user
from django_otp import login as otp_login
from django_otp.admin import OTPAdminAuthenticationForm, OTPAdminSite
from django_otp.plugins.otp_totp.models import TOTPDevice
from django_otp.qr import write_qrcode_image

from core.identifiers import is_valid_user_id

# When this session's login happened (epoch seconds): SessionMaxAgeMiddleware's clock.
LOGIN_AT_SESSION_KEY = "staff_login_at"


def has_confirmed_device(user: AbstractBaseUser | AnonymousUser) -> bool:
    return user.is_authenticated and any(devices_for_user(user, confirmed=True))


class StaffLoginForm(OTPAdminAuthenticationForm):
    """Username, password and the TOTP code in one step; no code while not yet enrolled."""

    otp_token = forms.CharField(
        required=False,
        label="Authentication code",
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "inputmode": "numeric"}),
    )

    def clean(self) -> dict[str, Any]:
        # The password check (AxesStandaloneBackend counts a failure); then the code, unless
        # the account has no confirmed device yet: the site sends it to enrolment.
        self.cleaned_data = AdminAuthenticationForm.clean(self)
        user = self.get_user()
        if user is not None and has_confirmed_device(user):
            self.clean_otp(user)
        return self.cleaned_data

    def _chosen_device(self, user: AbstractBaseUser) -> Any:
        # No device picker on our page: the account's confirmed TOTP device answers.
        chosen = super()._chosen_device(user)
        if chosen is None:
            chosen = next(iter(devices_for_user(user, confirmed=True, for_verify=True)), None)
        return chosen


class EnrolForm(forms.Form):
    otp_token = forms.CharField(
        label="Code from your authenticator app",
        max_length=8,
        widget=forms.TextInput(
            attrs={"autocomplete": "one-time-code", "inputmode": "numeric", "autofocus": True}
        ),
    )


class StaffAdminSite(OTPAdminSite):
    login_form = StaffLoginForm
    login_template = "admin/staff_login.html"

    def __init__(self, name: str = "admin") -> None:
        super().__init__(name)
        self._app_urls: list[Callable[[], list[URLPattern]]] = []

    def register_urls(self, patterns: Callable[[], list[URLPattern]]) -> None:
        """Pages of apps above core (backoffice's person page) under this site's prefix.

        Core may not import them, so they register themselves from their admin module. The
        patterns are built when the URLconf is read, after every app is ready (path
        converters such as `user_id` are registered in an AppConfig.ready). Wrap each view
        in `admin_view` so that the login and the two-factor check guard it.
        """
        self._app_urls.append(patterns)

    def _needs_enrolment(self, request: HttpRequest) -> bool:
        user = request.user
        return bool(
            user.is_authenticated
            and user.is_active
            and user.is_staff
            and not user.is_verified()  # type: ignore[attr-defined]  # set by OTPMiddleware
            and not has_confirmed_device(user)
        )

    def _enrol_url(self, request: HttpRequest) -> str:
        url = reverse(f"{self.name}:otp_enrol", current_app=self.name)
        redirect_to = request.GET.get("next", "")
        if redirect_to and url_has_allowed_host_and_scheme(
            redirect_to, allowed_hosts={request.get_host()}, require_https=request.is_secure()
        ):
            url += "?" + request.GET.urlencode()
        return url

    @method_decorator(never_cache)
    def login(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> Any:
        if self._needs_enrolment(request):
            return HttpResponseRedirect(self._enrol_url(request))
        return super().login(request, extra_context)

    def get_urls(self) -> list[URLResolver | URLPattern]:
        return [
            path("otp/enrol/", self.enrol, name="otp_enrol"),
            *(pattern for patterns in self._app_urls for pattern in patterns()),
            *super().get_urls(),
        ]

    @method_decorator(never_cache)
    @method_decorator(csrf_protect)
    def enrol(self, request: HttpRequest) -> HttpResponseBase:
        """Shows a new TOTP secret (URI and QR) and confirms it with a first code."""
        index = reverse(f"{self.name}:index", current_app=self.name)
        login_url = reverse(f"{self.name}:login", current_app=self.name)
        if self.has_permission(request):
            return HttpResponseRedirect(index)
        if not self._needs_enrolment(request):
            # Not logged in, not staff, or enrolled already: the login page asks for the code.
            return HttpResponseRedirect(login_url)
        user = request.user
        # One pending device per account, so reloading the page shows the same secret.
        device, _ = TOTPDevice.objects.get_or_create(
            user=user, confirmed=False, defaults={"name": "authenticator"}
        )
        form = EnrolForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            if device.verify_token(form.cleaned_data["otp_token"]):
                device.confirmed = True
                device.save(update_fields=["confirmed"])
                otp_login(request, device)
                redirect_to = request.GET.get("next", "")
                if not url_has_allowed_host_and_scheme(
                    redirect_to,
                    allowed_hosts={request.get_host()},
                    require_https=request.is_secure(),
                ):
                    redirect_to = index
                return HttpResponseRedirect(redirect_to)
            form.add_error("otp_token", "That code is not valid. Enter the current code.")
        buffer = io.BytesIO()
        write_qrcode_image(device.config_url, buffer)
        context = {
            **self.each_context(request),
            "title": "Set up two-factor login",
            "form": form,
            "config_url": device.config_url,
            "secret": base64.b32encode(device.bin_key).decode(),
            # A data: image (img-src allows it): the SVG's own markup stays out of the page.
            "qr_data_uri": "data:image/svg+xml;base64,"
            + base64.b64encode(buffer.getvalue()).decode(),
        }
        request.current_app = self.name
        return render(request, "admin/otp_enrol.html", context)


def person_link(user_id: str) -> str:
    """Our user id as a link to its person page (backoffice), for the admin lists; plain
    text for an id the page's URL would refuse (or none)."""
    if not is_valid_user_id(user_id):
        return user_id
    try:
        url = reverse("admin:person", args=[user_id])
    except NoReverseMatch:  # a site without the person pages
        return user_id
    return format_html('<a href="{}">{}</a>', url, user_id)


def _note_login_time(sender: object, request: HttpRequest, **kwargs: object) -> None:
    if request is not None and hasattr(request, "session"):
        request.session[LOGIN_AT_SESSION_KEY] = int(time.time())


user_logged_in.connect(_note_login_time, dispatch_uid="core.staff_admin.login_time")


class SessionMaxAgeMiddleware:
    """Ends a login STAFF_SESSION_MAX_AGE_S after it happened, however active the session.

    The idle timeout is Django's own (settings: SESSION_SAVE_EVERY_REQUEST with a short
    SESSION_COOKIE_AGE); this is the absolute cap it cannot express.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        session = getattr(request, "session", None)
        if session is not None and request.user.is_authenticated:
            login_at = session.get(LOGIN_AT_SESSION_KEY)
            now = int(time.time())
            if login_at is None:
                session[LOGIN_AT_SESSION_KEY] = now
            elif now - int(login_at) > settings.STAFF_SESSION_MAX_AGE_S:
                logout(request)
        return self.get_response(request)
