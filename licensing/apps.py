from django.apps import AppConfig


class LicensingConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "licensing"
    verbose_name = "Licensing"

    def ready(self):
        from licensing import checks  # noqa: F401 - registers the deploy checks
