"""scripts/demo.py's training runner: side-by-side runs, their logs, a failure, and the reuse record."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from script_helpers import load_script


demo = load_script("demo")


def printing_training(tmp_path: Path, name: str, code: str) -> "demo.Training":
    """Return a training whose command runs a line of Python in its own folder."""
    output = tmp_path / name
    output.mkdir()
    return demo.Training(f"train {name} (seed 0)", [sys.executable, "-c", code], output)


@pytest.mark.parametrize("count", [1, 3])
def test_side_by_side_runs_write_one_log_each(tmp_path, count):
    """With jobs=2 every run's output lands in its own train.log and the wall time is recorded once."""
    trainings = [printing_training(tmp_path, f"m{index}", f"print('epoch 1/1 of m{index}')") for index in range(count)]
    timer = demo.Timer()
    demo.run_trainings(trainings, 2, timer)
    for index, training in enumerate(trainings):
        if count > 1:
            assert (training.output / demo.TRAIN_LOG).read_text().strip() == f"epoch 1/1 of m{index}"
        assert training.label in timer.seconds
    assert (f"training ({count} runs, 2 at a time)" in timer.seconds) == (count > 1)


def test_sequential_runs_stream_their_output(tmp_path, capfd):
    """With jobs=1 the runs go one after another and print to the demo's own output (no log files)."""
    trainings = [printing_training(tmp_path, f"m{index}", f"print('run {index}')") for index in range(2)]
    timer = demo.Timer()
    demo.run_trainings(trainings, 1, timer)
    printed = capfd.readouterr().out
    assert printed.index("run 0") < printed.index("run 1")
    assert not any((training.output / demo.TRAIN_LOG).exists() for training in trainings)


def test_a_failed_run_stops_the_others_and_names_its_log(tmp_path):
    """A failing run stops the demo with one line naming its log; the run beside it is terminated."""
    pid_file = tmp_path / "slow.pid"
    slow = printing_training(tmp_path, "slow",
                             f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(600)")
    failing = printing_training(tmp_path, "bad", f"import os, sys, time\nwhile not os.path.exists({str(pid_file)!r}): "
                                                 "time.sleep(0.05)\nprint('broken shard'); sys.exit(3)")
    timer = demo.Timer()
    with pytest.raises(SystemExit) as stop:
        demo.run_trainings([slow, failing], 2, timer)
    message = str(stop.value)
    assert "train bad (seed 0)" in message and "exit 3" in message and str(failing.output / demo.TRAIN_LOG) in message
    assert "train slow (seed 0)" not in timer.seconds
    with pytest.raises(ProcessLookupError):  # terminated and reaped
        os.kill(int(pid_file.read_text()), 0)


def test_the_run_record_holds_the_preset(tmp_path, monkeypatch):
    """A finished run is reused only while its command and the demo preset are unchanged."""
    output = tmp_path / "run"
    output.mkdir()
    command = [sys.executable, "train.py", "--preset", "demo", "--output", str(output)]
    (output / demo.RUN_RECORD).write_text(json.dumps(demo.run_record(command)))
    checkpoint = {"epoch": 2, "metrics": {"settings": {"epochs": 2}}}
    monkeypatch.setattr(demo, "load_checkpoint", lambda path: checkpoint)
    (output / "last.pt").write_bytes(b"")
    assert demo.finished_run(output, command) == "done"
    checkpoint["epoch"] = 1
    assert demo.finished_run(output, command) == "partial"
    monkeypatch.setitem(demo.PRESETS, "demo", {**demo.PRESETS["demo"], "epochs": 99})
    assert demo.finished_run(output, command) == "new"
    assert demo.finished_run(output, command + ["--lam", "0"]) == "new"


def test_study_schedules():
    """Study models train STUDY_EPOCHS unless the command line overrides every schedule (smoke runs)."""
    assert demo.PRESETS["demo"]["epochs"] == 40 and demo.STUDY_EPOCHS == 20
    args = demo.build_parser().parse_args(["--runs", "x"])
    model = demo.STUDIES["mechanism"]["ffn_random"]
    command = demo.train_command(model.train_args, Path("s"), Path("o"), 0, 12, args, None, model.epochs)
    assert command[-2:] == ["--epochs", "20"] and "--pretrained" in command and "none" in command
    main = demo.train_command(demo.MODELS["ffn"], Path("s"), Path("o"), 0, 12, args, None, None)
    assert "--epochs" not in main
    smoke = demo.build_parser().parse_args(["--runs", "x", "--epochs", "1"])
    assert demo.train_command(model.train_args, Path("s"), Path("o"), 0, 12, smoke, None, model.epochs)[-1] == "1"
    assert set(demo.STUDIES["mechanism"]) >= {"tsm16_e20", "ffn_e20", "tsm4_e20", "tsm8_e20", "ffn_lam0",
                                              "ffn_lam0.5", "ffn_random", "tsm16_random"}


def test_a_backbone_other_than_the_committed_one_is_announced(capsys: pytest.CaptureFixture[str]) -> None:
    committed = demo.committed_backbone_sha256()
    assert committed is not None and len(committed) == 64
    demo.report_backbone_match({"sha256": committed})
    assert capsys.readouterr().out == ""
    demo.report_backbone_match({"sha256": "0" * 64})
    assert "numbers will differ from docs/results within the measured spread" in capsys.readouterr().out


def test_the_machine_record_names_the_kernels_instruction_set(monkeypatch: pytest.MonkeyPatch) -> None:
    from common.machine import machine_record

    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    record = machine_record()
    assert record["cpu_capability"] and record["cpu_model"] and record["kernel_environment"] == {
        "ONEDNN_MAX_CPU_ISA": "AVX2"}
