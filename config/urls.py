from django.contrib import admin
from django.http import HttpResponse
from django.urls import include, path, re_path
from django.views.generic import RedirectView

from licensing.api.views import ApiDocsView, SchemaView, UnknownEndpointView


def no_favicon(request):
    # Browsers ask every site for one: an empty answer, not a 404 in every log and browser console.
    return HttpResponse(status=204)


urlpatterns = [
    path("favicon.ico", no_favicon),
    path("admin/", admin.site.urls),
    path("api/v1/", include("licensing.api.urls")),
    path("compat/", include("licensing.dialects.urls")),
    path("portal/", include("portal.urls")),
    path("api/schema/", SchemaView.as_view(), name="schema"),
    path("api/docs/", ApiDocsView.as_view(url_name="schema"), name="api-docs"),
    re_path(r"^api/", UnknownEndpointView.as_view()),
    # The bare prefixes too, as JSON: Django would redirect them to their slash, which a POST cannot follow.
    re_path(r"^(api|compat)$", UnknownEndpointView.as_view()),
    path("", RedirectView.as_view(pattern_name="admin:index", permanent=False)),
]

# Only the admin refuses a page with PermissionDenied: its page, in its look.
handler403 = "licensing.admin.permission_denied"
handler404 = "portal.views.page_not_found"
handler500 = "portal.views.server_error"
