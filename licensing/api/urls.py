from django.urls import path

from licensing.api import views

app_name = "api"

urlpatterns = [
    path("licenses/activate", views.ActivateLicenseView.as_view(), name="activate"),
    path("licenses/validate", views.ValidateLicenseView.as_view(), name="validate"),
    path("licenses/deactivate", views.DeactivateLicenseView.as_view(), name="deactivate"),
    path("licenses/checkout", views.CheckoutLicenseView.as_view(), name="checkout"),
    path("signing-keys", views.SigningKeyListView.as_view(), name="signing-keys"),
    path("products", views.ProductListView.as_view(), name="products"),
    path("products/<int:pk>", views.ProductDetailView.as_view(), name="product"),
    path("plans", views.PlanListView.as_view(), name="plans"),
    path("plans/<int:pk>", views.PlanDetailView.as_view(), name="plan"),
    path("customers", views.CustomerListView.as_view(), name="customers"),
    path("customers/<int:pk>", views.CustomerDetailView.as_view(), name="customer"),
    path("audit-events", views.AuditEventListView.as_view(), name="audit-events"),
    path("licenses", views.LicenseListView.as_view(), name="licenses"),
    path("licenses/find", views.LicenseFindView.as_view(), name="license-find"),
    path("licenses/<uuid:pk>", views.LicenseDetailView.as_view(), name="license"),
    path("licenses/<uuid:pk>/suspend", views.LicenseStatusView.as_view(action_name="suspend"), name="license-suspend"),
    path(
        "licenses/<uuid:pk>/reinstate",
        views.LicenseStatusView.as_view(action_name="reinstate"),
        name="license-reinstate",
    ),
    path("licenses/<uuid:pk>/revoke", views.LicenseStatusView.as_view(action_name="revoke"), name="license-revoke"),
    path("licenses/<uuid:pk>/extend", views.LicenseExtendView.as_view(), name="license-extend"),
    path("licenses/<uuid:pk>/activations", views.LicenseActivationListView.as_view(), name="license-activations"),
    path(
        "licenses/<uuid:pk>/activations/deactivate",
        views.LicenseDeactivateAllView.as_view(),
        name="license-activations-deactivate",
    ),
    path(
        "licenses/<uuid:pk>/activations/<uuid:activation_pk>/deactivate",
        views.ActivationDeactivateView.as_view(),
        name="activation-deactivate",
    ),
]
