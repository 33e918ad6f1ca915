"""Score reports: a side-by-side table, JSON (with per-pair scores) and a PNG bar chart."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from finetune.metrics import CaptionScores


def comparison_table(systems: Mapping[str, CaptionScores]) -> str:
    """One row per metric, one column per system."""
    names = list(systems)
    width = max([10, *map(len, names)])
    lines = [f"{'metric':<16}" + "".join(f"{n:>{width + 2}}" for n in names)]
    for key, label in CaptionScores.TABLE:
        cells = []
        for s in systems.values():
            value = getattr(s, key)
            cells.append(f"{'-' if value is None else f'{value:.4f}':>{width + 2}}")
        lines.append(f"{label:<16}" + "".join(cells))
    lines.append(f"{'pairs':<16}" + "".join(f"{s.pairs:>{width + 2}}" for s in systems.values()))
    return "\n".join(lines)


def write_report(
    out_dir: Path, systems: Mapping[str, CaptionScores], *, title: str = "caption scores"
) -> tuple[Path, Path]:
    """out_dir/scores.json (every score, notes and per-pair scores of each system) and
    out_dir/scores.png (grouped bars, one group per metric). Returns both paths."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # Agg: no display needed
    from matplotlib.figure import Figure

    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, png_path = out_dir / "scores.json", out_dir / "scores.png"
    doc = {"title": title, "systems": {name: s.as_dict(per_pair=True) for name, s in systems.items()}}
    json_path.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")

    metrics = [(k, lab) for k, lab in CaptionScores.TABLE if any(getattr(s, k) is not None for s in systems.values())]
    fig = Figure(figsize=(max(6.0, 0.8 * len(metrics) * len(systems) ** 0.5 + 2), 4.2), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(systems))
    for i, (name, s) in enumerate(systems.items()):
        xs = [m + (i - (len(systems) - 1) / 2) * width for m in range(len(metrics))]
        values = [getattr(s, k) or 0.0 for k, _ in metrics]
        bars = ax.bar(xs, values, width, label=name)
        ax.bar_label(bars, labels=[f"{v:.2f}" for v in values], fontsize=7, padding=1)
    ax.set_xticks(range(len(metrics)), [label for _, label in metrics], rotation=30, ha="right")
    ax.set_ylabel("score")
    ax.set_title(title)
    ax.set_ylim(0, max(1.0, *(getattr(s, k) or 0.0 for s in systems.values() for k, _ in metrics)) * 1.1)
    if len(systems) > 1:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png_path)
    return json_path, png_path
