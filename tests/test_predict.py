"""predict.py on real synthetic .webm clips (plus a non-square-pixel one) with tiny TSM / TSM-FFN checkpoints.

The clips also go through ``make shards`` at the same short side, so the shard path (the evaluation loader) and
predict can be compared logit for logit.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import predict
from data_pipeline import build_loader, decode_one_video
from data_pipeline.decode import CpuDecoder, TorchvisionDecoder
from engine.checkpoint import save_atomic
from engine.data import read_shard_facts
from engine.inference import INFERENCE_KEY, inference_record
from model import build_model
from model.tsm_resnet import to_torchvision_state_dict
from preprocess import make_shards
from preprocess.datasets.ssv2 import class_names, video_path
from preprocess.ffmpeg_tools import resolve_ffmpeg
from preprocess.synthetic import generate_dataset

REPO_ROOT = Path(__file__).resolve().parents[1]
NUM_CLASSES = 6
SHORT_SIDE = 24
CROP_SIZE = 16
TEST_RESIZE = 20
FFN_FRAMES = (4, 8, 16)
TSM_FRAMES = 8
SAR_ID = "900001"
# Coded 36x24 with 4:3 pixels: 48x24 at the display aspect (make shards resizes it to square pixels).
SAR_SOURCE = "testsrc=s=36x24:r=10:d=1,setsar=4/3"
ON_CPU = ["--device", "cpu"]
FAST = [*ON_CPU, "--decode", "cpu", "--threads", "1", "--repeats", "1", "--warmup", "0"]
DEVICE_PRESENT = {"cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """Six 48x32 synthetic clips (one per class, validation split) and one 4:3-pixel clip, in SSv2's layout."""
    root = tmp_path_factory.mktemp("predict_data")
    generate_dataset(root, 1, num_frames=12, width=48, height=32, split_fractions=(0.0, 1.0, 0.0),
                     classes=NUM_CLASSES, workers=1)  # fmt: skip
    subprocess.run([resolve_ffmpeg().path, "-v", "error", "-f", "lavfi", "-i", SAR_SOURCE, "-c:v", "libvpx-vp9",
                    "-deadline", "good", "-cpu-used", "4", "-pix_fmt", "yuv420p", str(video_path(root, SAR_ID))],
                   check=True)  # fmt: skip
    annotations = root / "labels" / "validation.json"
    entries = json.loads(annotations.read_text())
    annotations.write_text(json.dumps([*entries, dict(entries[0], id=SAR_ID)]))
    return root


@pytest.fixture(scope="module")
def shards(dataset: Path, tmp_path_factory) -> Path:
    """The validation split as shards at short side SHORT_SIDE (one shard)."""
    out = tmp_path_factory.mktemp("predict_shards")
    status = make_shards.main([
        "--data-root", str(dataset), "--out", str(out), "--short-side", str(SHORT_SIDE), "--splits", "validation",
        "--eval-shards", "1", "--workers", "1", "--no-progress", "--slice-index", "0", "--slice-count", "1",
    ])  # fmt: skip
    assert status == make_shards.EXIT_OK
    return out


def save_like_train(network: torch.nn.Module, path: Path, mode: str, frames: list[int],
                    record: dict | None) -> Path:
    """Save a checkpoint with the keys train.py writes (the inference record only when given)."""
    settings = {"mode": mode, "frames": frames, "crop_size": CROP_SIZE, "test_resize": TEST_RESIZE}
    payload = {"model": network.state_dict(), "optimizer": {}, "scheduler": {}, "scaler": None, "epoch": 1, "rng": [],
               "config": dict(network.config), "metrics": {"history": [], "settings": settings}}
    if record is not None:
        payload[INFERENCE_KEY] = record
    save_atomic(payload, path)
    return path


