"""train.py and evaluate.py on tiny real shards (32 px synthetic clips, tiny TSM-ResNet) on the CPU."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from pipeline_helpers import encode_jpeg

import evaluate
import train
from engine.training import NonFiniteLossError, check_finite, make_criterion
from engine.checkpoint import CHECKPOINT_KEYS
from engine.cost import count_multiply_adds
from engine.inference import INFERENCE_KEY
from model import build_model
from shard_format import write_jpeg_split
from preprocess.synthetic import iter_clips

REPO_ROOT = Path(__file__).resolve().parents[1]
NUM_CLASSES = 4
CLIP_FRAMES = 16
JPEG_QUALITY = 90
TINY_ARGS = [
    "--arch", "tiny", "--pretrained", "none", "--crop-size", "32", "--test-resize", "32", "--no-multi-scale",
    "--workers", "0", "--threads", "1", "--no-progress",
]


def clip_records(videos_per_class: int, seed: int) -> dict[str, list[dict]]:
    """Render synthetic clips (4 motion classes) and encode them as JPEG frame records, by split."""
    by_split: dict[str, list[dict]] = {"train": [], "validation": []}
    for clip in iter_clips(videos_per_class, num_frames=CLIP_FRAMES, split_fractions=(0.5, 0.5, 0.0), seed=seed,
                           classes=NUM_CLASSES, splits=("train", "validation")):
        by_split[clip["split"]].append({
            "id": clip["id"], "label": clip["label"], "template": clip["template"],
            "frames": [encode_jpeg(frame, JPEG_QUALITY) for frame in clip["frames"]], "width": 32, "height": 32,
        })
    return by_split


def write_shards(folder: Path, by_split: dict[str, list[dict]], num_shards: int = 2) -> Path:
    """Write every split as shards plus manifests (the manifest records the class count)."""
    settings = {"num_classes": NUM_CLASSES, "source": "tests/test_train.py"}
    for split, videos in by_split.items():
        write_jpeg_split(folder, split, videos, num_shards, settings)
    return folder


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    """24 videos: 12 train and 12 validation, 3 per class each, in 2 shards per split."""
    return write_shards(tmp_path_factory.mktemp("shards"), clip_records(videos_per_class=6, seed=3))


@pytest.fixture(scope="module")
def trained_runs(shards: Path, tmp_path_factory) -> dict[str, Path]:
    """A few steps of each mode (vanilla TSM at 4 frames, FFN at 4/8/16); their run folders."""
    root = tmp_path_factory.mktemp("runs")
    runs = {"tsm4": ["--mode", "vanilla", "--frames", "4"], "ffn": ["--mode", "ffn", "--frames", "4", "8", "16"]}
    for name, mode_args in runs.items():
        status = train.main([*mode_args, "--shards", str(shards), "--output", str(root / name), "--epochs", "2",
                             "--batch-size", "4", "--lr", "0.05", *TINY_ARGS])
        assert status == 0
    return {name: root / name for name in runs}


def read_history(run: Path) -> list[dict]:
    """The per-epoch records stored in a run's last checkpoint."""
    return torch.load(run / train.LAST_CHECKPOINT, weights_only=True)["metrics"]["history"]


@pytest.mark.parametrize("name", ["tsm4", "ffn"])
def test_every_mode_trains_a_few_steps_with_finite_loss(trained_runs, name):
    run = trained_runs[name]
    checkpoint = torch.load(run / train.LAST_CHECKPOINT, weights_only=True)
    assert set(checkpoint) == {*CHECKPOINT_KEYS, INFERENCE_KEY}
    assert checkpoint["epoch"] == 2
    history = checkpoint["metrics"]["history"]
    assert [record["epoch"] for record in history] == [1, 2]
    assert all(torch.isfinite(torch.tensor(record["train_loss"])) for record in history)
    assert history[-1]["val_n"] == 12 and history[-1]["val_frames"] == (16 if name == "ffn" else 4)
    record = checkpoint[INFERENCE_KEY]
    assert record["trained_frames"] == ([4, 8, 16] if name == "ffn" else [4]) and record["mode"] == ("ffn" if name == "ffn" else "vanilla")
    assert (record["arch"], record["num_classes"], record["crop_size"], record["test_resize"]) == ("tiny", 4, 32, 32)
    assert record["class_names"] is None and record["short_side"] is None  # this manifest records neither
    rebuilt = build_model(**checkpoint["config"])
    rebuilt.load_state_dict(checkpoint["model"])
    assert (run / train.BEST_CHECKPOINT).is_file()
    rows = (run / train.LOG_CSV).read_text().splitlines()
    assert rows[0].startswith("epoch,lr,train_loss") and len(rows) == 3


