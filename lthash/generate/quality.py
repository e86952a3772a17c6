"""How good synthetic images are: class fidelity, diversity, closeness to the training images.

A judge classifier is trained on the real balanced training set (``train_balanced``; never the
query set for training) and its accuracy on the real query set is reported, so its verdicts can
be weighed. It is a measurement instrument only: the synthesis filter has its own judge, trained
on the long-tail set (:mod:`lthash.generate.judge` holds the CNN both use). For every generator and class:

- ``class_fidelity``: fraction of synthetic images the judge assigns to their class;
- ``category_fidelity``: fraction assigned to a class of the same super-category (what a
  class-agnostic generator such as ``base`` on a category-captioned base can at best achieve);
- per super-category group (``groups``): the mean class fidelity of its classes beside the
  group's chance level 1/|group|, and ``chance_class_fidelity`` = the mean of 1/|group| over
  classes (the fidelity of samples that keep the category and nothing of the class);
- ``diversity``: mean pairwise distance of the synthetic images in a PCA space of the real
  images' pixels (centred, not standardised: scaling up the near-constant background pixels
  would make pixel noise count as diversity),
  and ``diversity_ratio`` = that over the same figure for as many real images of the class;
- ``nearest_train_ratio``: mean distance from a synthetic image to its nearest long-tail
  training image of the class, over the same for real query images (well below 1 = copies);
- ``synthetic_to_real``: what the samples teach about real images (the classification accuracy
  score of Ravuri and Vinyals): the judge's CNN trained on one generator's samples alone, their
  class as label (``transfer_steps`` steps; 0, the default, measures nothing), then its
  accuracy on real held-out images (the validation group where the split has one, else the
  queries; ``transfer["evaluated_on"]`` says which), overall and per class; ``then_longtail``: that CNN then taught on the real long-tail set as long again, as
  the hash arms pretrain on the samples and fine-tune on real images. ``transfer`` holds the
  same CNN trained on the real long-tail set (as long as either), the control a generator's
  samples must beat, and on the real balanced set, the bound. A sample the judge
  puts in its class can still teach little about the real class (too few kinds of it, or
  kinds the real images do not have): this is where that shows, before any hash network trains.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from lthash.errors import LthashError
from lthash.io import atomic_path, read_attrs, read_image_set

if TYPE_CHECKING:
    from lthash.generate.judge import Judge

log = logging.getLogger("lthash.quality")


@dataclass
class QualityJudge:
    """The measurement instrument: a classifier of uint8 images plus the PCA feature map used for distances."""

    kind: str
    model: Any
    scaler: Any
    pca: Any

    def _flat(self, images: np.ndarray) -> np.ndarray:
        return self.scaler.transform(images.reshape(len(images), -1).astype(np.float32) / 255.0)

    def predict(self, images: np.ndarray) -> np.ndarray:
        if self.kind == "cnn":
            return self.model.predict(images)
        return self.model.predict(self.pca.transform(self._flat(images)))

    def features(self, images: np.ndarray) -> np.ndarray:
        """PCA of centred pixels (fitted on the real images): the same space for every judge."""
        return self.pca.transform(self._flat(images))


def train_quality_judge(images: np.ndarray, labels: np.ndarray, num_classes: int, kind: str = "cnn",
                        feature_dim: int = 50, seed: int = 0) -> QualityJudge:
    """Fit the judge on real images (uint8 NHWC) with integer labels: the CNN of
    :mod:`lthash.generate.judge` with plain cross-entropy, or logistic regression on PCA features."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from lthash.generate.judge import train_judge

    if len(images) == 0:
        raise LthashError("the judge classifier needs real images (group 'train_balanced' is empty)")
    flat = images.reshape(len(images), -1).astype(np.float32) / 255.0
    scaler = StandardScaler(with_std=False).fit(flat)
    scaled = scaler.transform(flat)
    pca = PCA(n_components=min(feature_dim, *scaled.shape), random_state=seed).fit(scaled)
    if kind == "cnn":
        model: Any = train_judge(images, labels, num_classes, seed, class_balanced=False)
    elif kind == "logistic":
        model = LogisticRegression(max_iter=500, random_state=seed).fit(pca.transform(scaled), labels)
    else:
        raise LthashError(f"config key 'generate.quality.classifier': unknown judge {kind!r}")
    return QualityJudge(kind=kind, model=model, scaler=scaler, pca=pca)


