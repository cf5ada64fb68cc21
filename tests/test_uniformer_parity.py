"""Parity of UniFormer and UniFormer-FFN with the official FFN code (tests/golden/uniformer_ffn/).

The official state dicts are rebuilt as tests/golden/uniformer_ffn/README.md describes, loaded through
``load_official_state_dict`` and run through our models; every logit must match to float32 rounding. Each model
is built once per module; every golden input runs once.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.ops import StochasticDepth

from model import build_model, load_official_state_dict
from model.uniformer import is_official_uniformer_state_dict, official_uniformer_arch, unwrap_state_dict
from parity_helpers import golden_channels_first_input, rebuild_state_dict, relative_l2

GOLDEN_DIR = Path(__file__).parent / "golden" / "uniformer_ffn"
PARITY_FILE = GOLDEN_DIR / "uniformer_ffn_parity.json"
TSM_PARITY_FILE = Path(__file__).parent / "golden" / "ffn_tsm_parity.json"
MAX_RELATIVE_L2 = 1e-5
FFN_FRAMES = (4, 8, 16)
NUM_CLASSES = 174
GOLDEN_DROP_PATH_RATE = 0.2  # UNIFORMER.DROP_DEPTH_RATE of the official run (inactive in every golden call)
ARCH = "uniformer_s"


@pytest.fixture(scope="module")
def golden() -> dict:
    with open(PARITY_FILE) as handle:
        return json.load(handle)


@pytest.fixture(scope="module")
def ffn_state_dict(golden: dict) -> dict[str, torch.Tensor]:
    return rebuild_state_dict(golden["ffn_state_dict_spec"], golden["seed"], GOLDEN_DIR / "ffn_bn_stats.npz")


@pytest.fixture(scope="module")
def vanilla_state_dict(golden: dict) -> dict[str, torch.Tensor]:
    stats_file = GOLDEN_DIR / "uniformer_bn_stats.npz"
    return rebuild_state_dict(golden["uniformer_state_dict_spec"], golden["seed"], stats_file)


@pytest.fixture(scope="module")
def ffn_model(ffn_state_dict: dict) -> torch.nn.Module:
    model = build_model(ARCH, NUM_CLASSES, trained_frames=FFN_FRAMES, drop_path_rate=GOLDEN_DROP_PATH_RATE)
    missing, unexpected = load_official_state_dict(model, ffn_state_dict)
    assert missing == [] and unexpected == []
    return model.eval()


@pytest.fixture(scope="module")
def vanilla_model(vanilla_state_dict: dict) -> torch.nn.Module:
    model = build_model(ARCH, NUM_CLASSES, drop_path_rate=GOLDEN_DROP_PATH_RATE)
    missing, unexpected = load_official_state_dict(model, vanilla_state_dict)
    assert missing == [] and unexpected == []
    return model.eval()


def _cleared(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of `model` with every parameter and buffer zeroed (a loaded checkpoint must refill all of them)."""
    cleared = copy.deepcopy(model)
    with torch.no_grad():
        for tensor in cleared.state_dict().values():
            tensor.zero_()
    return cleared


def test_golden_spec_has_the_official_key_counts(golden: dict, ffn_model: torch.nn.Module) -> None:
    assert len(golden["ffn_state_dict_spec"]) == 639 and len(golden["uniformer_state_dict_spec"]) == 331
    assert len(ffn_model.state_dict()) == 639


@pytest.mark.slow
def test_ffn_eval_logits_match_official_at_every_frame_count(golden: dict, ffn_model: torch.nn.Module) -> None:
    """Trained counts (the official rule) and untrained ones (nearest branch, ties to the larger)."""
    errors = {}
    with torch.no_grad():
        for frames_text, case in golden["ffn"].items():
            frames = int(frames_text)
            assert ffn_model.branch_for(frames) == case["branch"]
            videos = golden_channels_first_input(case["input_seed"], case["n"], frames, golden["hw"])
            errors[frames] = relative_l2(ffn_model(videos), np.asarray(case["logits"]))
    assert set(errors) == {2, 4, 6, 8, 12, 16}
    assert max(errors.values()) < MAX_RELATIVE_L2, errors


