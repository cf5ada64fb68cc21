"""Model contract: parameter counts, branch routing, ImageNet mapping, checkpoints, official loading, loss, groups."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from model import (
    build_model,
    build_optimizer,
    build_param_groups,
    count_parameters,
    distillation_loss,
    load_checkpoint_file,
    load_official_state_dict,
)
from model.temporal_shift import naive_temporal_shift
from model.tsm_resnet import to_torchvision_state_dict

FFN_FRAMES = (4, 8, 16)
SSV2_CLASSES = 174
GOLDEN_FILE = Path(__file__).parent / "golden" / "ffn_tsm_parity.json"


def norm_stats(model: torch.nn.Module, branch: str) -> dict[str, torch.Tensor]:
    """Running means of every BatchNorm copy of one branch."""
    return {
        name: buffer.clone()
        for name, buffer in model.named_buffers()
        if name.endswith("running_mean") and f".norms.{branch}." in name
    }


def test_parameter_counts_match_the_official_models() -> None:
    assert count_parameters(build_model("resnet50", SSV2_CLASSES)) == 23_864_558
    assert count_parameters(build_model("resnet50", SSV2_CLASSES, trained_frames=FFN_FRAMES)) == 24_010_158


def test_tiny_variant_size_and_ablation_switches() -> None:
    tiny = build_model("tiny", num_classes=16)
    assert 300_000 < count_parameters(tiny) < 320_000
    ffn = build_model("tiny", num_classes=16, trained_frames=FFN_FRAMES)
    shared = build_model("tiny", num_classes=16, trained_frames=FFN_FRAMES, private_norms=False)
    no_wa = build_model("tiny", num_classes=16, trained_frames=FFN_FRAMES, weight_alteration=False)
    assert not any(".wa." in name for name, _ in no_wa.named_parameters())
    assert not any(".norms.4." in name for name, _ in shared.named_parameters())
    assert count_parameters(ffn) > count_parameters(shared) > count_parameters(tiny)
    assert count_parameters(no_wa) > count_parameters(tiny)


def test_weight_alteration_init_as_run_and_paper() -> None:
    as_run = build_model("tiny", num_classes=4, trained_frames=FFN_FRAMES)
    paper = build_model("tiny", num_classes=4, trained_frames=FFN_FRAMES, wa_init="paper")
    block = as_run.layer4[0]
    as_run_weights = torch.cat([conv.weight.detach().flatten() for conv in block.wa.convs.values()])
    expected_std = math.sqrt(2.0 / block.conv1.in_channels)  # kaiming_normal fan_out of a depthwise 1x1 conv
    assert 0.7 * expected_std < float(as_run_weights.std()) < 1.3 * expected_std
    paper_weights = torch.cat([p.detach().flatten() for name, p in paper.named_parameters() if ".wa.convs." in name])
    assert float(paper_weights.std()) < 2e-3


def test_branch_for_uses_nearest_trained_count_ties_to_larger() -> None:
    model = build_model("tiny", num_classes=4, trained_frames=FFN_FRAMES)
    expected = {1: 4, 2: 4, 5: 4, 6: 8, 10: 8, 11: 8, 12: 16, 14: 16, 18: 16, 32: 16}
    assert {frames: model.branch_for(frames) for frames in expected} == expected
    assert model.trained_frames == FFN_FRAMES
    vanilla = build_model("tiny", num_classes=4)
    assert vanilla.trained_frames is None and vanilla.branch_for(7) is None


ROUTES = [(4, "4"), (2, "4"), (6, "8"), (10, "8"), (12, "16"), (14, "16"), (18, "16")]


@pytest.mark.parametrize("num_frames,branch", ROUTES)
def test_training_forward_changes_only_its_branch_statistics(num_frames: int, branch: str) -> None:
    torch.manual_seed(num_frames)
    model = build_model("tiny", num_classes=4, trained_frames=FFN_FRAMES).train()
    before = {key: norm_stats(model, key) for key in ("4", "8", "16")}
    model(torch.randn(2, num_frames, 3, 32, 32)).sum().backward()
    for key, stats in before.items():
        after = norm_stats(model, key)
        changed = [name for name in stats if not torch.equal(stats[name], after[name])]
        assert len(changed) == (len(stats) if key == branch else 0), (key, changed)
    wa_grads = {name: p.grad for name, p in model.named_parameters() if ".wa.convs." in name}
    assert all((grad is not None) == (f".convs.{branch}." in name) for name, grad in wa_grads.items())


def test_forward_by_frames_returns_every_frame_count_and_checks_input() -> None:
    model = build_model("tiny", num_classes=5, trained_frames=FFN_FRAMES).eval()
    videos = {frames: torch.randn(2, frames, 3, 32, 32) for frames in FFN_FRAMES}
    with torch.no_grad():
        logits = model.forward_by_frames(videos)
        assert set(logits) == set(FFN_FRAMES) and all(v.shape == (2, 5) for v in logits.values())
        torch.testing.assert_close(logits[8], model(videos[8]))
        torch.testing.assert_close(model(videos)[4], logits[4])  # a dict goes to forward_by_frames (DDP path)
    with pytest.raises(ValueError, match="not a trained frame count"):
        model.forward_by_frames({6: torch.randn(1, 6, 3, 32, 32)})
    vanilla = build_model("tiny", num_classes=5).eval()
    assert set(vanilla.forward_by_frames({16: videos[16]})) == {16}


def test_channels_last_option_gives_the_same_logits() -> None:
    plain = build_model("tiny", num_classes=5, trained_frames=FFN_FRAMES).eval()
    fast = build_model("tiny", num_classes=5, trained_frames=FFN_FRAMES, channels_last=True).eval()
    fast.load_state_dict(plain.state_dict())
    videos = torch.randn(2, 8, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(fast(videos), plain(videos), rtol=1e-4, atol=1e-5)
    assert fast.conv1.weight.is_contiguous(memory_format=torch.channels_last)


@pytest.fixture(scope="module")
def imagenet_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    torch.manual_seed(0)
    reference = torchvision.models.resnet50()
    for module in reference.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_()
            module.running_var.uniform_(0.5, 1.5)
            module.weight.data.normal_()
            module.bias.data.normal_()
    path = tmp_path_factory.mktemp("imagenet") / "resnet50-v1.pth"
    torch.save(reference.state_dict(), path)
    return path, reference.state_dict()


def test_imagenet_mapping_fills_every_private_norm_copy(imagenet_file: tuple[Path, dict]) -> None:
    path, reference = imagenet_file
    model = build_model("resnet50", SSV2_CLASSES, trained_frames=FFN_FRAMES, pretrained=str(path))
    ours = model.state_dict()
    assert torch.equal(ours["conv1.weight"], reference["conv1.weight"])
    assert torch.equal(ours["layer3.0.downsample_conv.weight"], reference["layer3.0.downsample.0.weight"])
    assert torch.equal(ours["layer4.2.conv3.weight"], reference["layer4.2.conv3.weight"])
    for branch in ("4", "8", "16"):
        for stat in ("weight", "bias", "running_mean", "running_var"):
            assert torch.equal(ours[f"bn1.norms.{branch}.{stat}"], reference[f"bn1.{stat}"])
            assert torch.equal(ours[f"layer2.3.bn2.norms.{branch}.{stat}"], reference[f"layer2.3.bn2.{stat}"])
            assert torch.equal(ours[f"layer1.0.downsample_bn.norms.{branch}.{stat}"],
                               reference[f"layer1.0.downsample.1.{stat}"])
    assert float(ours["fc.weight"].std()) < 0.01  # the new head keeps its N(0, 1e-3) init
    vanilla = build_model("resnet50", SSV2_CLASSES, pretrained=str(path))
    vanilla_state = vanilla.state_dict()
    assert torch.equal(vanilla_state["layer4.2.bn3.running_var"], reference["layer4.2.bn3.running_var"])


def test_imagenet_mapping_refuses_the_wrong_architecture(imagenet_file: tuple[Path, dict]) -> None:
    path, _ = imagenet_file
    with pytest.raises(ValueError, match="do not fit arch='resnet18'"):
        build_model("resnet18", SSV2_CLASSES, pretrained=str(path))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_model("resnet50", SSV2_CLASSES, pretrained=str(path.parent / "absent.pth"))
    with pytest.raises(ValueError, match="not available for arch='tiny'"):
        build_model("tiny", 10, pretrained="imagenet")


def test_own_checkpoint_round_trips_exactly(tmp_path: Path) -> None:
    model = build_model("tiny", num_classes=6, trained_frames=(2, 4), shift_mode="official", wa_init="paper", dropout=0.3)
    model.train()
    build_optimizer(model, lr=0.1).zero_grad()
    distillation_loss(model.forward_by_frames({2: torch.randn(2, 2, 3, 32, 32), 4: torch.randn(2, 4, 3, 32, 32)}),
                      torch.tensor([0, 5]))[0].backward()
    path = tmp_path / "ckpt.pt"
    torch.save({"config": model.config, "state_dict": model.state_dict()}, path)
    loaded = load_checkpoint_file(path)
    json.dumps(loaded["config"])
    rebuilt = build_model(**loaded["config"])
    rebuilt.load_state_dict(loaded["state_dict"], strict=True)
    assert rebuilt.config == model.config
    for key, value in model.state_dict().items():
        assert torch.equal(value, rebuilt.state_dict()[key]), key
    videos = torch.randn(1, 3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model.eval()(videos), rebuilt.eval()(videos))


def test_checkpoint_file_with_numpy_metadata_loads_safely(tmp_path: Path) -> None:
    path = tmp_path / "official.pth.tar"
    torch.save({"epoch": 50, "arch": "resnet50", "best_prec1": np.float64(61.2),
                "state_dict": {"module.new_fc.bias": torch.zeros(3)}}, path)
    loaded = load_checkpoint_file(path)
    assert float(loaded["best_prec1"]) == pytest.approx(61.2)
    pickled = tmp_path / "pickled.pt"
    torch.save({"state_dict": {}, "extra": Path("not/allowed")}, pickled)
    with pytest.raises(ValueError, match="trust_pickle=True"):
        load_checkpoint_file(pickled)
    assert isinstance(load_checkpoint_file(pickled, trust_pickle=True)["extra"], Path)


@pytest.fixture(scope="module")
def golden_specs() -> dict:
    with open(GOLDEN_FILE) as handle:
        golden = json.load(handle)
    return {"ffn": golden["ffn_state_dict_spec"], "tsm": golden["tsm_state_dict_spec"]}


def numbered_state_dict(spec: list[dict], rename=lambda key: key) -> dict[str, torch.Tensor]:
    """Official keys with tensors filled with their position, so a mis-mapping is visible."""
    return {
        rename(entry["key"]): torch.full(entry["shape"], float(entry["index"]))
        if entry["rule"] is not None else torch.tensor(0)
        for entry in spec
    }


def test_official_ffn_keys_with_module_prefix_map_completely(golden_specs: dict) -> None:
    state_dict = numbered_state_dict(golden_specs["ffn"], rename=lambda key: "module." + key)
    model = build_model("resnet50", SSV2_CLASSES, trained_frames=FFN_FRAMES)
    assert load_official_state_dict(model, {"state_dict": state_dict, "epoch": 3}) == ([], [])
    ours = model.state_dict()
    source = "module.base_model.layer"
    assert torch.equal(ours["layer1.0.downsample_bn.norms.8.bias"], state_dict[f"{source}1.0.downsample_bn_8.bias"])
    assert torch.equal(ours["layer4.2.wa.convs.16.weight"], state_dict[f"{source}4.2.adaconv_16.weight"])
    assert torch.equal(ours["fc.weight"], state_dict["module.new_fc.weight"])


def test_mit_han_lab_tsm_keys_map_completely(golden_specs: dict) -> None:
    def wrap_conv1(key: str) -> str:
        return "module." + key.replace(".conv1.weight", ".conv1.net.weight") if ".layer" in key else "module." + key

    state_dict = numbered_state_dict(golden_specs["tsm"], rename=wrap_conv1)
    model = build_model("resnet50", SSV2_CLASSES)
    assert load_official_state_dict(model, state_dict) == ([], [])
    wrapped = state_dict["module.base_model.layer2.1.conv1.net.weight"]
    assert torch.equal(model.state_dict()["layer2.1.conv1.weight"], wrapped)


def test_official_loading_refuses_mismatches(golden_specs: dict) -> None:
    ffn_state = numbered_state_dict(golden_specs["ffn"])
    vanilla = build_model("resnet50", SSV2_CLASSES)
    with pytest.raises(ValueError, match="does not match this model"):
        load_official_state_dict(vanilla, ffn_state)
    missing, unexpected = load_official_state_dict(vanilla, ffn_state, strict=False)
    assert "bn1.weight" in missing and "base_model.bn1_4.weight" in unexpected
    other_classes = build_model("resnet50", 10, trained_frames=FFN_FRAMES)
    with pytest.raises(ValueError, match="shape"):
        load_official_state_dict(other_classes, ffn_state)


def test_distillation_loss_is_ce_on_highest_plus_kl_per_lower_rate() -> None:
    torch.manual_seed(0)
    logits = {frames: torch.randn(3, 7, requires_grad=True) for frames in FFN_FRAMES}
    labels = torch.tensor([1, 2, 6])
    total, parts = distillation_loss(logits, labels, lam=0.5)
    teacher = logits[16].softmax(1).detach()
    kl = {frames: (teacher * (teacher.log() - logits[frames].log_softmax(1))).sum(1).mean() for frames in (4, 8)}
    ce = torch.nn.functional.cross_entropy(logits[16], labels)
    torch.testing.assert_close(total, ce + 0.5 * (kl[4] + kl[8]))
    assert set(parts) == {"ce_16", "kl_4", "kl_8"}
    total.backward()
    ce_only = torch.autograd.grad(torch.nn.functional.cross_entropy(logits[16], labels), logits[16])[0]
    torch.testing.assert_close(logits[16].grad, ce_only)  # the teacher is detached
    total_all, parts_all = distillation_loss(logits, labels, lam=0.5, ce_all_frames=True)
    extra = sum(torch.nn.functional.cross_entropy(logits[frames], labels) for frames in (4, 8))
    torch.testing.assert_close(total_all, total.detach() + extra.detach(), rtol=1e-5, atol=1e-6)
    assert {"ce_4", "ce_8"} <= set(parts_all)


def test_official_param_groups() -> None:
    model = build_model("tiny", num_classes=5, trained_frames=FFN_FRAMES)
    groups = {group["name"]: group for group in build_param_groups(model, 5e-4, official_groups=True)}
    grouped = [id(p) for group in groups.values() for p in group["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters()) and len(set(grouped)) == len(grouped)
    assert groups["norm"]["weight_decay"] == 0.0 and groups["head_bias"]["weight_decay"] == 0.0
    assert groups["head_weight"]["lr_mult"] == 5.0 and groups["head_bias"]["lr_mult"] == 10.0
    assert groups["head_weight"]["params"][0] is model.fc.weight
    assert any(p is model.layer1[0].wa.convs["4"].weight for p in groups["conv_weight"]["params"])
    optimizer = build_optimizer(model, lr=0.01, official_groups=True)
    lrs = {group["name"]: group["lr"] for group in optimizer.param_groups}
    assert lrs["head_bias"] == pytest.approx(0.1) and lrs["norm"] == pytest.approx(0.01)
    plain = build_optimizer(model, lr=0.01)
    assert len(plain.param_groups) == 1 and plain.param_groups[0]["weight_decay"] == 5e-4


def test_bad_options_raise_clear_errors() -> None:
    with pytest.raises(ValueError, match="arch='resnet9'"):
        build_model("resnet9", 3)
    with pytest.raises(ValueError, match="shift_mode"):
        build_model("tiny", 3, shift_mode="global")
    with pytest.raises(ValueError, match=r"unknown model option\(s\) \['shift_modes'\]"):
        build_model("tiny", 3, shift_modes="official")
    with pytest.raises(ValueError, match=r"\(N, T, 3, H, W\)"):
        build_model("tiny", 3)(torch.randn(2, 3, 32, 32))


def test_distillation_loss_parts_default_weight_and_one_frame_count() -> None:
    torch.manual_seed(1)
    logits = {frames: torch.randn(4, 6) for frames in FFN_FRAMES}
    labels = torch.tensor([0, 5, 2, 2])
    teacher = logits[16].softmax(1)
    kl = {frames: (teacher * (teacher.log() - logits[frames].log_softmax(1))).sum(1).mean() for frames in (4, 8)}
    ce = {frames: torch.nn.functional.cross_entropy(logits[frames], labels) for frames in FFN_FRAMES}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no deprecated implicit softmax dimension
        total, parts = distillation_loss(logits, labels)
        total_all, parts_all = distillation_loss(logits, labels, 1.0, ce_all_frames=True)
    torch.testing.assert_close(total, ce[16] + kl[4] + kl[8])  # the paper's lambda = 1 by default
    assert set(parts) == {"ce_16", "kl_4", "kl_8"}
    torch.testing.assert_close(torch.stack([parts["ce_16"], parts["kl_4"], parts["kl_8"]]),
                               torch.stack([ce[16], kl[4], kl[8]]))
    torch.testing.assert_close(torch.stack([parts_all["ce_4"], parts_all["ce_8"]]), torch.stack([ce[4], ce[8]]))
    torch.testing.assert_close(total_all, total + ce[4] + ce[8])
    single, single_parts = distillation_loss({8: logits[8]}, labels)
    torch.testing.assert_close(single, ce[8])
    assert list(single_parts) == ["ce_8"]
    with pytest.raises(ValueError, match=r"^distillation_loss needs logits for at least one frame count$"):
        distillation_loss({}, labels)


class ToyNet(torch.nn.Module):
    """Every kind of parameter the official groups tell apart: conv weight and bias, norm layers, head, frozen."""

    def __init__(self, head: bool = True) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, bias=True)
        self.norm = torch.nn.BatchNorm2d(4)
        self.layer_norm = torch.nn.LayerNorm(4)
        self.group_norm = torch.nn.GroupNorm(2, 4)
        self.frozen = torch.nn.Linear(4, 4)
        self.frozen.requires_grad_(False)
        if head:
            self.classifier = torch.nn.Linear(4, 2)


def group_summary(groups: list[dict]) -> dict[str, tuple[float, float, set[int]]]:
    """{name: (weight decay, lr multiplier, ids of its parameters)} with the keys every group must have."""
    assert all(set(group) >= {"params", "weight_decay", "lr_mult", "name"} for group in groups)
    return {group["name"]: (group["weight_decay"], group["lr_mult"], {id(p) for p in group["params"]})
            for group in groups}


def test_param_groups_place_every_kind_of_parameter() -> None:
    net = ToyNet()
    official = group_summary(build_param_groups(net, 1e-3, official_groups=True))
    assert official == {
        "conv_weight": (1e-3, 1.0, {id(net.conv.weight)}),
        "norm": (0.0, 1.0, {id(parameter) for layer in (net.norm, net.layer_norm, net.group_norm)
                            for parameter in layer.parameters()}),
        "head_weight": (1e-3, 5.0, {id(net.classifier.weight)}),
        "head_bias": (0.0, 10.0, {id(net.classifier.bias)}),
        "other_bias": (0.0, 1.0, {id(net.conv.bias)}),
    }  # the frozen layer is in no group
    unbiased = ToyNet()
    unbiased.classifier = torch.nn.Linear(4, 2, bias=False)
    groups = group_summary(build_param_groups(unbiased, official_groups=True))
    assert "head_bias" not in groups and groups["head_weight"] == (5e-4, 5.0, {id(unbiased.classifier.weight)})
    headless = ToyNet(head=False)
    headless_groups = group_summary(build_param_groups(headless, official_groups=True))
    assert set(headless_groups) == {"conv_weight", "norm", "other_bias"}
    plain = build_param_groups(net)  # default: one decayed group of every trainable parameter
    assert group_summary(plain) == {"all": (5e-4, 1.0, {id(p) for p in net.parameters() if p.requires_grad})}


def test_build_optimizer_passes_rates_decay_and_momentum_to_every_group() -> None:
    net = ToyNet()
    sgd = build_optimizer(net, lr=0.02, momentum=0.5, weight_decay=1e-3, official_groups=True)
    assert type(sgd) is torch.optim.SGD
    settings = {group["name"]: (round(group["lr"], 12), group["weight_decay"], group["momentum"])
                for group in sgd.param_groups}
    assert settings == {"conv_weight": (0.02, 1e-3, 0.5), "norm": (0.02, 0.0, 0.5), "head_weight": (0.1, 1e-3, 0.5),
                        "head_bias": (0.2, 0.0, 0.5), "other_bias": (0.02, 0.0, 0.5)}
    assert build_optimizer(net, lr=0.02).param_groups[0]["momentum"] == 0.9
    adamw = build_optimizer(net, lr=0.003, weight_decay=0.05, official_groups=True, optimizer="adamw")
    assert type(adamw) is torch.optim.AdamW
    settings = {group["name"]: (round(group["lr"], 12), group["weight_decay"]) for group in adamw.param_groups}
    assert settings == {"conv_weight": (0.003, 0.05), "norm": (0.003, 0.0), "head_weight": (0.015, 0.05),
                        "head_bias": (0.03, 0.0), "other_bias": (0.003, 0.0)}
    plain = build_optimizer(net, lr=0.003, weight_decay=0.05, optimizer="adamw")
    assert [(group["lr"], group["weight_decay"]) for group in plain.param_groups] == [(0.003, 0.05)]
    with pytest.raises(ValueError, match=r"^optimizer 'adam': choose one of \('sgd', 'adamw'\)$"):
        build_optimizer(net, lr=0.01, optimizer="adam")


def test_vanilla_export_carries_torchvision_resnet_names_and_values() -> None:
    model = build_model("resnet18", num_classes=10)
    ours = model.state_dict()
    exported = to_torchvision_state_dict(model)
    reference = torchvision.models.resnet18(num_classes=10).state_dict()
    assert {key: tuple(value.shape) for key, value in exported.items()} == {
        key: tuple(value.shape) for key, value in reference.items()}
    for (our_key, our_value), (name, value) in zip(ours.items(), exported.items()):  # one export per entry, in order
        assert torch.equal(value, our_value) and value.data_ptr() != our_value.data_ptr(), (our_key, name)
    for parts in ({}, {"weight_alteration": False}, {"private_norms": False}):  # either FFN part alone refuses
        with pytest.raises(ValueError, match=r"^to_torchvision_state_dict: \S+ has no torchvision name; export a "
                                             r"vanilla model \(trained_frames=None\)$"):
            to_torchvision_state_dict(build_model("tiny", 3, trained_frames=(4, 8), **parts))


@pytest.mark.parametrize("arch, fold_div", [("resnet18", 8), ("resnet50", 8), ("resnet18", 4)])
def test_tsm_logits_equal_torchvision_resnet_with_the_shift_before_each_conv1(arch: str, fold_div: int) -> None:
    """An independent reference: torchvision's ResNet on every frame, the shift applied to each block's residual
    input (a pre-hook on conv1), logits averaged over the frames; our weights exported to it."""
    frames = 4
    torch.manual_seed(0)
    model = build_model(arch, num_classes=7, fold_div=fold_div).eval()
    for module in model.modules():  # non-trivial running statistics, so every norm layer matters
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    reference = getattr(torchvision.models, arch)(num_classes=7).eval()
    reference.load_state_dict(to_torchvision_state_dict(model))
    blocks = [block for layer in (reference.layer1, reference.layer2, reference.layer3, reference.layer4)
              for block in layer]
    for block in blocks:
        block.conv1.register_forward_pre_hook(lambda module, args: (naive_temporal_shift(args[0], frames, fold_div),))
    videos = torch.randn(2, frames, 3, 40, 32)
    with torch.no_grad():
        expected = reference(videos.flatten(0, 1)).view(2, frames, 7).mean(dim=1)
        torch.testing.assert_close(model(videos), expected, rtol=1e-4, atol=1e-5)
        if arch != "resnet18":
            return
        unshifted = build_model(arch, num_classes=7, fold_div=fold_div, shift_impl="none").eval()
        unshifted.load_state_dict(model.state_dict())
        for block in blocks:
            block.conv1._forward_pre_hooks.clear()
        plain = reference(videos.flatten(0, 1)).view(2, frames, 7).mean(dim=1)
        torch.testing.assert_close(unshifted(videos), plain, rtol=1e-4, atol=1e-5)


def test_tiny_network_and_its_initialisation_give_the_recorded_logits() -> None:
    golden = json.loads((Path(__file__).parent / "golden" / "tiny_logits" / "logits.json").read_text())
    videos = torch.linspace(-2, 2, 2 * 8 * 3 * 32 * 32).reshape(2, 8, 3, 32, 32).sin()
    for name, record in golden["logits"].items():
        torch.manual_seed(golden["seed"])
        model = build_model("tiny", num_classes=golden["num_classes"], **record["options"]).eval()
        with torch.no_grad():
            torch.testing.assert_close(model(videos), torch.tensor(record["values"]), rtol=1e-4, atol=1e-7,
                                       msg=lambda message, name=name: f"{name}: {message}")


def test_build_options_default_to_the_official_recipe() -> None:
    config = build_model("tiny", 5).config
    assert {key: config[key] for key in ("shift_mode", "fold_div", "channels_last", "private_norms",
                                         "weight_alteration", "wa_init", "shift_impl")} == {
        "shift_mode": "per-video", "fold_div": 8, "channels_last": False, "private_norms": True,
        "weight_alteration": True, "wa_init": "as-run", "shift_impl": "autograd"}


def test_unknown_build_choices_name_the_option_and_the_choices() -> None:
    with pytest.raises(ValueError, match=r"^shift_mode='global' is not one of \['per-video', 'official'\]$"):
        build_model("tiny", 3, shift_mode="global")
    with pytest.raises(ValueError, match=r"^wa_init='zeros' is not one of \['as-run', 'paper'\]$"):
        build_model("tiny", 3, wa_init="zeros")
    with pytest.raises(ValueError, match=r"^shift_impl='fast' is not one of \['autograd', 'naive', 'none'\]$"):
        build_model("tiny", 3, shift_impl="fast")