def mean_pairwise_distance(features: np.ndarray) -> float:
    """Mean Euclidean distance over all pairs (0 for fewer than two points)."""
    n = len(features)
    if n < 2:
        return 0.0
    sq = (features ** 2).sum(1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * features @ features.T, 0.0)
    return float(np.sqrt(d2)[np.triu_indices(n, 1)].mean())


def mean_nearest_distance(queries: np.ndarray, references: np.ndarray) -> float:
    """Mean distance from each query point to its nearest reference point."""
    if len(queries) == 0 or len(references) == 0:
        return float("nan")
    sq = (queries ** 2).sum(1)[:, None] + (references ** 2).sum(1)[None, :] - 2 * queries @ references.T
    return float(np.sqrt(np.maximum(sq, 0.0)).min(1).mean())


def synthetic_by_generator(paths: Sequence[str | os.PathLike], shape: tuple[int, int, int],
                           class_names: list[str]) -> dict[str, dict[int, np.ndarray]]:
    """Synthetic images by generator and class, from shard files read (and checked against the
    split: image shape, class range and names) by :func:`lthash.hashing.data.read_shards`."""
    from lthash.hashing.data import read_shards

    paths_of: dict[str, list[str | os.PathLike]] = defaultdict(list)
    for path in paths:
        paths_of[str(read_attrs(path, "synthetic").get("generator", "unknown"))].append(path)
    found = {}
    for generator in sorted(paths_of):
        images, labels = read_shards(paths_of[generator], shape, class_names)
        found[generator] = {int(cls): images[labels == cls] for cls in np.unique(labels)}
    return found


#: Images per step of every transfer classifier.
TRANSFER_BATCH = 128