@pytest.mark.slow
def test_ffn_training_call_matches_official(golden: dict, ffn_model: torch.nn.Module) -> None:
    """One multi-frame-count call in train mode: norms use batch statistics, stochastic depth is off."""
    case = golden["ffn_train"]
    videos = {int(frames): golden_channels_first_input(seed, case["n"], int(frames), golden["hw"])
              for frames, seed in case["input_seeds"].items()}
    model = copy.deepcopy(ffn_model).train()  # the module's model keeps its running statistics
    for module in model.modules():
        if isinstance(module, StochasticDepth):
            module.eval()
    with torch.no_grad():
        logits = model(videos)
    errors = {frames: relative_l2(logits[frames], np.asarray(case["logits"][str(frames)])) for frames in videos}
    assert set(errors) == set(FFN_FRAMES)
    assert max(errors.values()) < MAX_RELATIVE_L2, errors


@pytest.mark.slow
def test_vanilla_eval_logits_match_official(golden: dict, vanilla_model: torch.nn.Module) -> None:
    errors = {}
    with torch.no_grad():
        for frames_text, case in golden["uniformer"].items():
            videos = golden_channels_first_input(case["input_seed"], case["n"], int(frames_text), golden["hw"])
            errors[int(frames_text)] = relative_l2(vanilla_model(videos), np.asarray(case["logits"]))
    assert set(errors) == {4, 8, 16}
    assert max(errors.values()) < MAX_RELATIVE_L2, errors


def test_official_checkpoints_load_with_or_without_module_prefix(ffn_state_dict: dict, vanilla_state_dict: dict,
                                                                 ffn_model: torch.nn.Module,
                                                                 vanilla_model: torch.nn.Module) -> None:
    """A "module."-prefixed checkpoint (under PySlowFast's "model_state") fills every tensor as the bare one did."""
    for model, state_dict in ((ffn_model, ffn_state_dict), (vanilla_model, vanilla_state_dict)):
        prefixed = {"model_state": {f"module.{key}": value for key, value in state_dict.items()}, "epoch": 60}
        cleared = _cleared(model)
        assert load_official_state_dict(cleared, unwrap_state_dict(prefixed)) == ([], [])
        reference = model.state_dict()
        assert all(torch.equal(value, reference[key]) for key, value in cleared.state_dict().items())
    assert torch.equal(vanilla_model.blocks1[0].affinity_conv.weight, vanilla_state_dict["blocks1.0.attn.weight"])
    assert torch.equal(ffn_model.blocks3[0].wa.convs["8"].weight, ffn_state_dict["blocks3.0.adaconv_8.weight"])
    with pytest.raises(ValueError, match="official checkpoint does not match this model"):
        load_official_state_dict(_cleared(vanilla_model), ffn_state_dict)
    with pytest.raises(ValueError, match="official checkpoint does not match this model"):
        load_official_state_dict(_cleared(ffn_model), vanilla_state_dict)


def test_official_state_dicts_are_recognised(ffn_state_dict: dict, vanilla_state_dict: dict) -> None:
    assert is_official_uniformer_state_dict(ffn_state_dict) == FFN_FRAMES
    assert is_official_uniformer_state_dict({"model_state": {f"module.{key}": value for key, value
                                                             in ffn_state_dict.items()}}) == FFN_FRAMES
    assert is_official_uniformer_state_dict(vanilla_state_dict) is None
    assert official_uniformer_arch(ffn_state_dict) == official_uniformer_arch(vanilla_state_dict) == ARCH
    with open(TSM_PARITY_FILE) as handle:
        tsm_keys = {entry["key"]: None for entry in json.load(handle)["ffn_state_dict_spec"]}
    assert is_official_uniformer_state_dict(tsm_keys) is False
    assert is_official_uniformer_state_dict({}) is False
    assert official_uniformer_arch({}) is None
