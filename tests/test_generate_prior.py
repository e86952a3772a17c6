"""Prior preservation for every personalisation method and the ``base`` generator, on the shipped
known-class base (lthash/models/fashion-mnist-class-names) and the default split its corpus is
the complement of (real Fashion-MNIST)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from lthash.config import validate_config
from lthash.errors import LthashError
from lthash.generate.concepts import read_concept
from lthash.generate.corpus import Corpus, index_digest, read_corpus, split_indices, write_corpus
from lthash.generate.models import build_tiny_components, save_components
from lthash.generate.personalize.runner import personalize
from lthash.io import load_safetensors, read_attrs, read_image_set

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "lthash" / "models" / "fashion-mnist-class-names"
SNEAKER = 7
STAGES = {"attndreambooth": ["embedding", "cross_attention", "unet"], "dreambooth": ["unet"],
          "textual_inversion": ["embedding"]}


def params(method: str, prior: dict | None = None) -> dict:
    """A validated generate section: every stage of ``method`` 3 steps of batch 2, prior as given."""
    block = {"stages": {name: {"steps": 3, "batch_size": 2} for name in STAGES[method]}}
    if prior is not None:
        block["prior_preservation"] = {"enabled": True, **prior}
    section = {"schedule": "tiny", "checkpoint_every": 0, "sample_grid": {"images": 0}, method: block}
    return validate_config({"dataset": {}, "generate": {"personalize": section}})["generate"]


@pytest.fixture(scope="module")
def default_split(tmp_path_factory, fashion_mnist_root):
    """The split of config.yaml (the one the shipped base's corpus is disjoint from)."""
    from lthash.data.split import run_split

    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    cfg = validate_config({"dataset": config["dataset"], "split": config["split"]})
    folder = tmp_path_factory.mktemp("default-split")
    run_split(cfg["dataset"], cfg["split"], folder / "split.h5", folder / "split.json")
    return folder / "split.h5"


def trained(out: Path) -> dict[str, torch.Tensor]:
    """The concept's [V] row and (when it has one) its UNet weights."""
    from safetensors.torch import load_file

    tensors = {"row": load_safetensors(out / "token_embedding.safetensors")[0]["<v7>"]}
    unet = out / "unet" / "diffusion_pytorch_model.safetensors"
    return tensors | (load_file(unet) if unet.exists() else {})


@pytest.mark.parametrize("method", ["attndreambooth", "dreambooth", "textual_inversion"])
def test_prior_preservation_enters_the_loss_of_every_method(method, default_split, tmp_path):
    plain = personalize(SHIPPED, default_split, SNEAKER, method, tmp_path / "plain", params(method))
    kept = personalize(SHIPPED, default_split, SNEAKER, method, tmp_path / "prior",
                       params(method, {"images": 4, "weight": 1.0, "source": "corpus"}))
    record = read_concept(kept)
    assert all("prior" in stage["final"] for stage in record["stages"])
    assert not any("prior" in stage["final"] for stage in read_concept(plain)["stages"])
    assert record["prior"]["prompt"] == "a photo of a sneaker" and record["prior"]["images"] == 4
    a, b = trained(plain), trained(kept)
    assert a.keys() == b.keys()
    if method == "textual_inversion":
        # only the [V] row trains and the class prompt has no [V]: the prior term has no gradient
        assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    else:
        assert any(not torch.allclose(a[k], b[k], atol=1e-6) for k in a if k != "row")


def test_corpus_class_images_come_from_the_corpus_never_from_the_split(default_split, tmp_path):
    from lthash.data.readers import load_dataset

    out = personalize(SHIPPED, default_split, SNEAKER, "dreambooth", tmp_path / "c",
                      params("dreambooth", {"images": 6, "source": "corpus"}))
    prior = read_concept(out)["prior"]
    index = np.asarray(prior["index"])
    assert prior["source"] == "corpus" and len(index) == len(set(index.tolist())) == 6
    _, corpus = read_corpus(SHIPPED)
    assert np.isin(index, corpus).all()
    assert not np.intersect1d(index, split_indices(default_split)).size
    for group in ("train", "train_balanced", "validation", "database", "query"):
        assert not np.intersect1d(index, read_image_set(default_split, group, load_images=False).index).size
    record, _ = read_corpus(SHIPPED)
    labels = load_dataset(record["split_params"]["dataset"]).labels[index]
    assert (labels == SNEAKER).all(), "a class_name base captions only the class's own images with its prompt"
    samples = personalize(SHIPPED, default_split, SNEAKER, "dreambooth", tmp_path / "s",
                          params("dreambooth", {"images": 3, "source": "samples"}))
    assert read_concept(samples)["prior"] | {"prompt": None} == {"source": "samples", "images": 3, "weight": 1.0,
                                                                  "index": None, "prompt": None}


def test_prior_preservation_without_class_images_is_refused_naming_the_key(default_split, tmp_path):
    key = r"generate\.personalize\.attndreambooth\.prior_preservation\.source"
    names = read_attrs(default_split)["class_names"]
    bare = save_components(build_tiny_components(["clothing", "footwear", "accessory"], 28, 1, 0), tmp_path / "bare")
    corpus_params = params("attndreambooth", {"source": "corpus"})
    with pytest.raises(LthashError, match=key + ".*records no corpus"):
        personalize(bare, default_split, SNEAKER, "attndreambooth", tmp_path / "x", corpus_params)
    train = read_image_set(default_split, "train")
    write_corpus(bare, Corpus(train.images, train.labels, train.index,
                              {"kind": "split_train", "dataset": "fashion-mnist", "images": len(train.labels)}))
    with pytest.raises(LthashError, match=key + ".*split's own training images"):
        personalize(bare, default_split, SNEAKER, "attndreambooth", tmp_path / "x", corpus_params)
    no_sneakers = tmp_path / "no-sneakers"
    shutil.copytree(SHIPPED, no_sneakers)
    from lthash.data.readers import load_dataset

    record, index = read_corpus(SHIPPED)
    labels = load_dataset(record["split_params"]["dataset"]).labels
    kept = index[labels[index] != SNEAKER]
    write_corpus(no_sneakers, Corpus(np.zeros((0, 28, 28, 1), np.uint8), labels[kept], kept,
                                     record | {"index_sha256": index_digest(kept), "images": len(kept)}))
    with pytest.raises(LthashError, match=key + r".*no image of class 7 \('Sneaker'\)"):
        personalize(no_sneakers, default_split, SNEAKER, "attndreambooth", tmp_path / "x", corpus_params)
    assert names[SNEAKER] == "Sneaker" and not (tmp_path / "x").exists()


def test_the_base_generator_draws_a_shard_with_no_personalisation(default_split, tmp_path):
    from lthash.workflow import stage_config
    from lthash.generate.plan import make_plan
    from lthash.generate.synthesize import synthesize_shard
    from lthash.workflow import generator_model, param_jobs

    with pytest.raises(LthashError, match="'base' trains nothing"):
        personalize(SHIPPED, default_split, SNEAKER, "base", tmp_path / "x", params("dreambooth"))
    model = generator_model("results", "base", "7", str(SHIPPED))
    assert model == str(SHIPPED) and generator_model("results", "dreambooth", "7", "b") == \
        "results/generate/dreambooth/concepts/class7"
    names = read_attrs(default_split)["class_names"]
    plan = make_plan(read_image_set(default_split, "train", load_images=False).attrs["counts"], names,
                     pretrain_per_class=6, shard_size=6)
    out = tmp_path / "shard.h5"
    synthesize_shard(model, SHIPPED, SNEAKER, "pretrain", 0, plan, default_split, out,
                     stage_config("synthesize", json.dumps({"synthesis": {"steps": 2}}))["generate"], progress=False)
    shard = read_image_set(out, "synthetic")
    assert shard.attrs["generator"] == "base" and shard.attrs["prompt"] == "a photo of a sneaker"
    assert shard.images.shape == (6, 28, 28, 1) and (shard.labels == SNEAKER).all()
    config = validate_config({"dataset": {}, "experiment": {"generators": ["base", "textual_inversion"]}})
    jobs = {(rule, job.get("generator")) for rule, job in param_jobs(config)}
    assert ("personalize", "textual_inversion") in jobs and ("personalize", "base") not in jobs
    assert ("synthesize", "base") in jobs
