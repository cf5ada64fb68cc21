"""The model registry, the VideoModel interface and FFN's generic parts (private norms, Weight Alteration)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from model import (
    BranchNorm,
    InputSpec,
    VideoModel,
    WeightAlteration,
    WeightAlterationSlot,
    branch_scope,
    build_model,
    convert_to_ffn,
    model_family,
    model_names,
    nearest_branch,
    register_model,
)


class TinyVideoNet(VideoModel):
    """A small plain network with one BatchNorm, one LayerNorm and one Weight Alteration slot."""

    def __init__(self, num_classes: int, trained_frames: tuple[int, ...] | None, width: int) -> None:
        super().__init__()
        self.trained_frames = trained_frames
        self.input_spec = InputSpec(frames_multiple=2, min_frames=2)
        self.wa = WeightAlterationSlot(3, dims=3)
        self.conv = nn.Conv3d(3, width, 3, padding=1)
        self.bn = nn.BatchNorm3d(width)
        self.ln = nn.LayerNorm(width)
        self.fc = nn.Linear(width, num_classes)
        if trained_frames:
            convert_to_ffn(self, trained_frames)

    @property
    def classifier(self) -> nn.Linear:
        return self.fc

    def forward_branch(self, videos: torch.Tensor, clip_frames: int) -> torch.Tensor:
        features = self.bn(self.conv(self.wa(videos.transpose(1, 2))))
        return self.fc(self.ln(features.mean(dim=(2, 3, 4))))


@register_model("test_tiny_video_net", family="test")
def tiny_video_net(num_classes: int, trained_frames: tuple[int, ...] | None = None, *, width: int = 4) -> VideoModel:
    return TinyVideoNet(num_classes, trained_frames, width)


def test_registry_lists_tsm_and_rebuilds_from_config() -> None:
    assert {"resnet18", "resnet50", "tiny", "test_tiny_video_net"} <= set(model_names())
    assert model_family("resnet50") == "tsm" and model_family("test_tiny_video_net") == "test"
    model = build_model("test_tiny_video_net", 5, trained_frames=(8, 4), width=6)
    assert model.config == {"arch": "test_tiny_video_net", "num_classes": 5, "trained_frames": [4, 8],
                            "pretrained": None, "width": 6}
    rebuilt = build_model(**model.config)
    assert [name for name, _ in rebuilt.named_parameters()] == [name for name, _ in model.named_parameters()]
    with pytest.raises(ValueError, match="registered twice"):
        register_model("tiny", family="test")(tiny_video_net)
    with pytest.raises(ValueError, match=r"this model takes \['width'\]"):
        build_model("test_tiny_video_net", 5, depth=3)


def test_convert_makes_one_norm_copy_per_branch_and_fills_the_slot() -> None:
    model = build_model("test_tiny_video_net", 5, trained_frames=(4, 8))
    assert isinstance(model.bn, BranchNorm) and list(model.bn.norms) == ["4", "8"]
    assert isinstance(model.ln, BranchNorm) and isinstance(model.ln.norms["4"], nn.LayerNorm)
    assert isinstance(model.wa, WeightAlteration) and isinstance(model.wa.convs["8"], nn.Conv3d)
    vanilla = build_model("test_tiny_video_net", 5)
    assert isinstance(vanilla.bn, nn.BatchNorm3d) and isinstance(vanilla.wa, WeightAlterationSlot)
    only_norms = convert_to_ffn(TinyVideoNet(5, None, 4), (4, 8), weight_alteration=False)
    assert isinstance(only_norms.bn, BranchNorm) and isinstance(only_norms.wa, WeightAlterationSlot)
    assert isinstance(convert_to_ffn(nn.BatchNorm2d(3), (2,)), BranchNorm)  # a norm layer itself is replaced
    with pytest.raises(ValueError, match="at least one"):
        convert_to_ffn(TinyVideoNet(5, None, 4), ())


def test_each_frame_count_uses_its_branch_and_training_touches_only_it() -> None:
    torch.manual_seed(0)
    model = build_model("test_tiny_video_net", 5, trained_frames=(4, 8)).train()
    videos = {4: torch.randn(2, 4, 3, 8, 8), 8: torch.randn(2, 8, 3, 8, 8)}
    logits = model(videos)
    assert set(logits) == {4, 8}
    assert float(model.bn.norms["4"].running_mean.abs().sum()) > 0
    before = model.bn.norms["8"].running_mean.clone()
    model({4: videos[4]})
    assert torch.equal(model.bn.norms["8"].running_mean, before)
    model.eval()
    for frames, branch in ((2, 4), (6, 8), (10, 8)):
        assert model.branch_for(frames) == branch
        torch.testing.assert_close(model(torch.ones(1, frames, 3, 8, 8)), _with_branch(model, branch, frames))


def _with_branch(model: VideoModel, branch: int, frames: int) -> torch.Tensor:
    with branch_scope(branch):
        return model.forward_branch(torch.ones(1, frames, 3, 8, 8), frames)


def test_weight_alteration_is_x_plus_depthwise_conv_and_its_channel_scale() -> None:
    alteration = WeightAlteration(3, 2, ("4",))
    nn.init.normal_(alteration.convs["4"].weight)
    features = torch.randn(2, 3, 5, 5)
    with branch_scope(4):
        expected = features + alteration.convs["4"](features)
        torch.testing.assert_close(alteration(features), expected)
        torch.testing.assert_close(features * alteration.channel_scale().view(1, 3, 1, 1), expected)


def test_branch_layers_refuse_to_run_outside_a_scope_and_scopes_nest() -> None:
    norm = BranchNorm(nn.BatchNorm1d(3), ("4", "8"))
    with pytest.raises(RuntimeError, match="outside model.ffn_parts.branch_scope"):
        norm(torch.randn(2, 3))
    with branch_scope(4):
        with branch_scope(8):
            norm.train()(torch.randn(4, 3) + 5)
        with pytest.raises(KeyError):
            with branch_scope(16):
                norm(torch.randn(2, 3))
        norm(torch.randn(4, 3))
    assert float(norm.norms["8"].running_mean.mean()) > float(norm.norms["4"].running_mean.mean())


def test_nearest_branch_rule_and_input_spec_checks() -> None:
    assert [nearest_branch((4, 8, 16), frames) for frames in (1, 5, 6, 11, 12, 40)] == [4, 4, 8, 8, 16, 16]
    spec = InputSpec(frames_multiple=4, min_frames=4)
    assert spec.accepts_frames(8) and not spec.accepts_frames(6) and not spec.accepts_frames(0)
    with pytest.raises(ValueError, match="use 4 or 8"):
        spec.check_frames(6)
    with pytest.raises(ValueError, match="use 4$"):
        spec.check_frames(2)
    model = build_model("test_tiny_video_net", 5).eval()
    with pytest.raises(ValueError, match="does not run at 3 frames"):
        model(torch.randn(1, 3, 3, 8, 8))
    with pytest.raises(ValueError, match="not a trained frame count"):
        build_model("test_tiny_video_net", 5, trained_frames=(4, 8))({6: torch.randn(1, 6, 3, 8, 8)})
    with pytest.raises(ValueError, match="channel_order"):
        InputSpec(channel_order="RBG")


def test_a_model_registered_here_trains_and_evaluates_through_the_scripts(tiny_shards, tmp_path: Path) -> None:
    """Registering a family is all it takes: train.py and evaluate.py run it by name, nothing else touched."""
    import evaluate
    import train
    from pipeline_helpers import make_videos

    videos = make_videos(12, (8, 10), width=16, height=16)
    shards = tiny_shards("registered", train=(videos[:8], (4, 4)), validation=(videos[8:], (4,)))
    common = ["--shards", str(shards), "--workers", "0", "--crop-size", "16", "--test-resize", "16",
              "--no-multi-scale", "--pretrained", "none", "--threads", "1", "--no-progress"]
    run = tmp_path / "run"
    status = train.main(["--arch", "test_tiny_video_net", "--mode", "ffn", "--frames", "4", "8", "--epochs", "1",
                         "--batch-size", "4", "--num-classes", "12", "--output", str(run), *common])
    assert status == 0 and (run / "last.pt").is_file()
    report = evaluate.run(evaluate.build_parser().parse_args([
        "--checkpoints", str(run / "last.pt"), "--frames", "2", "4", "6", "8", "--output", str(tmp_path / "eval"),
        "--no-latency", *common[:8]]))
    entry = report["models"]["run"]
    assert entry["trained_frames"] == [4, 8] and set(entry["top1"]) == {"2", "4", "6", "8"} and entry["n"] == 4
    with pytest.raises(SystemExit):
        train.main(["--arch", "test_tiny_video_net", "--mode", "ffn", "--frames", "4", "6", "--epochs", "1",
                    "--shift-mode", "official", "--output", str(tmp_path / "refused"), *common])


GOLDEN_FILES = {
    "tsm": ("ffn_tsm_parity.json", "ffn_bn_stats.npz", "resnet50"),
    "tea": ("tea_ffn/tea_ffn_parity.json", "tea_ffn/ffn_bn_stats.npz", "tea_res2net50"),
    "slowfast": ("slowfast_ffn/slowfast_ffn_parity.json", "slowfast_ffn/ffn_bn_stats.npz", "slowfast_r50"),
    "uniformer": ("uniformer_ffn/uniformer_ffn_parity.json", "uniformer_ffn/ffn_bn_stats.npz", "uniformer_s"),
}


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(GOLDEN_FILES))
def test_an_official_file_of_every_family_loads_by_its_key_names_alone(family: str, tmp_path: Path) -> None:
    """evaluate.py / predict.py read the family, arch, branches and classes off an official file's keys."""
    import json

    from engine.inference import load_checkpoint_network
    from parity_helpers import rebuild_state_dict

    golden = Path(__file__).parent / "golden"
    spec_file, stats_file, arch = GOLDEN_FILES[family]
    spec = json.loads((golden / spec_file).read_text())
    state = rebuild_state_dict(spec["ffn_state_dict_spec"], spec["seed"], golden / stats_file)
    path = tmp_path / "official.pth"
    torch.save({"state_dict": {f"module.{key}": value for key, value in state.items()}, "epoch": 1}, path)
    loaded = load_checkpoint_network(path, None, channels_last=False)
    assert loaded.official and loaded.network.config["arch"] == arch and model_family(arch) == family
    assert loaded.network.config["num_classes"] == 174 and loaded.network.trained_frames is not None
    other = "tea_res2net50" if family != "tea" else "resnet50"
    with pytest.raises(SystemExit, match=f"an official {family} file, but --arch {other}"):
        load_checkpoint_network(path, other, channels_last=False)


