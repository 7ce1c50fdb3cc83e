"""Each vendor's own paths under its own prefix, so an app moves here by changing its base URL."""

from django.urls import include, path, re_path

from licensing.api.views import UnknownEndpointView

urlpatterns = [
    path("kelviq/api/v1/", include("licensing.dialects.kelviq")),
    path("getkeymanager/api/v1/", include("licensing.dialects.getkeymanager")),
    path("polar/", include("licensing.dialects.polar")),
    path("keymint/", include("licensing.dialects.keymint")),
    # Anything else under /compat/: JSON, never HTML.
    re_path(r"", UnknownEndpointView.as_view()),
]
