"""`monitor bench model --arch tiny`: the JSON it prints and writes, and the token accounting.
(Times are reported, never asserted: speed goals live in the benchmark itself.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from monitor.cli import main
from pipelines.tiny import tiny_tokenizer

FIELDS = {
    "variant", "batch", "lm_tokens_per_pair", "lm_tokens_per_frame", "vision_passes_per_pair", "gflops_per_pair",
    "seconds_per_pair", "pairs_per_s", "kv_cache_mib_per_pair", "peak_mem_mib", "speedup_vs_two_image",
}  # fmt: skip


def test_bench_model_tiny_reports_tokens_flops_and_speedups(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.json"
    assert main(["bench", "model", "--arch", "tiny", "--repeat", "1", "--batch", "2", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    doc = json.loads(out.read_text())
    assert json.loads(printed[printed.index("{") :]) == doc  # the same JSON on stdout
    assert "compressed_cached" in printed.splitlines()[5]  # the table before it

    assert doc["arch"] == "tiny" and doc["device"] == "cpu" and doc["new_tokens"] == 8
    # the tiny CLIP has 16 patches: two images 16 per frame, side by side 8, compressed 2 (+2 delta per pair)
    assert doc["lm_tokens_per_frame"] == {"two_image": 16, "pair": 8, "compressed": 2, "compressed_cached": 2}
    rows = {(r["variant"], r["batch"]): r for r in doc["results"]}
    delta_line = len(tiny_tokenizer()("where it changed, before then after:", add_special_tokens=False)["input_ids"])
    assert set(rows) == {(v, b) for v in ("two_image", "pair", "compressed", "compressed_cached") for b in (1, 2)}
    assert all(set(r) == FIELDS for r in rows.values())
    for batch in (1, 2):
        tokens = {v: rows[(v, batch)]["lm_tokens_per_pair"] for v in ("two_image", "pair", "compressed")}
        assert tokens["compressed"] < tokens["pair"] < tokens["two_image"]
        # two images: 2 x 16 visual tokens; compressed: 2 x 2 + 2 delta tokens and one more prompt line
        assert tokens["two_image"] - tokens["compressed"] == 2 * 16 - (2 * 2 + 2) - delta_line
        assert rows[("two_image", batch)]["speedup_vs_two_image"] == 1.0
        assert all(r["speedup_vs_two_image"] > 0 and r["pairs_per_s"] > 0 for r in rows.values())
        assert rows[("compressed_cached", batch)]["vision_passes_per_pair"] == 1
    flops = {v: rows[(v, 2)]["gflops_per_pair"] for v in ("two_image", "pair", "compressed", "compressed_cached")}
    assert 0 < flops["compressed_cached"] < flops["compressed"] < flops["two_image"]
    kv = {v: rows[(v, 1)]["kv_cache_mib_per_pair"] for v in ("two_image", "compressed")}
    assert kv["compressed"] < kv["two_image"]
