"""The kelviq dialect (being built)."""

urlpatterns: list = []
