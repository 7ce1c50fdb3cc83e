"""Each vendor's own paths under its own prefix, so an app moves here by changing its base URL."""

from django.urls import include, path

urlpatterns = [
    path("kelviq/api/v1/", include("licensing.dialects.kelviq")),
    path("getkeymanager/api/v1/", include("licensing.dialects.getkeymanager")),
    path("polar/", include("licensing.dialects.polar")),
    path("keymint/", include("licensing.dialects.keymint")),
]