def test_tiny_model_fits_eight_clips_without_weight_decay(tmp_path):
    records = clip_records(videos_per_class=2, seed=11)
    assert len(records["train"]) == 4  # 2 per class, half of them train: add the validation clips to train
    eight = {"train": records["train"] + records["validation"], "validation": records["validation"]}
    folder = write_shards(tmp_path / "shards", eight, num_shards=1)
    status = train.main(["--mode", "vanilla", "--frames", "8", "--shards", str(folder), "--output", str(tmp_path / "run"),
                         "--epochs", "40", "--batch-size", "8", "--optimizer", "adamw", "--lr", "0.01",
                         "--weight-decay", "0", "--dropout", "0", "--val-every", "40", *TINY_ARGS])
    assert status == 0
    history = read_history(tmp_path / "run")
    assert history[-1]["train_top1"] >= 90.0, [round(record["train_top1"]) for record in history]


def branch_norm_grads(network: torch.nn.Module, loss: torch.Tensor) -> dict[str, float]:
    """Gradient norm of `loss` summed over the BatchNorm parameters of each branch key (4, 8, 16)."""
    named = [(name, parameter) for name, parameter in network.named_parameters() if ".norms." in name]
    grads = torch.autograd.grad(loss, [parameter for _, parameter in named], retain_graph=True, allow_unused=True)
    totals: dict[str, float] = {}
    for (name, _), grad in zip(named, grads):
        key = name.split(".norms.")[1].split(".")[0]
        totals[key] = totals.get(key, 0.0) + (0.0 if grad is None else float(grad.abs().sum()))
    return totals


def test_each_loss_term_reaches_only_its_branch():
    torch.manual_seed(0)
    network = build_model(arch="tiny", num_classes=NUM_CLASSES, trained_frames=(4, 8, 16), dropout=0.0).train()
    videos = {frames: torch.randn(4, frames, 3, 32, 32) for frames in (4, 8, 16)}
    labels = torch.tensor([0, 1, 2, 3])
    logits = network.forward_by_frames(videos)
    ce_only, _ = make_criterion("ffn", lam=0.0)(logits, labels)
    ce_grads = branch_norm_grads(network, ce_only)
    assert ce_grads["16"] > 0 and ce_grads["4"] == 0 and ce_grads["8"] == 0
    for student, other in ((4, 8), (8, 4)):
        pair = {student: logits[student], 16: logits[16]}
        with_kl, _ = make_criterion("ffn", lam=1.0)(pair, labels)
        without_kl, _ = make_criterion("ffn", lam=0.0)(pair, labels)
        kl_grads = branch_norm_grads(network, with_kl - without_kl)
        assert kl_grads[str(student)] > 0, f"KL at {student}F must train the {student}F BatchNorms"
        assert kl_grads["16"] == 0 and kl_grads[str(other)] == 0, kl_grads


def test_ffn_defaults_are_the_official_loss_and_independent_sampling(trained_runs):
    # trained_runs["ffn"] gave no loss or sampling flag: settings.json records what the run used
    settings = json.loads((trained_runs["ffn"] / train.SETTINGS_JSON).read_text())
    assert settings["sampling"] == "independent"
    assert settings["ce_all_frames"] is False and settings["lam"] == 1.0
    checkpoint = torch.load(trained_runs["ffn"] / train.LAST_CHECKPOINT, weights_only=True)
    assert checkpoint["metrics"]["settings"]["sampling"] == "independent"
    assert checkpoint["metrics"]["settings"]["ce_all_frames"] is False


