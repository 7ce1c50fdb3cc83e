from django.urls import path

from portal import views

app_name = "portal"

urlpatterns = [
    path("", views.sign_in, name="sign-in"),
    path("check-email/", views.check_email, name="check-email"),
    path("sign-in/<str:token>/", views.redeem, name="redeem"),
    path("sign-out/", views.sign_out, name="sign-out"),
    path("licenses/", views.license_list, name="licenses"),
    path("licenses/<uuid:license_id>/", views.license_detail, name="license"),
    path("licenses/<uuid:license_id>/deactivate-all/", views.deactivate_all, name="deactivate-all"),
    path(
        "licenses/<uuid:license_id>/devices/<uuid:activation_id>/deactivate/",
        views.deactivate_device,
        name="deactivate-device",
    ),
    path(
        "licenses/<uuid:license_id>/devices/<uuid:activation_id>/license-file/",
        views.download_license_file,
        name="license-file",
    ),
]
