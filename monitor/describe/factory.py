"""`build_describer(settings)`: the describer the settings name (the VLM one is imported only
when asked for: it needs torch and transformers)."""

from __future__ import annotations

from monitor.config import DescriberConfig
from monitor.describe.base import Describer
from monitor.describe.embedded import EmbeddedDescriber


def build_describer(settings: DescriberConfig | str, model: str | None = None) -> Describer:
    """The describer of the `describer` settings (or of a kind name and model path)."""
    if isinstance(settings, str):
        settings = DescriberConfig(kind=settings, model=model)
    if settings.kind == "embedded":
        return EmbeddedDescriber()
    from monitor.describe.vlm import VlmDescriber

    return VlmDescriber(settings)
