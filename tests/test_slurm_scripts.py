"""scripts/slurm/train.sbatch's decisions without a cluster: the SLURM commands it calls are small recording
stand-ins, everything else (bash, its traps, the other tools) is real. `make slurm-check` runs the scripts on a
real SLURM."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
TRAIN_SCRIPT = REPO_ROOT / "scripts" / "slurm" / "train.sbatch"
JOB_ID = 12345
TOOLS = ("bash", "sh", "tr", "grep", "sed", "head", "date", "hostname", "sleep", "touch", "cat")
NODE_ADDRESS = "10.1.2.3"

SCONTROL = """#!/bin/sh
echo "scontrol $*" >> "$RECORD"
case "$1 $2" in
  "show hostnames") echo node1; echo node2 ;;
  "show node") echo "NodeName=$3 Arch=x86_64"; echo "   NodeAddr=$NODE_ADDRESS NodeHostName=$3 Version=22.05" ;;
esac
"""
# The training step: records its command line, then (STEP_WAITS=1) runs until scancel asks it to stop.
SRUN = """#!/bin/sh
echo "srun $*" >> "$RECORD"
if [ "${STEP_WAITS:-0}" = 1 ]; then
  touch "$STATE/step-started"
  for _ in $(seq 100); do [ -e "$STATE/stop" ] && exit 0; sleep 0.1; done
  exit 9