def first_step_loss(shards: Path, output: Path, *flags: str) -> float:
    """The loss of the first optimiser step of a seeded FFN run (one step, so the weights are the initial ones)."""
    status = train.main(["--mode", "ffn", "--frames", "4", "8", "16", "--shards", str(shards), "--output",
                         str(output), "--epochs", "1", "--max-steps-per-epoch", "1", "--batch-size", "4",
                         "--lr", "0.05", "--val-batch-size", "12", *TINY_ARGS, *flags])
    assert status == 0
    return read_history(output)[0]["train_loss"]


def test_ffn_default_run_trains_on_the_official_loss_and_sampling(shards, tmp_path):
    default = first_step_loss(shards, tmp_path / "default")
    independent = first_step_loss(shards, tmp_path / "independent", "--sampling", "independent")
    nested = first_step_loss(shards, tmp_path / "nested", "--sampling", "nested")
    ce_all = first_step_loss(shards, tmp_path / "ce_all", "--ce-all-frames")
    assert nested != independent  # the two samplings draw different frames for this batch
    assert default == independent  # same seed, same frames, same loss: the default samples independently
    assert default < ce_all  # the official loss has no cross-entropy on the lower frame counts


def test_resume_reaches_the_same_weights_as_an_uninterrupted_run(shards, tmp_path):
    common = ["--mode", "ffn", "--frames", "4", "8", "16", "--shards", str(shards), "--epochs", "3",
              "--batch-size", "4", "--lr", "0.05", "--dropout", "0.5", "--max-steps-per-epoch", "2", *TINY_ARGS]
    common[common.index("--workers") + 1] = "1"
    assert train.main([*common, "--output", str(tmp_path / "whole")]) == 0
    assert train.main([*common, "--output", str(tmp_path / "parts"), "--stop-after-epochs", "1"]) == 0
    assert torch.load(tmp_path / "parts" / "last.pt", weights_only=True)["epoch"] == 1
    assert train.main([*common, "--output", str(tmp_path / "parts"), "--resume"]) == 0
    whole = torch.load(tmp_path / "whole" / "last.pt", weights_only=True)
    parts = torch.load(tmp_path / "parts" / "last.pt", weights_only=True)
    assert parts["epoch"] == whole["epoch"] == 3
    mismatched = [key for key in whole["model"] if not torch.equal(whole["model"][key], parts["model"][key])]
    assert not mismatched, f"weights differ after resume: {mismatched[:5]}"
    losses = [[record["train_loss"] for record in run["metrics"]["history"]] for run in (whole, parts)]
    assert losses[0] == losses[1]


