"""Every test runs offline: no model weights or datasets from a hub."""

from __future__ import annotations

import pytest
from support import OFFLINE_ENV


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in OFFLINE_ENV.items():
        monkeypatch.setenv(key, value)
