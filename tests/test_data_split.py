"""The split: protocols, disjointness, sizes, seeded reproducibility, the CLI end to end on real
Fashion-MNIST, and bad requests failing with exit code 2 and no output."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from conftest import FASHION_CLASSES
from lthash.cli import main
from lthash.config import validate_config
from lthash.data.longtail import profile_sizes
from lthash.data.split import GROUPS, SplitPlan, check_disjoint, plan_split
from lthash.errors import LthashError
from lthash.io import read_attrs, read_image_set

NAMES = [f"c{i}" for i in range(10)]


def split_cfg(**overrides) -> dict:
    """A complete split section (schema defaults) with ``overrides`` applied."""
    return validate_config({"dataset": {}, "split": overrides})["split"]


def per_class(plan: SplitPlan, labels: np.ndarray, group: str, classes: int) -> list[int]:
    return np.bincount(labels[plan.indices[group]], minlength=classes).tolist()


def assert_invariants(plan: SplitPlan, labels: np.ndarray, source: str = "train_balanced") -> None:
    idx = plan.indices
    assert not set(idx["query"]) & set(idx["database"])
    assert set(idx["train"]) <= set(idx[source]) <= set(idx["database"])
    assert set(idx["train_balanced"]) <= set(idx["database"])
    for values in idx.values():
        assert len(set(values.tolist())) == len(values)
        assert np.all(np.diff(values) > 0) and (not len(values) or values.max() < len(labels))


# --- plan_split on label arrays ---------------------------------------------------------------

def test_per_class_protocol_sizes_and_disjointness():
    labels = np.repeat(np.arange(10), 60)
    plan = plan_split(labels, NAMES, split_cfg(query_per_class=5, train_per_class=40,
                                               longtail={"imbalance_factor": 10}))
    assert per_class(plan, labels, "query", 10) == [5] * 10
    assert per_class(plan, labels, "database", 10) == [55] * 10
    assert per_class(plan, labels, "train_balanced", 10) == [40] * 10
    sizes, _ = profile_sizes("zipf", 40, 10, 10, None)
    train = per_class(plan, labels, "train", 10)
    assert [train[c] for c in plan.class_order] == sizes == plan.sizes_by_rank
    assert_invariants(plan, labels)


def test_database_cap_and_train_per_class_null():
    labels = np.repeat(np.arange(4), [30, 20, 25, 40])
    plan = plan_split(labels, NAMES[:4], split_cfg(query_per_class=3, database_per_class=15,
                                                   train_per_class=None, longtail={"profile": "none"}))
    assert per_class(plan, labels, "database", 4) == [15, 15, 15, 15]
    assert per_class(plan, labels, "train_balanced", 4) == [15] * 4
    assert per_class(plan, labels, "train", 4) == [15] * 4


def test_profile_none_from_database_keeps_natural_long_tail():
    labels = np.repeat(np.arange(3), [50, 12, 30])
    plan = plan_split(labels, NAMES[:3], split_cfg(query_per_class=2, train_per_class=None,
                                                   longtail={"profile": "none", "source": "database"}))
    assert per_class(plan, labels, "train", 3) == [48, 10, 28]
    assert per_class(plan, labels, "train_balanced", 3) == [10, 10, 10]
    assert plan.class_order.tolist() == [0, 2, 1]  # head to tail by size
    assert_invariants(plan, labels, source="database")


def test_lthnet_imagenet_style_long_tail_from_the_database():
    labels = np.repeat(np.arange(5), 60)
    plan = plan_split(labels, NAMES[:5], split_cfg(query_per_class=5, train_per_class=10,
                                                   longtail={"s1": 55, "mu": 1.0, "source": "database"}))
    train = per_class(plan, labels, "train", 5)
    assert [train[c] for c in plan.class_order] == [55, 27, 18, 13, 11]
    assert_invariants(plan, labels, source="database")


def test_dataset_protocol_uses_official_split():
    labels = np.tile(np.arange(3), 40)
    official = {"train": np.arange(90), "test": np.arange(90, 120)}
    plan = plan_split(labels, NAMES[:3], split_cfg(protocol="dataset", query_per_class=None, train_per_class=20,
                                                   longtail={"imbalance_factor": 4}),
                      official=official)
    assert plan.indices["query"].tolist() == list(range(90, 120))
    assert plan.indices["database"].tolist() == list(range(90))
    with pytest.raises(LthashError, match="class 'c0' has 10 images in the test split, query_per_class asks for 11"):
        plan_split(labels, NAMES[:3], split_cfg(protocol="dataset", query_per_class=11), official=official)
    with pytest.raises(LthashError, match="no official train/test split"):
        plan_split(labels, NAMES[:3], split_cfg(protocol="dataset"), dataset_name="digits")


def test_lists_protocol_checks_train_inside_database():
    labels = np.repeat(np.arange(2), 6)
    lists = {"database": np.array([0, 1, 2, 6, 7, 8]), "test": np.array([3, 9]), "train": np.array([0, 1, 6, 7])}
    plan = plan_split(labels, NAMES[:2], split_cfg(protocol="lists", longtail={"imbalance_factor": 2}), lists=lists)
    assert plan.indices["train_balanced"].tolist() == [0, 1, 6, 7]
    assert per_class(plan, labels, "train", 2) in ([2, 1], [1, 2])
    lists["train"] = np.array([0, 4, 6, 7])
    with pytest.raises(LthashError, match="train list are not in the database list"):
        plan_split(labels, NAMES[:2], split_cfg(protocol="lists"), lists=lists)
    lists["train"] = np.array([0, 1])
    with pytest.raises(LthashError, match="class 'c1' has no images in the train list"):
        plan_split(labels, NAMES[:2], split_cfg(protocol="lists"), lists=lists)
    with pytest.raises(LthashError, match="dataset.name: list"):
        plan_split(labels, NAMES[:2], split_cfg(protocol="lists"))


def test_query_database_overlap_is_refused():
    plan = SplitPlan(indices={"query": np.array([1, 2]), "database": np.array([2, 3]),
                              "train_balanced": np.array([3]), "train": np.array([3])},
                     class_order=np.array([0, 1]), profile="none", s1=1, mu=None, train_per_class=1)
    with pytest.raises(LthashError, match="both the query set and the database"):
        check_disjoint(plan)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"query_per_class": 60}, r"class 'c0' has 60 images: query_per_class=60 leaves 0"),
        ({"query_per_class": 10, "train_per_class": 51}, r"class 'c0' has 50 database images, train_per_class asks for 51"),
        ({"query_per_class": 5, "train_per_class": 20, "longtail": {"s1": 21}}, r"class 'c\d' \(rank 1\) needs 21 long-tail images but its train_balanced set has 20"),
        ({"query_per_class": 5, "train_per_class": 20, "longtail": {"imbalance_factor": 40}}, r"gives class 'c\d' \(rank 7\) no images"),
    ],
)
def test_impossible_requests_name_the_class_and_numbers(overrides, message):
    labels = np.repeat(np.arange(10), 60)
    with pytest.raises(LthashError, match=message):
        plan_split(labels, NAMES, split_cfg(**overrides))


def test_seed_changes_every_draw_and_is_reproducible():
    labels = np.repeat(np.arange(10), 80)
    a = plan_split(labels, NAMES, split_cfg(seed=1, query_per_class=10, train_per_class=50))
    b = plan_split(labels, NAMES, split_cfg(seed=1, query_per_class=10, train_per_class=50))
    c = plan_split(labels, NAMES, split_cfg(seed=2, query_per_class=10, train_per_class=50))
    for group in GROUPS:
        assert np.array_equal(a.indices[group], b.indices[group])
    assert np.array_equal(a.class_order, b.class_order)
    assert not np.array_equal(a.class_order, c.class_order)
    for group in ("query", "train_balanced", "train"):
        assert not np.array_equal(a.indices[group], c.indices[group])


@settings(max_examples=150, deadline=None)
@given(
    counts=st.lists(st.integers(1, 40), min_size=2, max_size=8),
    query=st.integers(1, 8),
    train=st.integers(1, 30),
    cap=st.none() | st.integers(1, 40),
    profile=st.sampled_from(["zipf", "exponential", "none"]),
    factor=st.floats(1.0, 30.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_split_property(counts, query, train, cap, profile, factor, seed):
    classes = len(counts)
    labels = np.random.default_rng(seed).permutation(np.repeat(np.arange(classes), counts))
    cfg = split_cfg(seed=seed, query_per_class=query, train_per_class=train, database_per_class=cap,
                    longtail={"profile": profile, "imbalance_factor": factor})
    database = [min(n - query, cap if cap is not None else n) for n in counts]
    sizes, _ = profile_sizes(profile, train, classes, factor, None)
    feasible = (all(n > query for n in counts) and all(d >= train for d in database)
                and (profile == "none" or min(sizes) >= 1))
    if not feasible:
        with pytest.raises(LthashError, match=r"class '"):
            plan_split(labels, NAMES[:classes], cfg)
        return
    plan = plan_split(labels, NAMES[:classes], cfg)
    assert per_class(plan, labels, "query", classes) == [query] * classes
    assert per_class(plan, labels, "database", classes) == database
    assert per_class(plan, labels, "train_balanced", classes) == [train] * classes
    got = per_class(plan, labels, "train", classes)
    assert [got[c] for c in plan.class_order] == sizes
    assert sorted(plan.class_order.tolist()) == list(range(classes))
    assert_invariants(plan, labels)


@settings(max_examples=100, deadline=None)
@given(
    train_counts=st.lists(st.integers(1, 30), min_size=2, max_size=6),
    test_counts=st.lists(st.integers(1, 10), min_size=6, max_size=6),
    query=st.none() | st.integers(1, 6),
    seed=st.integers(0, 2**32 - 1),
)
def test_split_property_dataset_protocol(train_counts, test_counts, query, seed):
    classes = len(train_counts)
    test_counts = test_counts[:classes]
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.concatenate([np.repeat(np.arange(classes), train_counts),
                                             np.repeat(np.arange(classes), test_counts)]))
    is_test = np.zeros(len(labels), dtype=bool)
    for c, n in enumerate(test_counts):
        is_test[np.flatnonzero(labels == c)[:n]] = True
    official = {"train": np.flatnonzero(~is_test), "test": np.flatnonzero(is_test)}
    train = min(train_counts)
    cfg = split_cfg(seed=seed, protocol="dataset", query_per_class=query, train_per_class=train,
                    longtail={"profile": "exponential", "imbalance_factor": 1.0 + (seed % 5)})
    if query is not None and min(test_counts) < query:
        with pytest.raises(LthashError, match="in the test split"):
            plan_split(labels, NAMES[:classes], cfg, official=official)
        return
    sizes, _ = profile_sizes("exponential", train, classes, 1.0 + (seed % 5), None)
    if min(sizes) < 1:
        with pytest.raises(LthashError, match="no images"):
            plan_split(labels, NAMES[:classes], cfg, official=official)
        return
    plan = plan_split(labels, NAMES[:classes], cfg, official=official)
    assert set(plan.indices["query"]) <= set(official["test"].tolist())
    assert plan.indices["database"].tolist() == official["train"].tolist()
    assert per_class(plan, labels, "query", classes) == (test_counts if query is None else [query] * classes)
    got = per_class(plan, labels, "train", classes)
    assert [got[c] for c in plan.class_order] == sizes
    assert_invariants(plan, labels)


# --- the CLI on real data ---------------------------------------------------------------------

def run_cli(out_dir: Path, params: dict | str) -> int:
    text = params if isinstance(params, str) else json.dumps(params)
    return main(["split", "--out", str(out_dir / "split.h5"), "--summary", str(out_dir / "split.json"),
                 "--figure", str(out_dir / "class_distribution.png"), "--params", text, "--threads", "2"])


@pytest.fixture(scope="module")
def fashion_split(tmp_path_factory, fashion_mnist_root) -> Path:
    out = tmp_path_factory.mktemp("fashion")
    assert run_cli(out, {"dataset": {"name": "fashion-mnist", "root": fashion_mnist_root}, "split": {}}) == 0
    return out


def test_cli_default_fashion_mnist_split(fashion_split):
    path = fashion_split / "split.h5"
    attrs = read_attrs(path)
    assert attrs["class_names"] == FASHION_CLASSES and attrs["dataset"] == "fashion-mnist" and attrs["seed"] == 0
    params = attrs["params"]
    assert params["split"]["query_per_class"] == 100 and params["split"]["longtail"]["imbalance_factor"] == 50
    sets = {group: read_image_set(path, group) for group in GROUPS}
    expected = {"query": [100] * 10, "train_balanced": [500] * 10, "database": [6900] * 10}
    for group, counts in expected.items():
        assert sets[group].attrs["counts"] == counts
    order = attrs["class_order"]
    train_counts = sets["train"].attrs["counts"]
    assert [train_counts[c] for c in order] == [500, 154, 77, 47, 32, 23, 18, 14, 11, 10]
    for group, data in sets.items():
        assert data.images.shape == (len(data), 28, 28, 1) and data.images.dtype == np.uint8
        assert data.labels.dtype == np.int64 and data.index.dtype == np.int64
        assert np.bincount(data.labels, minlength=10).tolist() == data.attrs["counts"]
    assert not set(sets["query"].index) & set(sets["database"].index)
    assert set(sets["train"].index) <= set(sets["train_balanced"].index) <= set(sets["database"].index)
    # pixels and labels are those of the source position recorded in `index`
    from conftest import read_idx_gz

    test_images = read_idx_gz("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")
    query = sets["query"]
    from_test = query.index >= 60000
    assert from_test.any()
    assert np.array_equal(query.images[from_test][..., 0], test_images[query.index[from_test] - 60000])

    summary = json.loads((fashion_split / "split.json").read_text())
    assert summary["class_names"] == FASHION_CLASSES and summary["seed"] == 0
    assert summary["counts"]["train"] == train_counts and summary["totals"]["train"] == 886
    assert summary["class_order"] == [FASHION_CLASSES[c] for c in order]
    assert summary["params"] == params and summary["longtail"]["imbalance_factor"] == 50
    with Image.open(fashion_split / "class_distribution.png") as figure:
        assert figure.format == "PNG" and figure.size[0] > 100


def test_cli_same_seed_same_bytes_other_seed_other_draws(tmp_path):
    params = {"dataset": {"name": "digits"}, "split": {"query_per_class": 10, "train_per_class": 50, "seed": 3}}
    assert run_cli(tmp_path / "a", params) == 0
    assert run_cli(tmp_path / "b", params) == 0
    params["split"]["seed"] = 4
    assert run_cli(tmp_path / "c", params) == 0
    for name in ("split.h5", "split.json", "class_distribution.png"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    for group in ("query", "train_balanced", "train"):
        a = read_image_set(tmp_path / "a" / "split.h5", group, load_images=False).index
        c = read_image_set(tmp_path / "c" / "split.h5", group, load_images=False).index
        assert not np.array_equal(a, c)


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"dataset": {"name": "digits"}, "split": {"query_per_class": 200}}, "class '0' has 178 images"),
        ({"dataset": {"name": "digits"}, "split": {"train_per_class": 170}}, "train_per_class asks for 170"),
        ({"dataset": {"name": "digits"}, "split": {"protocol": "dataset"}}, "no official train/test split"),
        ({"dataset": {"name": "digits"}, "split": {"querry_per_class": 5}}, "split.querry_per_class"),
        ({"dataset": {"name": "mnist"}}, "dataset.name"),
        ({"dataset": {"name": "digits"}, "hashing": {}}, "not hashing"),
        ({"dataset": {"name": "cifar10", "root": "/nonexistent/cifar"}}, "/nonexistent/cifar"),
        ('{"dataset": ', "--params is not valid JSON"),
    ],
)
def test_cli_bad_requests_exit_2_and_leave_nothing(tmp_path, capsys, params, named):
    assert run_cli(tmp_path / "out", params) == 2
    err = capsys.readouterr().err
    assert named in err and err.startswith("lthash split: error:")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_cli_as_a_subprocess(tmp_path):
    import subprocess

    params = json.dumps({"dataset": {"name": "imagefolder", "root": str(tmp_path / "photos")}})
    result = subprocess.run(["lthash", "split", "--out", str(tmp_path / "out" / "s.h5"), "--params", params],
                            capture_output=True, text=True)
    assert result.returncode == 2 and f"dataset root not found: {tmp_path / 'photos'}" in result.stderr
    assert not (tmp_path / "out").exists()