def test_evaluate_at_several_frame_counts_writes_the_schema(trained_runs, shards, tmp_path):
    checkpoints = [f"tsm4={trained_runs['tsm4'] / 'last.pt'}", str(trained_runs["ffn"] / "last.pt")]
    report = evaluate.run(evaluate.build_parser().parse_args(
        ["--checkpoints", *checkpoints, "--frames", "2", "4", "8", "16", "--shards", str(shards),
         "--output", str(tmp_path), "--workers", "0", "--batch-size", "5", "--tar-reader", "webdataset"]))
    written = json.loads((tmp_path / "eval.json").read_text())
    assert written == json.loads(json.dumps(report))
    assert set(written) == {"settings", "models"} and set(written["models"]) == {"tsm4", "ffn"}
    assert written["settings"]["crop_size"] == 32 and written["settings"]["split"] == "validation"
    for name, trained in (("tsm4", [4]), ("ffn", [4, 8, 16])):
        entry = written["models"][name]
        assert entry["trained_frames"] == trained and entry["split"] == "validation" and entry["n"] == 12
        assert set(entry["top1"]) == set(entry["top5"]) == {"2", "4", "8", "16"}
        assert all(0 <= entry["top1"][t] <= entry["top5"][t] <= 100 for t in entry["top1"])
        assert set(entry["gflops"]) == set(entry["latency_ms"]) == {"2", "4", "8", "16"}
        assert all(entry["latency_ms"][t] > 0 for t in entry["latency_ms"])
        assert entry["gflops"]["16"] == pytest.approx(8 * entry["gflops"]["2"], rel=1e-4)
    # The tiny network at 32 px: FFN counts what TSM counts (Weight Alteration folded into conv1's weights).
    assert written["models"]["ffn"]["gflops"] == written["models"]["tsm4"]["gflops"]
    cost = written["settings"]["cost"]
    assert cost["views_per_video"] == 1 and "median" in cost["latency_ms"]
    assert set(cost["weight_alteration_share"]) == {"ffn"}
    # The evaluation protocol is the one train.py validates with (there through the lean tar reader, here through
    # WebDataset's): the same number at the trained frame count.
    for name, frames in (("tsm4", "4"), ("ffn", "16")):
        last = read_history(trained_runs[name])[-1]
        assert written["models"][name]["top1"][frames] == pytest.approx(last["val_top1"], abs=1e-3)
    assert (tmp_path / "eval.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_with_tsm_full_res_three_crops_two_clips_records_the_protocol(trained_runs, shards, tmp_path):
    """TSM's accurate full-res protocol: 3 crops x 2 clips of side 36 (the test resize), TSM's short-video indices."""
    report = evaluate.run(evaluate.build_parser().parse_args(
        ["--checkpoints", str(trained_runs["ffn"] / "last.pt"), "--frames", "4", "16", "--shards", str(shards),
         "--output", str(tmp_path), "--workers", "0", "--batch-size", "5", "--test-resize", "36", "--full-res",
         "--test-crops", "3", "--test-clips", "2", "--short-video", "segments", "--no-latency"]))
    settings = json.loads((tmp_path / "eval.json").read_text())["settings"]
    assert settings == json.loads(json.dumps(report["settings"]))
    assert (settings["crop_size"], settings["test_resize"]) == (36, 36)  # trained at crop 32, test resize 32
    assert (settings["test_crops"], settings["test_clips"]) == (3, 2)
    assert settings["full_res"] is True and settings["short_video"] == "segments"
    entry = report["models"]["ffn"]
    assert entry["n"] == 12  # every video once, its 6 views averaged
    assert entry["latency_ms"] == {"4": None, "16": None}  # --no-latency
    network = build_model(arch="tiny", num_classes=NUM_CLASSES, trained_frames=(4, 8, 16))
    per_view = count_multiply_adds(network, 16, 36) / 1e9
    assert entry["gflops"]["16"] == pytest.approx(6 * per_view, rel=1e-5)  # per video: 3 crops x 2 clips
    assert settings["cost"]["views_per_video"] == 6
    assert set(entry["top1"]) == set(entry["top5"]) == {"4", "16"}
    assert all(0 <= entry["top1"][t] <= entry["top5"][t] <= 100 for t in entry["top1"])


def test_nonfinite_loss_names_the_step_and_the_last_checkpoint(tmp_path):
    good = tmp_path / "last.pt"
    good.write_bytes(b"x")
    with pytest.raises(NonFiniteLossError, match=r"epoch 2 step 5 \(global step 17\).*last\.pt"):
        check_finite(float("nan"), epoch=1, step=4, global_step=17, last_good=good)
    check_finite(1.5, epoch=0, step=0, global_step=1, last_good=None)


@pytest.mark.slow
def test_torchrun_two_cpu_processes(shards, tmp_path):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "train.py",
               "--mode", "ffn", "--frames", "4", "8", "16", "--shards", str(shards), "--output", str(tmp_path),
               "--epochs", "1", "--batch-size", "2", *TINY_ARGS]
    environment = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, env=environment, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    checkpoint = torch.load(tmp_path / "last.pt", weights_only=True)
    settings = checkpoint["metrics"]["settings"]
    assert settings["world_size"] == 2 and settings["total_batch"] == 4
    assert settings["steps_per_epoch"] == 3  # 12 training videos / (2 processes x 2 videos)
    assert len(checkpoint["rng"]) == 2
    assert checkpoint["metrics"]["history"][-1]["val_n"] == 12  # every validation video once across the ranks


