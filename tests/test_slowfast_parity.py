"""Parity of SlowFast-FFN R50 and SlowFast R50 with the official code (golden vectors in tests/golden/slowfast_ffn/).

The official state dicts are rebuilt as tests/golden/slowfast_ffn/README.md describes, loaded through
``load_official_state_dict`` and run on the golden inputs; our logits must match the official "logits" (the
projection's output) and their softmax the official evaluation output "probs", to 1e-4 relative L2 (the official
float32 code is itself 1-2e-5 away from its float64 run).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from model import build_model, load_checkpoint_file, load_official_state_dict
from model.slowfast import is_official_slowfast_state_dict, to_official_slowfast_state_dict
from model.tsm_resnet import count_parameters
from parity_helpers import golden_channels_first_input, rebuild_state_dict, relative_l2

GOLDEN_DIR = Path(__file__).parent / "golden" / "slowfast_ffn"
PARITY_FILE = GOLDEN_DIR / "slowfast_ffn_parity.json"
MAX_RELATIVE_L2 = 1e-4
FFN_FRAMES = (16, 32, 64)
NUM_CLASSES = 174
# Measured from the official modules with 174 classes (FFN-pytorch 3D_Network).
OFFICIAL_FFN_PARAMETERS = 34_212_606
OFFICIAL_SLOWFAST_PARAMETERS = 34_045_558
WEIGHT_ALTERATION_PARAMETERS_PER_BRANCH = 15_224


@pytest.fixture(scope="module")
def golden() -> dict:
    with open(PARITY_FILE) as handle:
        return json.load(handle)


@pytest.fixture(scope="module")
def ffn_state_dict(golden: dict) -> dict[str, torch.Tensor]:
    return rebuild_state_dict(golden["ffn_state_dict_spec"], golden["seed"], GOLDEN_DIR / "ffn_bn_stats.npz")


@pytest.fixture(scope="module")
def ffn_model(ffn_state_dict: dict) -> torch.nn.Module:
    model = build_model("slowfast_r50", NUM_CLASSES, trained_frames=FFN_FRAMES)
    assert load_official_state_dict(model, ffn_state_dict) == ([], [])
    return model.eval()


@pytest.fixture(scope="module")
def slowfast_state_dict(golden: dict) -> dict[str, torch.Tensor]:
    return rebuild_state_dict(golden["slowfast_state_dict_spec"], golden["seed"], GOLDEN_DIR / "slowfast_bn_stats.npz")


@pytest.fixture(scope="module")
def slowfast_model(slowfast_state_dict: dict) -> torch.nn.Module:
    model = build_model("slowfast_r50", NUM_CLASSES)
    assert load_official_state_dict(model, slowfast_state_dict) == ([], [])
    return model.eval()


def test_models_have_the_official_keys_and_parameter_counts(golden: dict, ffn_model: torch.nn.Module,
                                                           slowfast_model: torch.nn.Module) -> None:
    """Our names map one to one onto the official ones (both ways) and the parameter counts are the official ones."""
    exported = to_official_slowfast_state_dict(ffn_model)
    assert sorted(exported) == sorted(entry["key"] for entry in golden["ffn_state_dict_spec"])
    assert len(exported) == 1858
    assert count_parameters(ffn_model) == OFFICIAL_FFN_PARAMETERS
    alterations = [name for name, _ in ffn_model.named_parameters() if ".wa.convs.16." in name]
    assert len(alterations) == 32  # every block of both pathways
    assert sum(ffn_model.get_parameter(name).numel() for name in alterations) == WEIGHT_ALTERATION_PARAMETERS_PER_BRANCH
    assert sorted(to_official_slowfast_state_dict(slowfast_model)) == sorted(
        entry["key"] for entry in golden["slowfast_state_dict_spec"])
    assert count_parameters(slowfast_model) == OFFICIAL_SLOWFAST_PARAMETERS


@pytest.mark.slow
def test_ffn_eval_logits_match_official_at_trained_and_untrained_frame_counts(golden: dict,
                                                                              ffn_model: torch.nn.Module) -> None:
    """8, 40 and 56 frames have no official branch (the official test code stops): nearest branch, ties larger."""
    errors, prob_errors = {}, {}
    with torch.no_grad():
        for frames_text, case in golden["ffn"].items():
            frames = int(frames_text)
            assert ffn_model.branch_for(frames) == case["branch"]
            assert ffn_model.slow_index(frames).tolist() == case["slow_index"]
            logits = ffn_model(golden_channels_first_input(case["input_seed"], case["n"], frames, golden["hw"]))
            errors[frames] = relative_l2(logits, np.asarray(case["logits"]))
            prob_errors[frames] = relative_l2(logits.softmax(dim=1), np.asarray(case["probs"]))
    assert set(errors) == {8, 16, 32, 40, 56, 64}
    assert max(errors.values()) < MAX_RELATIVE_L2, errors
    assert max(prob_errors.values()) < MAX_RELATIVE_L2, prob_errors


@pytest.mark.slow
def test_ffn_three_branch_training_call_matches_official(golden: dict, ffn_model: torch.nn.Module) -> None:
    """Train mode (BatchNorm batch statistics, dropout off), the three frame counts in one call."""
    case = golden["ffn_train"]
    model = copy.deepcopy(ffn_model).train()
    model.dropout.eval()
    videos = {int(frames): golden_channels_first_input(seed, case["n"], int(frames), golden["hw"])
              for frames, seed in case["input_seeds"].items()}
    for frames in videos:
        assert model.slow_index(frames).tolist() == case["slow_index"][str(frames)]
    with torch.no_grad():
        logits = model(videos)
    errors = {frames: relative_l2(logits[frames], np.asarray(case["logits"][str(frames)])) for frames in videos}
    assert set(errors) == set(FFN_FRAMES)
    assert max(errors.values()) < MAX_RELATIVE_L2, errors


@pytest.mark.slow
def test_vanilla_slowfast_eval_logits_match_official(golden: dict, slowfast_model: torch.nn.Module) -> None:
    errors = {}
    with torch.no_grad():
        for frames_text, case in golden["slowfast"].items():
            logits = slowfast_model(golden_channels_first_input(case["input_seed"], case["n"], int(frames_text), golden["hw"]))
            errors[int(frames_text)] = max(relative_l2(logits, np.asarray(case["logits"])),
                                           relative_l2(logits.softmax(dim=1), np.asarray(case["probs"])))
    assert set(errors) == {16, 32, 64}
    assert max(errors.values()) < MAX_RELATIVE_L2, errors


@pytest.mark.parametrize("prefix", ["", "module."])
def test_official_checkpoint_files_load_with_or_without_module_prefix(
    tmp_path: Path, prefix: str, ffn_state_dict: dict, ffn_model: torch.nn.Module, slowfast_model: torch.nn.Module
) -> None:
    """A PySlowFast checkpoint ({"model_state": ...}) saved with or without DataParallel's prefix loads strictly."""
    path = tmp_path / "checkpoint_epoch_00022.pyth"
    state = {prefix + key: value for key, value in ffn_state_dict.items()}
    torch.save({"epoch": 22, "model_state": state, "cfg": "MODEL:\n  ARCH: slowfast_FFN\n"}, path)
    checkpoint = load_checkpoint_file(path)
    assert is_official_slowfast_state_dict(checkpoint) == FFN_FRAMES
    model = build_model("slowfast_r50", NUM_CLASSES, trained_frames=FFN_FRAMES)
    assert load_official_state_dict(model, checkpoint) == ([], [])
    for (name, ours), reference in zip(model.state_dict().items(), ffn_model.state_dict().values()):
        assert torch.equal(ours, reference), name
    with pytest.raises(ValueError, match="official checkpoint does not match this model"):
        load_official_state_dict(slowfast_model, checkpoint)  # an FFN file into a vanilla model: refused, unchanged


def test_official_files_are_recognised_by_their_keys(golden: dict, ffn_state_dict: dict,
                                                     slowfast_state_dict: dict) -> None:
    assert is_official_slowfast_state_dict(ffn_state_dict) == FFN_FRAMES
    assert is_official_slowfast_state_dict({"state_dict": ffn_state_dict}) == FFN_FRAMES
    assert is_official_slowfast_state_dict(slowfast_state_dict) is None
    prefixed = {"module." + key: value for key, value in slowfast_state_dict.items()}
    assert is_official_slowfast_state_dict({"model_state": prefixed}) is None
    tsm_keys = {"base_model.conv1.weight": torch.zeros(1), "new_fc.weight": torch.zeros(1)}
    assert is_official_slowfast_state_dict(tsm_keys) is False
    assert is_official_slowfast_state_dict({}) is False
