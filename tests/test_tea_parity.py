"""Parity of TEA and TEA-FFN with the official FFN code: logits of golden vectors (tests/golden/tea_ffn/).

The official state dicts are rebuilt as tests/golden/tea_ffn/README.md describes, mapped through
``load_official_state_dict`` and run through our models; every logit must match to float32 rounding.

Res2Net-50 at 224 px is heavy on 2 CPU cores, so each model is built once per module and evaluation-mode entries
other than one full entry per kind are compared on their first video only: in evaluation mode a video's logits
depend on that video alone (tested in test_tea.py), so the first rows of the golden logits are those of the first
input video. Training-mode entries use batch statistics and always run whole.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from model import build_model, count_parameters, load_official_state_dict
from model.tea import is_official_tea_state_dict
from parity_helpers import golden_input, rebuild_state_dict, relative_l2

GOLDEN_DIR = Path(__file__).parent / "golden" / "tea_ffn"
PARITY_FILE = GOLDEN_DIR / "tea_ffn_parity.json"
MAX_RELATIVE_L2 = 1e-5
FFN_FRAMES = (4, 8, 16)
NUM_CLASSES = 174
ARCH = "tea_res2net50"
# The evaluation entries compared on all their videos (the others on their first video).
FULL_EVAL_ENTRY = {"ffn": "2", "tea": "4"}
# Parameters of the official modules with 174 classes (FFN-pytorch 2D_Network, measured).
OFFICIAL_FFN_PARAMETERS = 24_601_336
OFFICIAL_TEA_PARAMETERS = 24_456_280


@pytest.fixture(scope="module")
def golden() -> dict:
    with open(PARITY_FILE) as handle:
        return json.load(handle)


@pytest.fixture(scope="module")
def ffn_state_dict(golden: dict) -> dict[str, torch.Tensor]:
    return rebuild_state_dict(golden["ffn_state_dict_spec"], golden["seed"], GOLDEN_DIR / "ffn_bn_stats.npz")


@pytest.fixture(scope="module")
def tea_state_dict(golden: dict) -> dict[str, torch.Tensor]:
    return rebuild_state_dict(golden["tea_state_dict_spec"], golden["seed"], GOLDEN_DIR / "tea_bn_stats.npz")


@pytest.fixture(scope="module")
def ffn_model(ffn_state_dict: dict) -> torch.nn.Module:
    model = build_model(ARCH, NUM_CLASSES, trained_frames=FFN_FRAMES)
    missing, unexpected = load_official_state_dict(model, ffn_state_dict)
    assert missing == [] and unexpected == []
    return model.eval()


@pytest.fixture(scope="module")
def tea_model(tea_state_dict: dict) -> torch.nn.Module:
    model = build_model(ARCH, NUM_CLASSES)
    missing, unexpected = load_official_state_dict(model, tea_state_dict)
    assert missing == [] and unexpected == []
    return model.eval()


def eval_errors(model: torch.nn.Module, golden: dict, kind: str) -> dict[int, float]:
    """Relative L2 error of every evaluation entry of `kind` ("ffn" or "tea"), one full, the others on video 0."""
    errors = {}
    with torch.no_grad():
        for frames_text, case in golden[kind].items():
            videos = golden_input(case["input_seed"], case["n"], int(frames_text), golden["hw"])
            expected = np.asarray(case["logits"])
            if frames_text != FULL_EVAL_ENTRY[kind]:
                videos, expected = videos[:1], expected[:1]
            errors[int(frames_text)] = relative_l2(model(videos), expected)
    return errors


def training_videos(golden: dict, entry: str) -> dict[int, torch.Tensor]:
    case = golden[entry]
    return {int(frames): golden_input(seed, case["n"], int(frames), golden["hw"])
            for frames, seed in case["input_seeds"].items()}


def test_official_layouts_have_our_keys_and_parameter_counts(golden: dict, ffn_model, tea_model,
                                                             ffn_state_dict: dict, tea_state_dict: dict) -> None:
    assert len(golden["ffn_state_dict_spec"]) == len(ffn_model.state_dict()) == 1954
    assert len(golden["tea_state_dict_spec"]) == len(tea_model.state_dict()) == 784
    assert count_parameters(ffn_model) == OFFICIAL_FFN_PARAMETERS
    assert count_parameters(tea_model) == OFFICIAL_TEA_PARAMETERS
    assert is_official_tea_state_dict(ffn_state_dict) == FFN_FRAMES
    assert is_official_tea_state_dict(tea_state_dict) is None
    prefixed = {f"module.{key}": value for key, value in ffn_state_dict.items()}
    assert is_official_tea_state_dict({"state_dict": prefixed, "epoch": 50}) == FFN_FRAMES


def test_official_checkpoints_load_with_and_without_module_prefix(ffn_model, tea_model, ffn_state_dict: dict,
                                                                  tea_state_dict: dict) -> None:
    prefixed = {f"module.{key}": value for key, value in ffn_state_dict.items()}
    fresh = build_model(ARCH, NUM_CLASSES, trained_frames=FFN_FRAMES)
    assert load_official_state_dict(fresh, {"state_dict": prefixed, "epoch": 50}) == ([], [])
    loaded = ffn_model.state_dict()
    assert all(torch.equal(value, loaded[key]) for key, value in fresh.state_dict().items())
    vanilla = build_model(ARCH, NUM_CLASSES)
    assert load_official_state_dict(vanilla, {f"module.{key}": v for key, v in tea_state_dict.items()}) == ([], [])
    assert torch.equal(vanilla.state_dict()["layer3.5.me.bn3.running_var"],
                       tea_model.state_dict()["layer3.5.me.bn3.running_var"])
    with pytest.raises(ValueError, match="does not match this model"):
        load_official_state_dict(vanilla, ffn_state_dict)
    with pytest.raises(ValueError, match="does not match this model"):
        load_official_state_dict(fresh, tea_state_dict)


@pytest.mark.slow
def test_ffn_eval_logits_match_official_at_every_frame_count(golden: dict, ffn_model) -> None:
    assert {int(frames): case["branch"] for frames, case in golden["ffn"].items()} == {
        frames: ffn_model.branch_for(frames) for frames in (2, 4, 6, 8, 12, 16)}
    errors = eval_errors(ffn_model, golden, "ffn")
    assert set(errors) == {2, 4, 6, 8, 12, 16}
    assert max(errors.values()) < MAX_RELATIVE_L2, errors


@pytest.mark.slow
def test_tea_baseline_eval_logits_match_official(golden: dict, tea_model) -> None:
    errors = eval_errors(tea_model, golden, "tea")
    assert set(errors) == {4, 8, 16}
    assert max(errors.values()) < MAX_RELATIVE_L2, errors


@pytest.mark.slow
def test_ffn_training_call_matches_official_even_after_an_evaluation_call(golden: dict, ffn_model) -> None:
    """The official modules switch to 16-frame clips after an evaluation call; ours keep per-video clips."""
    saved = copy.deepcopy(ffn_model.state_dict())
    try:
        with torch.no_grad():
            ffn_model.eval()(torch.randn(1, 2, 3, 64, 64))
            ffn_model.train()
            ffn_model.dropout.eval()
            logits = ffn_model(training_videos(golden, "ffn_train"))
    finally:
        ffn_model.load_state_dict(saved)
        ffn_model.eval()
    expected = golden["ffn_train"]["logits"]
    errors = {frames: relative_l2(logits[frames], np.asarray(expected[str(frames)])) for frames in FFN_FRAMES}
    assert max(errors.values()) < MAX_RELATIVE_L2, errors
    # The official state after an evaluation call differs where 4 or 2 videos share a clip (4F and 8F branches).
    after_eval = golden["ffn_train_after_eval"]["logits"]
    assert relative_l2(logits[4], np.asarray(after_eval["4"])) > 100 * MAX_RELATIVE_L2
    assert relative_l2(logits[8], np.asarray(after_eval["8"])) > 100 * MAX_RELATIVE_L2


@pytest.mark.slow
def test_official_temporal_mode_matches_official_training_after_evaluation(golden: dict, ffn_state_dict: dict) -> None:
    model = build_model(ARCH, NUM_CLASSES, trained_frames=FFN_FRAMES, temporal_mode="official")
    load_official_state_dict(model, ffn_state_dict)
    model.train()
    model.dropout.eval()
    videos = training_videos(golden, "ffn_train_after_eval")
    with torch.no_grad():
        logits = model({4: videos[4], 8: videos[8]})  # the 16F branch is the same in both official states
    expected = golden["ffn_train_after_eval"]["logits"]
    errors = {frames: relative_l2(logits[frames], np.asarray(expected[str(frames)])) for frames in (4, 8)}
    assert max(errors.values()) < MAX_RELATIVE_L2, errors
    assert np.array_equal(np.asarray(expected["16"]), np.asarray(golden["ffn_train"]["logits"]["16"]))
    assert relative_l2(logits[4], np.asarray(golden["ffn_train"]["logits"]["4"])) > 100 * MAX_RELATIVE_L2