@pytest.mark.slow
def test_demo_end_to_end_writes_tfd_json_and_png(tmp_path):
    """scripts/demo.py on a miniature dataset (4 clips per class, 1 epoch): every step runs, the schema holds."""
    command = [sys.executable, "scripts/demo.py", "--runs", str(tmp_path / "demo"), "--videos-per-class", "4",
               "--epochs", "1", "--pretrain-epochs", "1", "--threads", "1", "--workers", "1", "--started-at", "0",
               "--jobs", "2"]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "time breakdown" in result.stdout and "train ffn (seed 0)" in result.stdout
    assert "training (4 runs, 2 at a time)" in result.stdout  # side by side: each run's output goes to its log
    ffn_log = (tmp_path / "demo" / "seed0" / "ffn" / "train.log").read_text()
    assert "pretraining" in result.stdout and "classifier dropped: fc.weight, fc.bias" in ffn_log
    report = json.loads((tmp_path / "demo" / "tfd.json").read_text())
    assert {"tsm16", "ffn", "tsm4", "tsm8"} <= set(report["models"])
    for name, trained in (("tsm16", [16]), ("ffn", [4, 8, 16]), ("tsm4", [4]), ("tsm8", [8])):
        entry = report["models"][name]
        assert entry["trained_frames"] == trained and entry["split"] == "validation" and entry["n"] == 12
        assert set(entry["top1"]) == {"2", "4", "6", "8", "12", "16"}
        assert set(entry["gflops"]) == set(entry["latency_ms"]) == set(entry["top1"])
    assert report["models"]["ffn"]["gflops"] == report["models"]["tsm16"]["gflops"]
    settings = report["settings"]
    assert settings["n_validation"] == 12 and len(settings["classes"]) == settings["num_classes"] == 12
    assert settings["seeds"] == [0] and settings["loss"]["ffn"].startswith("official")
    assert settings["start"] == "pretrained" and settings["preset"]["arch"] == "tiny"
    assert settings["preset"]["epochs"] == 1 and settings["study_epochs"] == 20  # --epochs overrides every schedule
    assert set(settings["run_seconds"]) == {f"{name}@seed0" for name in ("tsm16", "ffn", "tsm4", "tsm8")}
    assert all(seconds > 0 for seconds in settings["run_seconds"].values())
    pretraining = settings["pretraining"]
    digest = hashlib.sha256(Path(pretraining["checkpoint"]).read_bytes()).hexdigest()
    assert pretraining["sha256"] == digest and pretraining["settings"]["epochs"] == 1
    assert all(f"--pretrained {pretraining['checkpoint']}" in command for command in settings["commands"].values())
    assert set(report["curves"]["ffn"]) == {"4", "8", "16"} and len(report["curves"]["ffn"]["4"]) == 1
    assert set(report["curves"]["tsm16"]) == {"16"}
    rules = [row["rule"] for row in report["margins"]["official_loss"]]
    assert rules[0] == "tsm16@4F <= tsm16@16F - 25" and len(rules) == 6
    for image in ("tfd.png", "tfd_curves.png"):
        assert (tmp_path / "demo" / image).read_bytes()[:4] == b"\x89PNG"
    study = subprocess.run([*command, "--study", "ablations"], cwd=REPO_ROOT, capture_output=True, text=True,
                           timeout=600)
    assert study.returncode == 0, study.stdout[-2000:] + study.stderr[-2000:]
    assert "train ffn (seed 0): reusing" in study.stdout
    ablations = json.loads((tmp_path / "demo" / "ablations.json").read_text())
    assert {"ffn", "tsm16", "tsm4", "tsm8", "ffn_e20", "ffn_shared_bn", "ffn_no_wa", "ffn_lam0"} <= set(
        ablations["models"])
    commands = ablations["settings"]["commands"]
    assert "--no-private-norms" in commands["ffn_shared_bn"] and "--lam 0" in commands["ffn_lam0"]
    assert set(ablations["curves"]["ffn_lam0"]) == {"4", "8", "16"}
    assert (tmp_path / "demo" / "ablations_curves.png").read_bytes()[:4] == b"\x89PNG"
    alone = subprocess.run([*command, "--study", "ablations", "--study-only", "--models", "ffn_lam0", "ffn_no_wa",
                            "--jobs", "1"],
                           cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert alone.returncode == 0, alone.stdout[-2000:] + alone.stderr[-2000:]
    assert "train ffn_lam0 (seed 0): reusing" in alone.stdout and "train tsm16" not in alone.stdout
    only = json.loads((tmp_path / "demo" / "ablations.json").read_text())
    assert set(only["models"]) == {"ffn_no_wa", "ffn_lam0"} and only["margins"] == {}
