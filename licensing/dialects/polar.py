"""The polar dialect (being built)."""

urlpatterns: list = []