@pytest.fixture(scope="module")
def checkpoints(shards: Path, tmp_path_factory) -> dict[str, Path]:
    """An FFN checkpoint with the inference record, an older-style TSM one without it, an official-format TSM."""
    folder = tmp_path_factory.mktemp("predict_checkpoints")
    torch.manual_seed(0)
    ffn = build_model("tiny", NUM_CLASSES, trained_frames=FFN_FRAMES)
    record = inference_record(ffn.config, "ffn", list(FFN_FRAMES), CROP_SIZE, TEST_RESIZE,
                              read_shard_facts(shards, "validation"))
    tsm = build_model("tiny", NUM_CLASSES)
    official = {("module.new_" + key if key.startswith("fc.") else "module.base_model." + key): value
                for key, value in to_torchvision_state_dict(tsm).items()}  # the FFN repository's TSM layout
    torch.save({"state_dict": official, "epoch": 3}, folder / "TSM_something_segment8.pth")
    return {
        "ffn": save_like_train(ffn, folder / "ffn.pt", "ffn", list(FFN_FRAMES), record),
        "tsm_old": save_like_train(tsm, folder / "tsm.pt", "tsm", [TSM_FRAMES], None),
        "official_tsm": folder / "TSM_something_segment8.pth",
    }


def all_videos(dataset: Path) -> list[Path]:
    """Every clip of the dataset, the 4:3-pixel one included."""
    return sorted((dataset / "data" / "20bn-something-something-v2").glob("*.webm"))


def shard_logits(network: torch.nn.Module, shards: Path, frames: list[int]) -> dict[str, dict[int, torch.Tensor]]:
    """{video id: {T: logits}} through the evaluation loader (evaluate.py's path), one video per batch."""
    loader = build_loader(shards, "validation", frames=tuple(frames), batch_size=1, train=False, decode="cpu",
                          device="cpu", num_workers=0, crop_size=CROP_SIZE, test_resize=TEST_RESIZE)
    logits = {}
    with torch.no_grad():
        for batch in loader:
            logits[batch["id"][0]] = {count: network(batch["videos"][count])[0] for count in frames}
    return logits


def test_predict_gives_the_logits_of_the_shard_path(dataset, shards, checkpoints):
    frames = [2, 4, 8, 16]
    videos = all_videos(dataset)
    args = predict.parse_args(["--checkpoint", str(checkpoints["ffn"]), "--video", *map(str, videos),
                               "--frames", *map(str, frames), *FAST])
    predictor = predict.prepare(args)
    assert (predictor.short_side, predictor.config.crop_size, predictor.config.test_resize) == (
        SHORT_SIDE, CROP_SIZE, TEST_RESIZE)  # from the checkpoint, no flag
    expected = shard_logits(predictor.loaded.network, shards, frames)
    decoded = predict.decode_files(videos, predictor.short_side, predictor.jpeg_quality)
    assert {video.path.stem: (video.width, video.height) for video in decoded}[SAR_ID] == (48, 24)
    assert sorted(video.path.stem for video in decoded) == sorted(expected)
    for video in decoded:
        batch = predict.video_batch(predictor, video)
        outputs = predict.forward_by_frames(predictor, batch, frames, repeats=1, warmup=0)
        for count in frames:
            torch.testing.assert_close(outputs[count][0], expected[video.path.stem][count])


def test_json_top5_sorted_named_and_nearest_branch(dataset, checkpoints, tmp_path, capsys):
    output = tmp_path / "out" / "predictions.json"
    frames = [2, 3, 6, 12, 16]
    videos = all_videos(dataset)[:2]
    assert predict.main(["--checkpoint", str(checkpoints["ffn"]), "--video", *map(str, videos),
                         "--frames", *map(str, frames), "--json", str(output), *FAST]) == 0
    printed = capsys.readouterr().out
    assert "note:" not in printed and "latency: the model's forward pass alone" in printed
    report = json.loads(output.read_text())
    assert report["checkpoint"] == str(checkpoints["ffn"])
    assert [entry["video"] for entry in report["videos"]] == [str(path) for path in videos]
    names = set(json.loads((dataset / "labels" / "labels.json").read_text()))
    for entry in report["videos"]:
        assert list(entry["results"]) == [str(count) for count in frames]  # numeric order, not "12" < "2"
        for count, result in entry["results"].items():
            assert set(result) == {"top5", "branch", "latency_ms"} and result["latency_ms"] > 0
            probs = [item["prob"] for item in result["top5"]]
            assert len(probs) == 5 and probs == sorted(probs, reverse=True) and sum(probs) <= 1.0
            assert {item["label"] for item in result["top5"]} <= names
        branches = {count: result["branch"] for count, result in entry["results"].items()}
        assert branches == {"2": 4, "3": 4, "6": 8, "12": 16, "16": 16}  # nearest, ties to the larger