def test_input_spec_refuses_bad_fields_with_one_line_each() -> None:
    with pytest.raises(ValueError, match=r"^channel_order='RBG'; use one of \('RGB', 'BGR'\)$"):
        InputSpec(channel_order="RBG")
    for fields in ({"mean": (0.5, 0.5)}, {"std": (0.2, 0.2)}, {"std": (0.2, 0.0, 0.2)}, {"std": (0.2, -0.1, 0.2)}):
        with pytest.raises(ValueError, match=r"^mean .* and std .* need three values each, std positive$"):
            InputSpec(**fields)
    for fields in ({"frames_multiple": 0}, {"min_frames": 0}, {"min_size": 0}):
        with pytest.raises(ValueError, match=r"^frames_multiple, min_frames and min_size must be positive$"):
            InputSpec(**fields)
    InputSpec(frames_multiple=1, min_frames=1, min_size=1, std=(1e-3, 1e-3, 1e-3))  # the smallest valid values


def test_input_spec_valid_frames_sizes_and_record() -> None:
    spec = InputSpec(frames_multiple=4, min_frames=6, min_size=32)
    assert [count for count in range(0, 20) if spec.accepts_frames(count)] == [8, 12, 16]
    assert spec.nearest_valid_frames(3) == [8] and spec.nearest_valid_frames(9) == [8, 12]
    assert spec.nearest_valid_frames(12) == [12] and spec.nearest_valid_frames(13) == [12, 16]
    assert InputSpec().nearest_valid_frames(5) == [5] and InputSpec(min_frames=3).nearest_valid_frames(1) == [3]
    with pytest.raises(ValueError, match=r"^this model does not run at 9 frames \(it needs a multiple of 4, at least "
                                         r"6\); use 8 or 12$"):
        spec.check_frames(9)
    spec.check_size(32, 40)
    with pytest.raises(ValueError, match=r"^frames of 31x40 px are smaller than this model's minimum 32 px; use a "
                                         r"larger --crop-size$"):
        spec.check_size(31, 40)
    with pytest.raises(ValueError, match="frames of 40x31 px"):
        spec.check_size(40, 31)
    assert InputSpec(mean=(0.1, 0.2, 0.3), channel_order="BGR", min_size=8).as_record() == {
        "mean": [0.1, 0.2, 0.3], "std": [0.229, 0.224, 0.225], "channel_order": "BGR", "frames_multiple": 1,
        "min_frames": 1, "min_size": 8}


