"""The knowledge measure: held-out denoising classification of real images by the shipped bases."""

from __future__ import annotations

import numpy as np
import pytest

from lthash.config import validate_config
from lthash.errors import LthashError
from lthash.generate.knowledge import knowledge_metrics, measure_generator, measurement_timesteps, tie_aware_correct
from lthash.generate.shipped import MODELS_DIR
from lthash.io import ImageSet, read_attrs, read_image_set, write_image_sets

CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
GROUPS = ["clothing", "clothing", "clothing", "clothing", "clothing", "footwear", "clothing", "footwear",
          "accessory", "footwear"]


@pytest.fixture(scope="module")
def split_with_validation(small_split, tmp_path_factory):
    """small_split plus a validation group: 5 database images per class that are in no training group
    (real Fashion-MNIST test-set images, which neither shipped base ever saw)."""
    sets = {name: read_image_set(small_split, name) for name in ("query", "database", "train_balanced", "train")}
    database = sets["database"]
    keep = np.concatenate([np.flatnonzero(database.labels == c)[-5:] for c in range(10)])
    sets["validation"] = ImageSet(images=database.images[keep], labels=database.labels[keep],
                                  index=database.index[keep], attrs={})
    path = tmp_path_factory.mktemp("knowledge") / "split.h5"
    write_image_sets(path, sets, attrs={"class_names": list(read_attrs(small_split)["class_names"]),
                                        "dataset": "fashion-mnist", "seed": 0})
    return path


def _params(**knowledge):
    return validate_config({"dataset": {}, "generate": {"knowledge": {"images_per_class": 5, "timesteps": 4,
                                                                      **knowledge}}})["generate"]


def test_ties_count_as_a_random_choice_among_the_tied_classes():
    losses = np.array([[1.0, 1.0, 2.0], [3.0, 1.0, 1.0], [0.5, 1.0, 1.0]])
    labels = np.array([0, 0, 0])
    assert tie_aware_correct(losses, labels).tolist() == [0.5, 0.0, 1.0]
    allowed = np.array([[True, False, True]] * 3)
    assert tie_aware_correct(losses, labels, allowed).tolist() == [1.0, 0.0, 1.0]


def test_group_scores_stand_beside_their_chance_and_a_one_class_group_is_reported_apart():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 4)
    losses = rng.random((40, 10))
    losses[np.arange(40), labels] = -1.0  # a perfect classifier
    metrics = knowledge_metrics(losses, labels, CLASSES, GROUPS)
    assert metrics["accuracy"] == metrics["within_group_accuracy"] == 1.0
    assert metrics["groups"]["clothing"]["chance"] == pytest.approx(1 / 6)
    assert metrics["groups"]["accessory"] == {"classes": ["Bag"], "chance": 1.0, "within_group_accuracy": 1.0}
    assert metrics["within_group_chance"] == pytest.approx((6 / 6 + 3 / 3 + 1) / 10)
    assert metrics["multi_class_groups"]["chance"] == pytest.approx((6 / 6 + 3 / 3) / 9)


def test_timesteps_are_evenly_spaced_inside_the_schedule_and_a_bad_count_names_the_key():
    assert measurement_timesteps(1000, 4).tolist() == [125, 375, 625, 875]
    with pytest.raises(LthashError, match="generate.knowledge.timesteps"):
        measurement_timesteps(1000, 0)


def test_a_base_told_only_the_category_sits_exactly_at_chance_within_groups(split_with_validation, one_torch_thread,
                                                                            tmp_path):
    base = MODELS_DIR / "fashion-mnist-categories"
    metrics = measure_generator([base] * 10, base, split_with_validation, _params(), "base")
    assert metrics["images"] == 50 and metrics["held_out"] == "validation"
    # every clothing class has the prompt "a photo of a clothing": identical losses, a tie of six
    for name, entry in metrics["classes"].items():
        assert entry["within_group_accuracy"] == pytest.approx(entry["within_group_chance"]), name
    assert metrics["within_group_accuracy"] == pytest.approx(metrics["within_group_chance"])
    assert len(set(metrics["prompts"])) == 3
    # the report's table: one row per group beside its chance, the multi-class groups, all classes
    from lthash.io import write_json
    from lthash.report.knowledge import knowledge_table
    from lthash.report.tables import to_markdown

    path = tmp_path / "knowledge.json"
    write_json(path, metrics)
    table = knowledge_table([path])
    rows = {r["group"]: r for r in table.records}
    assert sorted(rows) == ["accessory", "all classes", "clothing", "footwear", "multi-class groups"]
    assert list(rows)[-2:] == ["multi-class groups", "all classes"]
    assert rows["accessory"]["chance"] == 1.0 and rows["clothing"]["chance"] == pytest.approx(1 / 6)
    assert rows["multi-class groups"]["heldout_accuracy_within_group"] == pytest.approx(2 / 9)
    assert "| clothing | T-shirt/top, Trouser, Pullover, Dress, Coat, Shirt | 16.7 | 16.7 |" in to_markdown(table)
    assert not any(column.startswith("synthetic_to_real") for column in table.csv_columns)

    # with the quality stage's transfer measured, its columns: "samples" that are the real
    # balanced set teach a CNN exactly what the bound's CNN learns from it
    import numpy as np

    from lthash.config import validate_config
    from lthash.generate.quality import evaluate_quality
    from lthash.io import ImageSet, read_image_set, write_image_sets

    balanced = read_image_set(split_with_validation, "train_balanced")
    shard = tmp_path / "base.h5"
    write_image_sets(shard, {"synthetic": ImageSet(images=balanced.images, labels=balanced.labels,
                                                   index=np.arange(len(balanced.labels)), attrs={"generator": "base"})})
    params = validate_config({"dataset": {}, "generate": {"quality": {"transfer_steps": 20}}})["generate"]
    quality, _ = evaluate_quality(split_with_validation, [shard], params)
    taught = quality["generators"]["base"]["synthetic_to_real"]
    assert quality["transfer"]["evaluated_on"] == "validation" and taught["accuracy"] == quality["transfer"]["balanced_real"]
    write_json(tmp_path / "noise" / "quality.json", quality)
    table = knowledge_table([path], [tmp_path / "noise" / "quality.json"])
    rows = {r["group"]: r for r in table.records}
    assert rows["all classes"]["synthetic_to_real_noise"] == taught["accuracy"]
    assert rows["accessory"]["synthetic_to_real_noise"] == taught["per_class"]["Bag"]
    assert "on the real balanced set" in to_markdown(table)


def test_a_base_that_knows_the_class_names_classifies_held_out_images_far_above_chance(
        split_with_validation, one_torch_thread):
    base = MODELS_DIR / "fashion-mnist-class-names"
    metrics = measure_generator([base] * 10, base, split_with_validation, _params(), "base")
    assert len(set(metrics["prompts"])) == 10
    assert metrics["chance"] == 0.1 and metrics["accuracy"] >= 0.5
    assert metrics["multi_class_groups"]["within_group_accuracy"] >= 0.5


def test_a_split_without_validation_images_is_refused_naming_the_key(small_split):
    base = MODELS_DIR / "fashion-mnist-categories"
    with pytest.raises(LthashError, match="split.validation_per_class"):
        measure_generator([base] * 10, base, small_split, _params(), "base")