def test_old_tsm_checkpoint_notes_other_counts_and_names_classes_by_index(dataset, checkpoints, capsys):
    video = all_videos(dataset)[0]
    report = predict.run(predict.parse_args([
        "--checkpoint", str(checkpoints["tsm_old"]), "--video", str(video), "--frames", "4", "8",
        "--short-side", str(SHORT_SIDE), "--top-k", "3", *FAST,
    ]))  # fmt: skip
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "trained at 8 frames; at 4" in notes[0]
    results = report["videos"][0]["results"]
    assert [results[count]["branch"] for count in ("4", "8")] == [None, None]
    assert all(item["label"].isdigit() and len(results[count]["top3"]) == 3
               for count in results for item in results[count]["top3"])


def test_official_tsm_file_matches_our_checkpoint_and_takes_labels(dataset, checkpoints, capsys):
    video = all_videos(dataset)[0]
    common = ["--video", str(video), "--frames", "4", "--short-side", str(SHORT_SIDE), "--crop-size",
              str(CROP_SIZE), "--test-resize", str(TEST_RESIZE), *FAST]
    ours = predict.run(predict.parse_args(["--checkpoint", str(checkpoints["tsm_old"]), *common]))
    official = predict.run(predict.parse_args([
        "--checkpoint", str(checkpoints["official_tsm"]), "--arch", "tiny", "--labels",
        str(dataset / "labels" / "labels.json"), *common,
    ]))  # fmt: skip
    assert "trained at 8 frames" in capsys.readouterr().out  # the release name's segment8
    by_index = json.loads((dataset / "labels" / "labels.json").read_text())
    ours_top = ours["videos"][0]["results"]["4"]["top5"]
    official_top = official["videos"][0]["results"]["4"]["top5"]
    assert [by_index[item["label"]] for item in official_top] == [item["label"] for item in ours_top]
    assert [item["prob"] for item in official_top] == pytest.approx([item["prob"] for item in ours_top])


def bad_inputs(dataset: Path, checkpoints: dict[str, Path], folder: Path) -> dict[str, tuple[list[str], str]]:
    """Each bad input: (command-line arguments, the file its message must name)."""
    video = str(all_videos(dataset)[0])
    truncated = folder / "cut.pt"
    truncated.write_bytes(checkpoints["ffn"].read_bytes()[:2000])
    text = folder / "notes.webm"
    text.write_text("not a video\n")
    image = folder / "still.webm"
    subprocess.run([resolve_ffmpeg().path, "-v", "error", "-f", "lavfi", "-i", "testsrc=s=32x32", "-frames:v", "1",
                    "-c:v", "mjpeg", "-f", "image2", str(image)], check=True)  # fmt: skip
    empty = folder / "empty.pt"
    empty.write_bytes(b"")
    notes = folder / "notes.pt"
    notes.write_text("weights: none\n")
    listed = folder / "listed.pt"
    torch.save([1, 2], listed)
    pickled = folder / "pickled.pt"
    torch.save({"state_dict": {}, "where": Path("runs")}, pickled)  # a Path: the safe loader refuses it
    labels = folder / "labels.json"
    labels.write_text(json.dumps({"Moving something up": "0", "Moving something down": "1"}))
    ffn = str(checkpoints["ffn"])
    return {
        "missing checkpoint": (["--checkpoint", str(folder / "none.pt"), "--video", video], "none.pt"),
        "truncated checkpoint": (["--checkpoint", str(truncated), "--video", video], "cut.pt"),
        "empty checkpoint": (["--checkpoint", str(empty), "--video", video], "empty.pt"),
        "text as checkpoint": (["--checkpoint", str(notes), "--video", video], "notes.pt"),
        "list as checkpoint": (["--checkpoint", str(listed), "--video", video], "listed.pt"),
        "pickled object in checkpoint": (["--checkpoint", str(pickled), "--video", video], "pickled.pt"),
        "missing video": (["--checkpoint", ffn, "--video", str(folder / "none.webm")], "none.webm"),
        "text as video": (["--checkpoint", ffn, "--video", str(text)], "notes.webm"),
        "image as video": (["--checkpoint", ffn, "--video", str(image)], "still.webm"),
        "labels of another class count": (["--checkpoint", ffn, "--video", video, "--labels", str(labels)],
                                          "labels.json"),
        "missing labels": (["--checkpoint", ffn, "--video", video, "--labels", str(folder / "none.json")],
                           "none.json"),
    }