fi
exit "${STEP_STATUS:-0}"
"""
SCANCEL = """#!/bin/sh
echo "scancel $*" >> "$RECORD"
touch "$STATE/stop"
"""


@pytest.fixture()
def slurm_stand_ins(tmp_path: Path) -> dict[str, str]:
    """A PATH holding only the tools train.sbatch uses, with scontrol / srun / scancel recording stand-ins."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in TOOLS:
        found = shutil.which(tool)
        assert found, f"{tool} is needed by the test"
        (bin_dir / tool).symlink_to(found)
    (bin_dir / "seq").symlink_to(shutil.which("seq"))
    for name, text in (("scontrol", SCONTROL), ("srun", SRUN), ("scancel", SCANCEL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    return {
        "PATH": str(bin_dir), "HOME": str(tmp_path), "RECORD": str(tmp_path / "record"), "STATE": str(tmp_path),
        "NODE_ADDRESS": NODE_ADDRESS, "SLURM_JOB_ID": str(JOB_ID), "SLURM_JOB_NODELIST": "node[1-2]",
        "SLURM_JOB_NUM_NODES": "2", "SLURM_SUBMIT_DIR": str(REPO_ROOT), "SHARDS": str(tmp_path / "shards"),
        "OUTPUT": str(tmp_path / "run"),
    }


def add_tool(environment: dict[str, str], name: str, text: str) -> None:
    """Put one more stand-in on the PATH (e.g. nvidia-smi)."""
    path = Path(environment["PATH"]) / name
    path.write_text(text)
    path.chmod(0o755)


def run_script(environment: dict[str, str], **variables: str) -> subprocess.CompletedProcess[str]:
    """Run train.sbatch as the batch step would; return the finished process."""
    return subprocess.run(["bash", str(TRAIN_SCRIPT)], env={**environment, **variables}, capture_output=True,
                          text=True, timeout=60)


def step_command(environment: dict[str, str]) -> list[str]:
    """The srun command line the script ran."""
    lines = [line for line in Path(environment["RECORD"]).read_text().splitlines() if line.startswith("srun ")]
    assert len(lines) == 1, lines
    return lines[0].split()


def option(command: list[str], name: str) -> str:
    """The value of `--name=value` in a command line."""
    values = [word.split("=", 1)[1] for word in command if word.startswith(f"{name}=")]
    assert len(values) == 1, (name, command)
    return values[0]


def test_without_any_gpu_it_starts_cpu_processes_and_says_so(slurm_stand_ins):
    completed = run_script(slurm_stand_ins)
    assert completed.returncode == 0, completed.stderr
    assert "no GPU on" in completed.stdout and "1 CPU process(es) per node" in completed.stdout
    assert option(step_command(slurm_stand_ins), "--nproc_per_node") == "1"
    Path(slurm_stand_ins["RECORD"]).unlink()
    completed = run_script(slurm_stand_ins, NPROC_PER_NODE="3")
    assert "3 CPU process(es) per node" in completed.stdout
    assert option(step_command(slurm_stand_ins), "--nproc_per_node") == "3"


@pytest.mark.parametrize(("variables", "nvidia_smi", "expected"), [
    ({"GPUS_PER_NODE": "2", "SLURM_GPUS_ON_NODE": "8"}, None, "2"),
    ({"SLURM_GPUS_ON_NODE": "4", "CUDA_VISIBLE_DEVICES": "0,1"}, None, "4"),
    ({"CUDA_VISIBLE_DEVICES": "0,1,2"}, None, "3"),
    ({}, "GPU 0: H100 (UUID: a)\nGPU 1: H100 (UUID: b)", "2"),
    ({}, "FAIL", "1"),  # nvidia-smi present but without a driver
])  # fmt: skip
def test_processes_per_node_follow_the_gpus_the_job_has(slurm_stand_ins, variables, nvidia_smi, expected):
    if nvidia_smi == "FAIL":
        add_tool(slurm_stand_ins, "nvidia-smi", "#!/bin/sh\necho 'NVIDIA-SMI has failed' >&2\nexit 9\n")
    elif nvidia_smi is not None:
        add_tool(slurm_stand_ins, "nvidia-smi", f"#!/bin/sh\nprintf '{nvidia_smi}\\n'\n")
    completed = run_script(slurm_stand_ins, **variables)
    assert completed.returncode == 0, completed.stderr
    assert option(step_command(slurm_stand_ins), "--nproc_per_node") == expected
    assert ("no GPU on" in completed.stdout) == (expected == "1")


def test_rendezvous_at_the_first_nodes_address_on_a_port_of_the_job(slurm_stand_ins):
    completed = run_script(slurm_stand_ins, SLURM_CPUS_PER_TASK="6")
    assert completed.returncode == 0, completed.stderr
    command = step_command(slurm_stand_ins)
    assert option(command, "--rdzv_endpoint") == f"{NODE_ADDRESS}:{20000 + JOB_ID % 10000}"
    assert option(command, "--rdzv_id") == str(JOB_ID)
    assert option(command, "--cpus-per-task") == "6"  # srun does not inherit the job's --cpus-per-task
    assert "scontrol show node node1" in Path(slurm_stand_ins["RECORD"]).read_text()


def test_master_address_and_port_can_be_set(slurm_stand_ins):
    completed = run_script(slurm_stand_ins, MASTER_ADDR="head", MASTER_PORT="31000")
    assert completed.returncode == 0, completed.stderr
    assert option(step_command(slurm_stand_ins), "--rdzv_endpoint") == "head:31000"


def test_resumes_when_the_run_has_a_checkpoint(slurm_stand_ins):
    run_script(slurm_stand_ins)
    assert "--resume" not in step_command(slurm_stand_ins)
    Path(slurm_stand_ins["OUTPUT"]).mkdir()
    (Path(slurm_stand_ins["OUTPUT"]) / "last.pt").write_bytes(b"")
    Path(slurm_stand_ins["RECORD"]).unlink()
    run_script(slurm_stand_ins)
    assert "--resume" in step_command(slurm_stand_ins)


def test_a_failed_step_ends_the_job_with_its_status_and_no_requeue(slurm_stand_ins):
    completed = run_script(slurm_stand_ins, STEP_STATUS="3")
    assert completed.returncode == 3
    assert "requeue" not in Path(slurm_stand_ins["RECORD"]).read_text()


@pytest.mark.parametrize(("signal_number", "requeued"), [(signal.SIGUSR1, True), (signal.SIGTERM, False)])
def test_a_stop_signal_reaches_the_step_and_usr1_requeues_the_job(slurm_stand_ins, signal_number, requeued):
    process = subprocess.Popen(["bash", str(TRAIN_SCRIPT)], env={**slurm_stand_ins, "STEP_WAITS": "1"},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    started = Path(slurm_stand_ins["STATE"]) / "step-started"
    deadline = time.monotonic() + 30
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert started.exists(), "the step did not start"
    os.kill(process.pid, signal_number)
    stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    name = signal.Signals(signal_number).name.removeprefix("SIG")
    record = Path(slurm_stand_ins["RECORD"]).read_text().splitlines()
    assert f"scancel --signal={name} {JOB_ID}" in record
    assert (f"scontrol requeue {JOB_ID}" in record) == requeued
    assert f"got SIG{name}" in stdout
