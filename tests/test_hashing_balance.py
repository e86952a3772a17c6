"""hashing.train.balance logit_adjusted (Menon et al. 2021): the formula on constructed logits,
the methods that have class logits, the errors before any job, and real runs on Fashion-MNIST."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lthash.errors import LthashError
from lthash.workflow import stage_config
from lthash.hashing.losses.logit_adjustment import adjust_logits, logit_offset
from lthash.hashing.methods import REGISTRY, check_balance
from lthash.hashing.model import build_model
from lthash.hashing.train import run_training
from lthash.io import load_safetensors, read_image_set

pytestmark = pytest.mark.usefixtures("one_torch_thread")

COUNTS = np.array([500, 120, 30, 6, 1])
PRIOR = COUNTS / COUNTS.sum()
LOGITS = torch.tensor([[2.0, 0.5, -1.0, 0.3, 0.0],
                       [-0.4, 1.5, 0.2, 0.9, -2.0],
                       [0.1, 0.1, 0.1, 0.1, 0.1],
                       [1.2, -0.7, 0.4, 2.2, 0.6]], dtype=torch.float64)
LABELS = torch.tensor([0, 2, 4, 3])


def hand_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    """mean_i [log sum_c exp z_ic - z_i,y_i], written out."""
    return float(np.mean([np.log(np.exp(row).sum()) - row[y] for row, y in zip(logits, labels)]))


def test_the_offset_is_tau_times_the_log_prior_and_tau_zero_is_the_plain_loss():
    assert np.allclose(logit_offset(COUNTS, 0.7).numpy(), 0.7 * np.log(PRIOR), atol=1e-6)
    assert torch.equal(adjust_logits(LOGITS, logit_offset(COUNTS, 0.0).double()), LOGITS)
    assert adjust_logits(LOGITS, None) is LOGITS
    assert np.isfinite(logit_offset([10, 0, 3], 1.0).numpy()).all(), "a class without images gets a finite offset"


@pytest.mark.parametrize("tau", [0.5, 1.0, 2.0])
def test_adjusted_cross_entropy_equals_cross_entropy_of_logits_plus_tau_log_prior(tau):
    adjusted = F.cross_entropy(adjust_logits(LOGITS, logit_offset(COUNTS, tau).double()), LABELS)
    by_hand = hand_cross_entropy(LOGITS.numpy() + tau * np.log(PRIOR), LABELS.numpy())
    assert float(adjusted) == pytest.approx(by_hand, rel=1e-6)
    assert float(adjusted) != pytest.approx(float(F.cross_entropy(LOGITS, LABELS)), rel=1e-3)


def test_rare_classes_get_larger_gradients_and_need_larger_margins():
    offset = logit_offset(COUNTS, 1.0).double()
    logits = torch.zeros(len(COUNTS), len(COUNTS), dtype=torch.float64, requires_grad=True)
    labels = torch.arange(len(COUNTS))
    F.cross_entropy(adjust_logits(logits, offset), labels, reduction="sum").backward()
    pull = -logits.grad.diagonal()
    assert torch.all(pull[1:] > pull[:-1]), f"the rarer the class, the harder its true logit is pulled up: {pull}"
    plain_grad = torch.autograd.grad(F.cross_entropy(logits, labels, reduction="sum"), logits)[0]
    assert torch.allclose(-plain_grad.diagonal(), torch.full((5,), 0.8, dtype=torch.float64))

    def loss(margin: float, label: int, other: int, adjusted: bool) -> float:
        """Two-class loss of a sample of ``label`` whose logit leads ``other``'s by ``margin``."""
        z = torch.zeros(1, len(COUNTS), dtype=torch.float64)
        z[0, label] = margin
        z = z[:, [label, other]]
        shift = offset[[label, other]] if adjusted else None
        return float(F.cross_entropy(adjust_logits(z, shift), torch.tensor([0])))

    gap = float(np.log(PRIOR[0] / PRIOR[4]))
    for margin in (0.0, 1.5):
        plain = loss(margin, 4, 0, adjusted=False)
        assert loss(margin + gap, 4, 0, adjusted=True) == pytest.approx(plain), "rare class: margin larger by tau log(pi_h/pi_r)"
        assert loss(margin - gap, 0, 4, adjusted=True) == pytest.approx(plain), "head class: margin smaller by as much"


def test_class_logits_are_a_fact_of_the_registry():
    assert {name for name, cls in REGISTRY.items() if cls.has_class_logits} == {"orthohash", "lthnet", "lthnet_sq", "adh"}


def method_losses(method: str, out: dict[str, torch.Tensor], tau: float | None) -> float:
    """The method's loss of constructed outputs, plain (tau None) or logit-adjusted."""
    params = stage_config("train", json.dumps({"method": method, "bits": 16, "cnn": {"width": 4},
                                               "lthnet": {"feature_dim": 16}}))["hashing"]
    model = build_model(params, method, "cnn", 16, len(COUNTS), (28, 28, 1), COUNTS, 0)
    if tau is not None:
        model.adjust_logits_by_prior(tau)
    return float(model.loss(out, LABELS))