def test_each_bad_input_gives_one_line_naming_the_file(dataset, checkpoints, tmp_path):
    messages = {}
    for name, (arguments, culprit) in bad_inputs(dataset, checkpoints, tmp_path).items():
        with pytest.raises(SystemExit) as raised:
            predict.main([*arguments, "--frames", "4", *FAST])
        message = str(raised.value.code)
        assert "\n" not in message and culprit in message, (name, message)
        messages[name] = message
    assert "truncated" in messages["truncated checkpoint"]
    assert "empty file" in messages["empty checkpoint"]
    assert "not a PyTorch checkpoint" in messages["text as checkpoint"]
    assert "holds a list, not a checkpoint dict" in messages["list as checkpoint"]
    assert "--trust-pickle" not in messages["list as checkpoint"]
    assert "--trust-pickle" in messages["pickled object in checkpoint"]
    assert "not a video (image container)" in messages["image as video"]
    assert "2 classes" in messages["labels of another class count"] and "6 outputs" in messages[
        "labels of another class count"]


@pytest.mark.parametrize("device", sorted(DEVICE_PRESENT))
def test_unavailable_device_is_one_line(dataset, checkpoints, device):
    if DEVICE_PRESENT[device]:
        pytest.skip(f"{device} is available here")
    with pytest.raises(SystemExit) as raised:
        predict.main(["--checkpoint", str(checkpoints["ffn"]), "--video", str(all_videos(dataset)[0]),
                      "--device", device, "--frames", "4", "--threads", "1"])
    message = str(raised.value.code)
    assert "\n" not in message and f"--device {device}: not available" in message and "omit --device" in message


@pytest.mark.parametrize("arguments, flag", [
    (["--threads", "0"], "--threads"), (["--threads", "-2"], "--threads"),
    (["--trained-frames", "8", "0"], "--trained-frames"), (["--json", "{folder}"], "--json {folder}"),
])  # fmt: skip
def test_bad_flag_is_one_line_before_any_work(tmp_path, capsys, arguments, flag):
    arguments = [argument.format(folder=tmp_path) for argument in arguments]
    with pytest.raises(SystemExit) as raised:
        predict.parse_args(["--checkpoint", str(tmp_path / "none.pt"), "--video", "a.webm", *arguments])
    assert raised.value.code == 2
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert flag.format(folder=tmp_path) in message


