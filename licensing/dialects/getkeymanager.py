"""The getkeymanager dialect (being built)."""

urlpatterns: list = []