@pytest.mark.parametrize("method", ["orthohash", "lthnet", "lthnet_sq", "adh"])
def test_each_method_with_class_logits_adjusts_the_logits_of_its_loss(method):
    torch.manual_seed(0)
    cosine = torch.rand(len(LABELS), len(COUNTS)) * 2 - 1
    out = {"code": torch.randn(len(LABELS), 16), "cosine": cosine, "logits": LOGITS.float()}
    plain, adjusted = method_losses(method, out, None), method_losses(method, out, 1.0)
    assert method_losses(method, out, 0.0) == plain
    log_prior, labels = np.log(PRIOR), LABELS.numpy()
    if method == "orthohash":
        scaled = 8.0 * (cosine.numpy() - 0.2 * np.eye(len(COUNTS))[labels])
        assert adjusted == pytest.approx(hand_cross_entropy(scaled + log_prior, labels), rel=1e-5)
    elif method == "lthnet_sq":
        z = LOGITS.numpy() + log_prior
        probs = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
        assert adjusted == pytest.approx(np.mean(((probs - np.eye(len(COUNTS))[labels]) ** 2).sum(axis=1)), rel=1e-5)
    else:
        change = hand_cross_entropy(LOGITS.numpy() + log_prior, labels) - hand_cross_entropy(LOGITS.numpy(), labels)
        assert adjusted - plain == pytest.approx(change, rel=1e-4), "only the cross-entropy on the logits changes"


def test_balance_on_a_method_without_class_logits_is_one_error_naming_the_key_and_methods():
    check_balance(["orthohash", "lthnet", "lthnet_sq", "adh"])
    with pytest.raises(LthashError, match=r"'hashing.train.balance' is 'logit_adjusted', but csq has no class logits"):
        check_balance(["orthohash", "csq"])
    with pytest.raises(LthashError, match=r"'experiment.arms' .* but dpn, sdh have no class logits") as error:
        check_balance(["dpn", "lthnet", "sdh"], "experiment.arms")
    assert "methods with class logits: adh, lthnet, lthnet_sq, orthohash" in str(error.value)


def test_the_train_stage_refuses_it_before_reading_data(tmp_path):
    with pytest.raises(LthashError, match=r"'hashing.train.balance' .* but csq has no class logits"):
        run_training(tmp_path / "no-such-split.h5", "train", [], "real", None, tmp_path / "run",
                     params(method="csq", balance="logit_adjusted"), "cpu")
    assert not any(tmp_path.iterdir())


def test_a_negative_tau_is_a_schema_error_naming_the_key():
    with pytest.raises(LthashError, match=r"hashing\.train\.tau"):
        params(balance="logit_adjusted", tau=-0.5)


def params(method: str = "orthohash", **train):
    return stage_config("train", json.dumps({"method": method, "bits": 16, "cnn": {"width": 8},
                                             "train": {"epochs": 1, "batch_size": 32, "lr": 0.002,
                                                       **train}}))["hashing"]


def test_logit_adjustment_changes_the_trained_model_and_is_recorded(small_split, tmp_path):
    record = run_training(small_split, "train", [], "real", None, tmp_path / "adjusted",
                          params(balance="logit_adjusted", tau=1.0), "cpu")
    written = json.loads((tmp_path / "adjusted" / "run.json").read_text())
    for run in (record, written):
        assert run["train"]["balance"] == "logit_adjusted" == run["params"]["train"]["balance"]
        assert run["train"]["tau"] == 1.0 == run["params"]["train"]["tau"]
    assert written["train_counts"] == np.bincount(read_image_set(small_split, "train", False).labels).tolist()
    run_training(small_split, "train", [], "real", None, tmp_path / "plain", params(), "cpu")
    run_training(small_split, "train", [], "real", None, tmp_path / "tau0", params(balance="logit_adjusted", tau=0.0), "cpu")
    adjusted, plain, tau0 = (load_safetensors(tmp_path / name / "model.safetensors")[0]
                             for name in ("adjusted", "plain", "tau0"))
    assert set(adjusted) == set(plain), "the offset is not saved with the weights"
    assert any(not torch.equal(adjusted[key], plain[key]) for key in plain), "the adjustment changes the model"
    assert all(torch.equal(tau0[key], plain[key]) for key in plain), "tau = 0 trains the plain model bit for bit"


def test_lthnet_trains_logit_adjusted_through_the_cli_with_the_default_training_settings(small_split, tmp_path):
    """The default config's hashing section (config.yaml: steps 400, adam, cnn), cut to 20 steps."""
    spec = {"hashing": {"seed": 0, "method": "lthnet", "backbone": "cnn", "bits": 32,
                        "train": {"steps": 20, "balance": "logit_adjusted"}}}
    run = tmp_path / "lthnet"
    subprocess.run([sys.executable, "-m", "lthash.cli", "train", "--split", str(small_split), "--out", str(run),
                    "--params", json.dumps(spec), "--device", "cpu", "--threads", "1"], check=True, capture_output=True)
    record = json.loads((run / "run.json").read_text())
    assert record["method"] == "lthnet" and record["train"]["balance"] == "logit_adjusted"
    with open(run / "history.csv") as handle:
        losses = [float(row["loss"]) for row in csv.DictReader(handle)]
    assert np.isfinite(losses).all() and losses[-1] < losses[0], losses