def test_branch_rule_and_model_input_errors_name_the_fix() -> None:
    with pytest.raises(ValueError, match=r"^frame count must be positive, got 0$"):
        nearest_branch((4, 8), 0)
    assert nearest_branch((4, 8), 6) == 8 and nearest_branch((8, 4), 6) == 8 and nearest_branch((4,), 1) == 4
    vanilla = build_model("test_tiny_video_net", 5)
    assert vanilla.branch_for(6) is None and vanilla.branch_for(1) is None
    with pytest.raises(ValueError, match=r"^frame count must be positive, got 0$"):
        vanilla.branch_for(0)
    ffn = build_model("test_tiny_video_net", 5, trained_frames=(4, 8))
    with pytest.raises(ValueError, match=r"^model input must be \(N, T, 3, H, W\), got shape \(1, 4, 2, 8, 8\)$"):
        ffn(torch.randn(1, 4, 2, 8, 8))
    with pytest.raises(ValueError, match=r"^forward_by_frames needs at least one \{frames: videos\} entry$"):
        ffn({})
    with pytest.raises(ValueError, match=r"^forward_by_frames: the videos under key 4 have shape \(1, 8, 3, 8, 8\), "
                                         r"expected \(N, 4, 3, H, W\)$"):
        ffn({4: torch.randn(1, 8, 3, 8, 8)})
    with pytest.raises(ValueError, match=r"^forward_by_frames: 6 frames is not a trained frame count \(4, 8\); use "
                                         r"model\(videos\) for other frame counts$"):
        ffn({6: torch.randn(1, 6, 3, 8, 8)})
    with pytest.raises(ValueError, match=r"^TinyVideoNet: no pretrained weights can be loaded for this family$"):
        ffn.load_pretrained("weights.pt")


