"""Training curves: history.csv and curves.png (loss, learning rate, validation mAP per epoch)."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Sequence

from lthash.io import atomic_path

COLUMNS = ("epoch", "loss", "lr", "val_map", "seconds", "images_per_second")


def write_history(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: ("" if row.get(key) is None else row.get(key)) for key in COLUMNS})
    with atomic_path(path) as tmp:
        tmp.write_text(buffer.getvalue())


def plot_curves(path: Path, rows: Sequence[dict[str, Any]], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("loss", "training loss"), ("lr", "learning rate")]
    if any(row.get("val_map") is not None for row in rows):
        panels.append(("val_map", "validation mAP"))
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2), squeeze=False)
    for ax, (key, label) in zip(axes[0], panels):
        points = [(row["epoch"], row[key]) for row in rows if row.get(key) is not None]
        if points:
            ax.plot(*zip(*points), marker="o", markersize=3)
        ax.set_xlabel("epoch")
        ax.set_title(label)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
