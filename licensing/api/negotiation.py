"""Content negotiation for the license calls, which answer JSON and nothing else."""

from __future__ import annotations

# What apps send, or nothing at all (which DRF reads as */*).
ACCEPTS_JSON = frozenset({"*/*", "application/json"})


class JSONOnlyNegotiation:
    """Answers JSON without DRF parsing the Accept header (a tenth of a validate's time in DRF)
    when the client takes anything or JSON; any other Accept header goes through DRF as before,
    so a client that takes only, say, XML still gets 406."""

    def perform_content_negotiation(self, request, force=False):
        if len(self.renderer_classes) == 1 and request.META.get("HTTP_ACCEPT", "*/*") in ACCEPTS_JSON:
            renderer = self.renderer_classes[0]()
            return renderer, renderer.media_type
        return super().perform_content_negotiation(request, force)
