"""Every test runs offline: no model weights or datasets from a hub. And the VLM tests' fixture:
one tiny random LLaVA checkpoint per session (built offline and saved with save_pretrained, loaded
back through the production path). The helpers that go with it (scene, pairs_with_keys,
make_adapter, tiny_training_setup) are plain functions in support.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import OFFLINE_ENV


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in OFFLINE_ENV.items():
        monkeypatch.setenv(key, value)


@pytest.fixture(scope="session")
def tiny_llava(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pipelines.tiny import save_tiny_llava  # torch + transformers: only for the tests that ask for it

    return save_tiny_llava(tmp_path_factory.mktemp("tiny-llava") / "checkpoint")