def test_trained_frames_flag_is_ignored_with_a_note_for_an_ffn(dataset, checkpoints, capsys):
    video = str(all_videos(dataset)[0])
    report = predict.run(predict.parse_args(["--checkpoint", str(checkpoints["ffn"]), "--video", video,
                                             "--frames", "4", "--trained-frames", "16", *FAST]))
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note:")]
    assert notes == ["note: --trained-frames is ignored for an FFN: its branches (4/8/16) are its trained frame "
                     "counts"]
    assert report["settings"]["trained_frames"] == list(FFN_FRAMES)
    tsm = predict.run(predict.parse_args(["--checkpoint", str(checkpoints["tsm_old"]), "--video", video,
                                          "--frames", "4", "--trained-frames", "4", "--short-side", str(SHORT_SIDE),
                                          *FAST]))
    assert tsm["settings"]["trained_frames"] == [4] and "note:" not in capsys.readouterr().out


def test_command_line_error_is_one_line_without_traceback(tmp_path):
    completed = subprocess.run(
        [sys.executable, "predict.py", "--checkpoint", str(tmp_path / "none.pt"), "--video", str(tmp_path / "a.webm")],
        cwd=REPO_ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert completed.returncode == 1
    assert completed.stderr.strip().splitlines() == [f"{tmp_path / 'a.webm'}: no such video; check --video"]


def test_class_names_follow_the_class_index_and_number_a_gap():
    assert class_names({"Moving something up": 1, "Pushing something": 0}) == ["Pushing something",
                                                                                  "Moving something up"]
    assert class_names({"Pushing something": 2}) == ["0", "1", "Pushing something"]


def test_one_video_batch_is_the_same_with_a_main_process_decoder(dataset, checkpoints):
    args = predict.parse_args(["--checkpoint", str(checkpoints["ffn"]), "--video", str(all_videos(dataset)[0]),
                               "--frames", "4", "16", *FAST])
    predictor = predict.prepare(args)
    (video,) = predict.decode_files(args.video, predictor.short_side, predictor.jpeg_quality)
    on_worker = decode_one_video(video.frames, video.width, video.height, predictor.config, CpuDecoder())
    in_main = decode_one_video(video.frames, video.width, video.height, predictor.config, TorchvisionDecoder("cpu"))
    for count in (4, 16):
        assert on_worker["videos"][count].shape == (1, count, 3, CROP_SIZE, CROP_SIZE)
        torch.testing.assert_close(in_main["videos"][count], on_worker["videos"][count])
    with pytest.raises(ValueError, match="no frame"):
        decode_one_video([], video.width, video.height, predictor.config, CpuDecoder())


def test_train_records_what_predict_needs_from_real_shards(dataset, shards, tmp_path, capsys):
    import train

    status = train.main([
        "--mode", "ffn", "--frames", "4", "8", "--shards", str(shards), "--output", str(tmp_path / "run"),
        "--train-split", "validation", "--val-split", "validation", "--epochs", "1", "--batch-size", "7",
        "--arch", "tiny", "--pretrained", "none", "--crop-size", str(CROP_SIZE), "--no-multi-scale", "--workers", "0",
        "--threads", "1", "--no-progress", "--decode", "cpu", "--device", "cpu",
    ])  # fmt: skip
    assert status == 0
    record = torch.load(tmp_path / "run" / "last.pt", weights_only=True)[INFERENCE_KEY]
    labels = json.loads((dataset / "labels" / "labels.json").read_text())
    assert record["class_names"] == sorted(labels, key=lambda name: int(labels[name]))
    assert (record["short_side"], record["jpeg_quality"], record["trained_frames"]) == (SHORT_SIDE, 90, [4, 8])
    assert (record["crop_size"], record["test_resize"]) == (CROP_SIZE, CROP_SIZE * 256 // 224)
    capsys.readouterr()
    report = predict.run(predict.parse_args(["--checkpoint", str(tmp_path / "run" / "last.pt"), "--video",
                                             str(all_videos(dataset)[0]), "--frames", "6", *FAST]))
    assert report["settings"]["short_side"] == SHORT_SIDE and report["videos"][0]["results"]["6"]["branch"] == 8
    assert {item["label"] for item in report["videos"][0]["results"]["6"]["top5"]} <= set(labels)


FAMILY_TINY = {"tsm": ("tiny", (4, 8), (2, 6, 12)), "tea": ("tea_tiny", (4, 8), (2, 6, 12)),
               "slowfast": ("slowfast_tiny", (4, 8), (12,)), "uniformer": ("uniformer_tiny", (4, 8), (2, 6, 12))}


@pytest.fixture(scope="module")
def shards_32px(dataset: Path, tmp_path_factory) -> Path:
    """The validation split as shards at short side 32 (the attention and TEA models need 32 px)."""
    out = tmp_path_factory.mktemp("predict_shards_32")
    status = make_shards.main([
        "--data-root", str(dataset), "--out", str(out), "--short-side", "32", "--splits", "validation",
        "--eval-shards", "1", "--workers", "1", "--no-progress", "--slice-index", "0", "--slice-count", "1",
    ])  # fmt: skip
    assert status == make_shards.EXIT_OK
    return out


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(FAMILY_TINY))
def test_every_family_trains_evaluates_and_predicts_through_the_scripts(family, dataset, shards_32px, tmp_path):
    """One epoch of each family's tiny FFN, evaluated at other frame counts, then predict on a video file."""
    import evaluate
    import train

    arch, trained, untrained = FAMILY_TINY[family]
    run = tmp_path / "run"
    common = ["--crop-size", "32", "--workers", "0", "--threads", "1", "--decode", "cpu", "--device", "cpu"]
    status = train.main([
        "--mode", "ffn", "--frames", *map(str, trained), "--arch", arch, "--shards", str(shards_32px),
        "--output", str(run), "--train-split", "validation", "--val-split", "validation", "--epochs", "1",
        "--batch-size", "7", "--pretrained", "none", "--no-multi-scale", "--no-progress", *common,
    ])  # fmt: skip
    assert status == 0
    frames = sorted({*trained, *untrained})
    report = evaluate.run(evaluate.build_parser().parse_args([
        "--checkpoints", str(run / "last.pt"), "--frames", *map(str, frames), "--shards", str(shards_32px),
        "--output", str(tmp_path / "eval"), "--no-latency", "--batch-size", "7", *common,
    ]))  # fmt: skip
    entry = report["models"]["run"]
    assert entry["trained_frames"] == list(trained) and entry["n"] == 7
    assert set(entry["top1"]) == {str(count) for count in frames} and set(entry["gflops"]) == set(entry["top1"])
    predicted = predict.run(predict.parse_args(["--checkpoint", str(run / "last.pt"), "--video",
                                                str(all_videos(dataset)[0]), "--frames", str(untrained[-1]), *FAST]))
    result = predicted["videos"][0]["results"][str(untrained[-1])]
    assert result["branch"] == max(trained) and len(result["top5"]) == 5
    assert sum(item["prob"] for item in result["top5"]) <= 1.0


def test_a_frame_count_the_model_cannot_run_is_refused_in_one_line(dataset, shards_32px, tmp_path):
    """SlowFast runs at multiples of its alpha (4): train.py, evaluate.py and predict.py say so before any work."""
    import train

    with pytest.raises(SystemExit, match=r"does not run at 6 frames .*use 4 or 8"):
        train.main(["--mode", "ffn", "--frames", "4", "6", "--arch", "slowfast_tiny", "--shards", str(shards_32px),
                    "--output", str(tmp_path / "run"), "--train-split", "validation", "--pretrained", "none"])
    torch.manual_seed(0)
    model = build_model("slowfast_tiny", NUM_CLASSES, trained_frames=(4, 8))
    path = save_like_train(model, tmp_path / "slowfast.pt", "ffn", [4, 8], None)
    with pytest.raises(SystemExit, match=r"slowfast.pt: this model does not run at 6 frames"):
        predict.run(predict.parse_args(["--checkpoint", str(path), "--video", str(all_videos(dataset)[0]),
                                        "--frames", "6", "--crop-size", "32", *FAST]))
