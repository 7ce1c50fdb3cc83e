"""The keymint dialect (being built)."""

urlpatterns: list = []