def teach(images: np.ndarray, labels: np.ndarray, num_classes: int, seed: int, steps: int,
          init: "Judge | None" = None) -> "Judge":
    """The judge's CNN (:func:`lthash.generate.judge.train_judge`, plain cross-entropy) taught on
    ``images`` with integer ``labels`` for about ``steps`` steps of :data:`TRANSFER_BATCH` images,
    whatever their number (2,000 samples and a 900-image long-tail set are taught equally long),
    from ``init``'s weights where given."""
    from lthash.generate.judge import train_judge

    epochs = max(1, -(-steps * TRANSFER_BATCH // len(images)))
    return train_judge(images, labels, num_classes, seed, class_balanced=False, epochs=epochs,
                       batch=TRANSFER_BATCH, init=init)


def held_out_accuracy(model, held_out) -> tuple[float, dict[int, float]]:
    """(accuracy, per-class accuracy) of ``model`` on ``held_out`` (an ImageSet of real images):
    acc = mean_i [argmax f(x_i) = y_i]."""
    correct = model.predict(held_out.images) == held_out.labels
    return float(correct.mean()), {int(c): float(correct[held_out.labels == c].mean())
                                   for c in np.unique(held_out.labels)}


def transfer_accuracy(images: np.ndarray, labels: np.ndarray, held_out, num_classes: int, seed: int,
                      steps: int) -> tuple[float, dict[int, float]]:
    """:func:`held_out_accuracy` of the CNN taught (:func:`teach`) on ``images`` alone."""
    return held_out_accuracy(teach(images, labels, num_classes, seed, steps), held_out)


def _synthetic_to_real(by_class: Mapping[int, np.ndarray], limit: int, train, held_out, class_names: Sequence[str],
                       seed: int, steps: int) -> dict[str, Any]:
    """One generator's ``synthetic_to_real`` entry: :func:`held_out_accuracy` of a CNN taught on
    up to ``limit`` of its samples per class (a seeded subset), and of that CNN taught on the real
    long-tail set ``train`` for as many steps again (``then_longtail``: pretraining on the samples,
    then the real images, as the hash arms train)."""
    taught = {cls: _subset(images, limit, np.random.default_rng(seed + 1 + cls)) for cls, images in by_class.items()}
    model = teach(np.concatenate(list(taught.values())),
                  np.concatenate([np.full(len(v), c) for c, v in taught.items()]), len(class_names), seed, steps)
    accuracy, per_class = held_out_accuracy(model, held_out)
    then_longtail = held_out_accuracy(teach(train.images, train.labels, len(class_names), seed, steps, init=model),
                                      held_out)
    return {"accuracy": accuracy, "per_class": {class_names[c]: a for c, a in per_class.items()},
            "then_longtail": then_longtail[0],
            "then_longtail_per_class": {class_names[c]: a for c, a in then_longtail[1].items()},
            "images": int(sum(len(v) for v in taught.values()))}


def _transfer_controls(train, balanced, group: str, held_out, num_classes: int, seed: int,
                       steps: int) -> dict[str, Any]:
    """The scale a generator's ``synthetic_to_real`` is read on: :func:`transfer_accuracy` of the
    CNN taught on the real long-tail set (the control; ``longtail_real_twice`` for as long as
    ``then_longtail`` trains in all) and on the real balanced set (the bound)."""
    return {"evaluated_on": group, "images": int(len(held_out.labels)), "steps": steps,
            "longtail_real": transfer_accuracy(train.images, train.labels, held_out, num_classes, seed, steps)[0],
            "longtail_real_twice": transfer_accuracy(train.images, train.labels, held_out, num_classes, seed,
                                                     2 * steps)[0],
            "balanced_real": transfer_accuracy(balanced.images, balanced.labels, held_out, num_classes, seed, steps)[0]}


def _held_out_real(split_path: str | os.PathLike, query) -> tuple[str, Any]:
    """(group name, images) of the real images transfer is measured on: the split's validation
    group where it has one, else ``query`` (the queries, read already)."""
    try:
        validation = read_image_set(split_path, "validation")
    except LthashError:  # no validation group (split.validation_per_class: 0)
        return "query", query
    return ("validation", validation) if len(validation.labels) else ("query", query)


def _subset(images: np.ndarray, limit: int, rng: np.random.Generator) -> np.ndarray:
    if len(images) <= limit:
        return images
    return images[np.sort(rng.choice(len(images), limit, replace=False))]


def fidelity_by_group(per_class: Mapping[str, Mapping[str, Any]], categories: Sequence[str]) -> dict[str, Any]:
    """Class fidelity per super-category group beside its chance level 1/|group| (what samples
    that keep the category but carry nothing of the class score): a one-class group scores 1
    for free, so every group is reported on its own."""
    groups: dict[str, Any] = {}
    for group in sorted(set(categories), key=list(categories).index):
        members = {name: v for name, v in per_class.items() if categories[v["class_index"]] == group}
        if members:
            groups[group] = {"classes": list(members), "chance": 1.0 / list(categories).count(group),
                             "class_fidelity": float(np.mean([v["class_fidelity"] for v in members.values()]))}
    return groups


def generator_summary(per_class: Mapping[str, Mapping[str, Any]], categories: Sequence[str]) -> dict[str, Any]:
    """One generator's entry: its classes, their means (class, category and tail fidelity,
    diversity ratio), fidelity by group and the chance level of class fidelity."""
    values = list(per_class.values())
    return {
        "groups": fidelity_by_group(per_class, categories),
        "chance_class_fidelity": float(np.mean([1.0 / list(categories).count(categories[v["class_index"]])
                                                for v in values])),
        "classes": dict(per_class),
        "mean_class_fidelity": float(np.mean([v["class_fidelity"] for v in values])),
        "mean_category_fidelity": float(np.mean([v["category_fidelity"] for v in values])),
        "tail_class_fidelity": float(np.mean([v["class_fidelity"] for v in values if v["tail"]]))
        if any(v["tail"] for v in values) else None,
        "mean_diversity_ratio": float(np.nanmean([v["diversity_ratio"] for v in values])),
    }


def evaluate_quality(split_path: str | os.PathLike, shard_paths: Sequence[str | os.PathLike],
                     params: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(metrics JSON, material for the grid) from the split and the shards.

    ``params`` is the ``generate`` section (``seed``, ``categories``, ``quality``).
    """
    from lthash.generate.prompts import class_categories

    settings = params["quality"]
    seed = int(params["seed"])
    rng = np.random.default_rng(seed)
    class_names = list(read_attrs(split_path)["class_names"])
    categories = class_categories(class_names, params.get("categories"), params.get("class_words"))
    balanced = read_image_set(split_path, "train_balanced")
    query = read_image_set(split_path, "query")
    train = read_image_set(split_path, "train")
    if balanced.labels.ndim != 1:
        raise LthashError("quality needs single-label classes (the split has one-hot labels)")
    judge = train_quality_judge(balanced.images, balanced.labels, len(class_names),
                                settings["classifier"], settings["feature_dim"], seed)
    query_pred = judge.predict(query.images)
    category_of = np.array(categories)
    synthetic = synthetic_by_generator(shard_paths, balanced.images.shape[1:], class_names)
    limit = int(settings["max_per_class"])
    steps = int(settings["transfer_steps"])
    held_out_group, held_out = _held_out_real(split_path, query) if steps else ("", None)
    train_counts = np.bincount(train.labels, minlength=len(class_names))
    order = np.argsort(-train_counts, kind="stable")
    tail = set(order[len(order) - max(1, len(order) // 3):].tolist())
    generators: dict[str, Any] = {}
    for generator, by_class in synthetic.items():
        per_class = {}
        for cls, images in by_class.items():
            images = _subset(images, limit, rng)
            pred = judge.predict(images)
            feats = judge.features(images)
            real = _subset(balanced.images[balanced.labels == cls], len(images), rng)
            real_feats = judge.features(real)
            train_feats = judge.features(train.images[train.labels == cls])
            query_feats = judge.features(query.images[query.labels == cls])
            diversity, real_diversity = mean_pairwise_distance(feats), mean_pairwise_distance(real_feats)
            near_synth = mean_nearest_distance(feats, train_feats)
            near_real = mean_nearest_distance(query_feats, train_feats)
            per_class[class_names[cls]] = {
                "class_index": cls,
                "images": int(len(images)),
                "real_train_images": int(train_counts[cls]),
                "tail": cls in tail,
                "class_fidelity": float((pred == cls).mean()),
                "category_fidelity": float((category_of[pred] == categories[cls]).mean()),
                "diversity": diversity,
                "real_diversity": real_diversity,
                "diversity_ratio": diversity / real_diversity if real_diversity > 0 else float("nan"),
                "nearest_train_ratio": near_synth / near_real if near_real > 0 else float("nan"),
            }
        generators[generator] = generator_summary(per_class, categories)
        if steps:
            generators[generator]["synthetic_to_real"] = _synthetic_to_real(
                by_class, limit, train, held_out, class_names, seed, steps)
    metrics = {
        "judge": {
            "classifier": judge.kind,
            "trained_on": "train_balanced",
            "query_accuracy": float((query_pred == query.labels).mean()),
            "query_accuracy_per_class": {class_names[c]: float((query_pred[query.labels == c] == c).mean())
                                         for c in range(len(class_names)) if (query.labels == c).any()},
        },
        "transfer": _transfer_controls(train, balanced, held_out_group, held_out, len(class_names), seed, steps)
        if steps else None,
        "class_names": class_names,
        "categories": categories,
        "tail_classes": [class_names[c] for c in sorted(tail)],
        "generators": generators,
    }
    grid = {"class_names": class_names, "real": {c: train.images[train.labels == c] for c in range(len(class_names))},
            "synthetic": synthetic}
    return metrics, grid


def save_real_vs_synthetic_grid(path: str | os.PathLike, grid: Mapping[str, Any], per_row: int = 8) -> None:
    """One row per class: real training images, then each generator's synthetic images."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = grid["class_names"]
    generators = list(grid["synthetic"])
    blocks = ["real (long-tail train)"] + generators
    sample = next(iter(grid["real"].values()))
    height, width, channels = sample.shape[1:]
    fig, axes = plt.subplots(len(names), len(blocks), squeeze=False,
                             figsize=(1.6 + 0.42 * per_row * len(blocks), 0.5 + 0.42 * len(names)))
    for row, name in enumerate(names):
        for col, block in enumerate(blocks):
            images = grid["real"].get(row) if col == 0 else grid["synthetic"][block].get(row)
            tile = np.zeros((height, width * per_row, channels), dtype=np.uint8)
            if images is not None:
                for k, image in enumerate(images[:per_row]):
                    tile[:, k * width:(k + 1) * width] = image
            ax = axes[row][col]
            ax.imshow(tile.squeeze(-1) if channels == 1 else tile, cmap="gray" if channels == 1 else None,
                      vmin=0, vmax=255, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(block, fontsize=9)
            if col == 0:
                ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
    fig.tight_layout()
    with atomic_path(Path(path), suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
