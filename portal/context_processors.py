"""What every portal page may show."""

from django.conf import settings


def support(request) -> dict[str, str]:
    return {"support_url": settings.SUPPORT_URL, "vendor_name": settings.VENDOR_NAME}