def test_converted_layers_refuse_calls_outside_a_branch_scope_and_convert_alone() -> None:
    converted = convert_to_ffn(nn.Sequential(WeightAlterationSlot(3, dims=2), nn.BatchNorm2d(3)), (4, 8))
    features = torch.randn(2, 3, 4, 4)
    for layer, name in ((converted[0], "WeightAlteration"), (converted[1], "BranchNorm")):
        with pytest.raises(RuntimeError, match=rf"^{name} holds one copy per trained frame count and was called "
                                               r"outside model\.ffn_parts\.branch_scope; call the model "
                                               r"\(VideoModel\.forward\), not its layers$"):
            layer(features)
    slot = convert_to_ffn(WeightAlterationSlot(5, dims=1), (8, 4))
    assert isinstance(slot, WeightAlteration) and list(slot.convs) == ["4", "8"]
    assert isinstance(convert_to_ffn(nn.LayerNorm(5), (2,)), BranchNorm)
    assert isinstance(convert_to_ffn(WeightAlterationSlot(5, dims=1), (4,), weight_alteration=False),
                      WeightAlterationSlot)
    with pytest.raises(ValueError, match=r"^convert_to_ffn needs at least one trained frame count$"):
        convert_to_ffn(nn.BatchNorm2d(3), ())


def test_weight_alteration_slot_refuses_other_dims() -> None:
    with pytest.raises(ValueError, match=r"^WeightAlterationSlot: dims must be one of \[1, 2, 3\], got 4$"):
        WeightAlterationSlot(8, dims=4)
    slot = WeightAlterationSlot(8, dims=3)
    assert (slot.channels, slot.dims, slot.channel_scale()) == (8, 3, None)
