"""`make slurm-check`: the SLURM scripts of scripts/slurm/, unmodified, end to end on a real one-host SLURM.

Run as root on a Debian / Ubuntu machine (the packages slurmctld, slurmd, slurm-client and munge are installed
with apt-get when missing; without root or apt-get the check prints one line saying what is missing and
"skipped", and exits 0). ``scripts/slurm/local_cluster.sh`` starts a controller and two emulated nodes, each
with this machine's real CPUs and memory. Then, from the repository root as a user would:

1. data: a small synthetic SSv2-format set (4 classes, VP9 .webm, preprocess.synthetic);
2. shards: ``shards.sbatch`` with small-node resources (CPUS_PER_TASK=1 MEM=1G TIME=00:10:00, where its
   #SBATCH lines ask for 16 CPUs and 32G): two array tasks and the finalize job, logs named by job;
3. verify: ``preprocess.verify_shards`` on a node (srun);
4. training, two jobs at once on the same host (each its own rendezvous port): the reference, 1 node x 2 CPU
   processes, and the interrupted run, 2 nodes x 1 process with ``--stop-after-epochs 1``; both override the
   #SBATCH GPUs and CPUs on the sbatch command line and find no GPU (the CPU fallback);
5. resubmit: the interrupted run resumes; SIGUSR1 (what SLURM sends before a time limit) reaches it mid-epoch,
   it writes a mid-epoch checkpoint and requeues itself, and its second attempt (appended to the same log)
   finishes the run;
6. compare: the final checkpoints of both runs, bitwise (model, optimiser, schedule, every epoch's loss).

The daemons are stopped in every case. Timings and job ids go to ``<work>/slurm_check.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))  # run as `python scripts/slurm/check.py`: the repository's packages import
# torch is imported where checkpoints are read, so that the check can say "skipped" without it.

from common.atomic import write_json_atomic  # noqa: E402

SCRIPTS = REPO_ROOT / "scripts" / "slurm"
CLUSTER_SCRIPT = SCRIPTS / "local_cluster.sh"
EXIT_UNAVAILABLE = 3  # local_cluster.sh prepare: SLURM cannot be had here
FIRST_CLUSTER_PORT = 16817
NODES = 2
CLASSES = 4
VIDEOS_PER_CLASS = 32  # 96 training videos: 24 steps per epoch at 2 ranks x 2 videos
EPOCHS = 3
BATCH_SIZE = 2
MASTER_PORT_BASE, MASTER_PORT_SPAN = 20000, 10000  # train.sbatch's port rule
ENDED_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL",
                "DEADLINE", "PREEMPTED"}
JOB_TIMEOUT_S = 600
TRAIN_FLAGS = ("--arch tiny --pretrained none --crop-size 32 --test-resize 32 --no-multi-scale --device cpu "
               f"--epochs {EPOCHS} --batch-size {BATCH_SIZE} --threads 1 --no-progress")
SMALL_NODE = ["--gpus-per-node=0", "--cpus-per-task=1", "--mem=2G", "--time=00:20:00"]
STOP_LINE = re.compile(r"stopped by SIGUSR1 at epoch (\d+) step (\d+)/(\d+)")


class CheckFailed(RuntimeError):
    """A step of the check did not do what it should."""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=REPO_ROOT / "runs" / "slurm-check",
                        help="folder for the data, shards, runs, job logs and slurm_check.json (emptied first)")
    parser.add_argument("--python", default=sys.executable, help="the interpreter the jobs run")
    return parser.parse_args(argv)


def say(message: str) -> None:
    """One line of the check's report."""
    print(f"slurm-check: {message}", flush=True)


def run(command: Sequence[str], env: dict[str, str], check: bool = True, **options: Any) -> str:
    """Run a command; return its stdout (raise CheckFailed with its output when it fails and `check`)."""
    completed = subprocess.run(list(command), env=env, capture_output=True, text=True, **options)
    if check and completed.returncode != 0:
        raise CheckFailed(f"{' '.join(command)} exited {completed.returncode}: "
                          f"{(completed.stdout + completed.stderr).strip()[-2000:]}")
    return completed.stdout


# The cluster


def free_port_block(first: int, count: int) -> int:
    """Return the first port of `count` consecutive free TCP ports, searching upwards from `first`."""
    for start in range(first, first + 1000, 10):
        try:
            for port in range(start, start + count):
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                    probe.bind(("127.0.0.1", port))
            return start
        except OSError:
            continue
    raise CheckFailed(f"no {count} free consecutive ports above {first}")


def prepare_cluster() -> str | None:
    """Make sure SLURM is installed (installing it when possible); return why it cannot be, else None."""
    completed = subprocess.run(["bash", str(CLUSTER_SCRIPT), "prepare"], capture_output=True, text=True)
    lines = (completed.stdout + completed.stderr).strip().splitlines()
    if completed.returncode == EXIT_UNAVAILABLE:
        return lines[-1] if lines else "SLURM is not available"
    if completed.returncode != 0:
        raise CheckFailed(f"local_cluster.sh prepare exited {completed.returncode}: {' '.join(lines[-5:])}")
    for line in lines:
        print(line, flush=True)
    return None


@contextmanager
def local_cluster(logs: Path) -> Iterator[dict[str, str]]:
    """Start the one-host cluster; yield the environment that reaches it; stop it whatever happens.

    The daemons' logs are copied into `logs` before the cluster's folder is removed.
    """
    cluster_dir = tempfile.mkdtemp(prefix="ffn-slurm-")  # short: the munge socket path must fit in 108 bytes
    env = dict(os.environ, CLUSTER_DIR=cluster_dir, NODES=str(NODES),
               PORT=str(free_port_block(FIRST_CLUSTER_PORT, NODES + 1)))
    try:
        print(run(["bash", str(CLUSTER_SCRIPT), "start"], env).rstrip(), flush=True)
        env["SLURM_CONF"] = f"{cluster_dir}/etc/slurm.conf"
        yield env
    finally:
        completed = subprocess.run(["bash", str(CLUSTER_SCRIPT), "stop"], env=env, capture_output=True, text=True)
        print((completed.stdout + completed.stderr).rstrip().replace(f"{cluster_dir}/log", str(logs)), flush=True)
        if Path(cluster_dir, "log").is_dir():
            shutil.copytree(Path(cluster_dir, "log"), logs, dirs_exist_ok=True)
        shutil.rmtree(cluster_dir, ignore_errors=True)


# Jobs


def job_records(job_id: str, env: dict[str, str]) -> list[dict[str, str]]:
    """The fields of `scontrol show job -o` for a job (one record per array task)."""
    output = run(["scontrol", "show", "job", "-o", job_id], env, check=False)
    return [dict(re.findall(r"(\w+)=(\S*)", line)) for line in output.splitlines() if line.strip()]


def job_states(job_id: str, env: dict[str, str]) -> list[str]:
    """The state of each of a job's records."""
    return [record.get("JobState", "UNKNOWN") for record in job_records(job_id, env)]


def wait_until_ended(job_ids: Sequence[str], env: dict[str, str], watch: dict[str, set[str]] | None = None,
                     timeout_s: float = JOB_TIMEOUT_S) -> None:
    """Wait until every job has ended; raise CheckFailed naming the job unless all of them COMPLETED.

    `watch` collects, per poll, the set of these jobs that were running together (to show they overlapped).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        states = {job: job_states(job, env) for job in job_ids}
        if watch is not None:
            running = frozenset(job for job, values in states.items() if "RUNNING" in values)
            watch.setdefault("together", set()).add(running)
        if all(values and all(state in ENDED_STATES for state in values) for values in states.values()):
            break
        if time.monotonic() > deadline:
            raise CheckFailed(f"jobs {states} did not end within {timeout_s:.0f} s: "
                              f"{[job_records(job, env) for job in job_ids]}")
        time.sleep(1)
    failed = {job: values for job, values in states.items() if any(state != "COMPLETED" for state in values)}
    if failed:
        raise CheckFailed(f"jobs did not complete: {failed}")


def submit(command: Sequence[str], env: dict[str, str]) -> str:
    """Submit a batch job from the repository root (as the scripts' docs say); return its id."""
    return run(command, env, cwd=REPO_ROOT).strip().split(";")[0]


def wait_for_line(path: Path, pattern: str, job_id: str, env: dict[str, str], timeout_s: float = 300) -> str:
    """Wait until a line of a job's log matches `pattern`; return it."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.is_file():
            for line in path.read_text(errors="replace").splitlines():
                if re.search(pattern, line):
                    return line
        states = job_states(job_id, env)
        if states and all(state in ENDED_STATES for state in states):
            break
        time.sleep(0.2)
    log = path.read_text(errors="replace")[-3000:] if path.is_file() else "(no log)"
    raise CheckFailed(f"job {job_id}: no line matching {pattern!r} in {path.name}:\n{log}")


# The steps


def make_data(work: Path, python: str, env: dict[str, str]) -> Path:
    """A small synthetic SSv2-format set; return its root."""
    root = work / "data"
    run([python, "-m", "preprocess.synthetic", "--root", str(root), "--videos-per-class", str(VIDEOS_PER_CLASS),
         "--classes", str(CLASSES), "--workers", "2"], env, cwd=REPO_ROOT)
    return root


def make_shards(data: Path, work: Path, python: str, env: dict[str, str]) -> tuple[Path, dict[str, Any]]:
    """shards.sbatch with small-node resources: the array and the finalize job; return the shards and a record."""
    shards = work / "shards"
    submit_env = dict(env, DATA_ROOT=str(data), SHARDS=str(shards), PYTHON=python, SLICES="2",
                      CPUS_PER_TASK="1", MEM="1G", TIME="00:10:00",
                      SHARD_ARGS="--short-side 0 --train-shards 4 --eval-shards 2")
    output = run(["bash", str(SCRIPTS / "shards.sbatch")], submit_env, cwd=REPO_ROOT)
    found = re.search(r"submitted slices (\d+) \(2 tasks\) and finalize (\d+)", output)
    if not found:
        raise CheckFailed(f"shards.sbatch printed no job ids: {output!r}")
    array_job, finalize_job = found.groups()
    wait_until_ended([array_job, finalize_job], env, timeout_s=300)
    logs = [f"slurm-ssv2-shards-{array_job}_0.out", f"slurm-ssv2-shards-{array_job}_1.out",
            f"slurm-ssv2-shards-finalize-{finalize_job}.out"]
    missing = [name for name in logs if not (REPO_ROOT / name).is_file()]
    if missing:
        raise CheckFailed(f"shard job logs missing: {missing}")
    manifests = sorted(path.name for path in shards.glob("*.manifest.json"))
    if manifests != ["test.manifest.json", "train.manifest.json", "validation.manifest.json"]:
        raise CheckFailed(f"finalize wrote {manifests}")
    return shards, {"array_job": array_job, "finalize_job": finalize_job, "logs": logs}


def verify_shards(shards: Path, python: str, env: dict[str, str]) -> None:
    """preprocess.verify_shards on a node of the cluster."""
    run(["srun", "--nodes=1", "--cpus-per-task=1", "--mem=1G", "--time=00:05:00", python, "-m",
         "preprocess.verify_shards", "--shards", str(shards)], env, cwd=REPO_ROOT)


def training_env(env: dict[str, str], shards: Path, output: Path, python: str, extra: str = "",
                 processes_per_node: int = 1) -> dict[str, str]:
    """The variables of a train.sbatch submission (CPU processes; GPUs, if any, are left out)."""
    variables = dict(env, SHARDS=str(shards), OUTPUT=str(output), PYTHON=python, WORKERS="1",
                     EXTRA=f"{TRAIN_FLAGS} {extra}".strip(), NPROC_PER_NODE=str(processes_per_node))
    if host_has_gpus():
        variables["GPUS_PER_NODE"] = str(processes_per_node)
    return variables


def host_has_gpus() -> bool:
    """True when nvidia-smi lists a GPU here (train.sbatch would then start one process per GPU)."""
    if shutil.which("nvidia-smi") is None:
        return False
    completed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
    return completed.returncode == 0 and "GPU" in completed.stdout


def train_log(job_id: str) -> Path:
    """train.sbatch's log of a job (its #SBATCH --output, in the submit directory)."""
    return REPO_ROOT / f"slurm-ffn-train-{job_id}.out"


def check_rendezvous(job_id: str) -> int:
    """Check the job's rendezvous port follows its id; return the port."""
    line = wait_for_line_in_file(train_log(job_id), r"rendezvous \S+:\d+")
    port = int(re.search(r"rendezvous \S+:(\d+)", line).group(1))
    expected = MASTER_PORT_BASE + int(job_id) % MASTER_PORT_SPAN
    if port != expected:
        raise CheckFailed(f"job {job_id} used rendezvous port {port}, not {expected} (from its id)")
    return port


def wait_for_line_in_file(path: Path, pattern: str) -> str:
    """The first line of a finished job's log matching `pattern` (CheckFailed when none does)."""
    for line in path.read_text(errors="replace").splitlines():
        if re.search(pattern, line):
            return line
    raise CheckFailed(f"{path.name}: no line matching {pattern!r}")


def train_concurrently(shards: Path, work: Path, python: str, env: dict[str, str]) -> dict[str, Any]:
    """The reference (1 node x 2 processes) and the first part of the interrupted run (2 nodes x 1), at once."""
    script = str(SCRIPTS / "train.sbatch")
    reference = submit(["sbatch", "--parsable", "--nodes=1", *SMALL_NODE, script],
                       training_env(env, shards, work / "reference", python, processes_per_node=2))
    first_part = submit(["sbatch", "--parsable", "--nodes=2", *SMALL_NODE, script],
                        training_env(env, shards, work / "interrupted", python, extra="--stop-after-epochs 1"))
    watch: dict[str, set[frozenset[str]]] = {}
    wait_until_ended([reference, first_part], env, watch=watch)
    overlapped = frozenset({reference, first_part}) in watch["together"]
    ports = {job: check_rendezvous(job) for job in (reference, first_part)}
    if ports[reference] == ports[first_part]:
        raise CheckFailed(f"both jobs used rendezvous port {ports[reference]}")
    if not host_has_gpus():
        for job in (reference, first_part):
            wait_for_line_in_file(train_log(job), r"no GPU on .*CPU process")
    import torch

    epochs = torch.load(work / "interrupted" / "last.pt", map_location="cpu", weights_only=True)["epoch"]
    if epochs != 1:
        raise CheckFailed(f"--stop-after-epochs 1 left a checkpoint after {epochs} epochs")
    return {"reference_job": reference, "first_part_job": first_part, "ran_together": overlapped, "ports": ports}


def resubmit_and_requeue(shards: Path, work: Path, python: str, env: dict[str, str]) -> dict[str, Any]:
    """Resubmit the interrupted run; send SIGUSR1 mid-epoch; wait for the requeued attempt to finish the run."""
    job = submit(["sbatch", "--parsable", "--nodes=2", *SMALL_NODE, str(SCRIPTS / "train.sbatch")],
                 training_env(env, shards, work / "interrupted", python))
    log = train_log(job)
    wait_for_line(log, r"resumed from .* after epoch 1", job, env)
    run(["scancel", "--batch", "--signal=USR1", job], env)
    signalled = time.monotonic()
    wait_until_ended([job], env)
    text = log.read_text(errors="replace")
    stop = STOP_LINE.search(text)
    if stop is None:
        raise CheckFailed(f"job {job}: no 'stopped by SIGUSR1' line in {log.name}:\n{text[-3000:]}")
    epoch, step, steps = (int(value) for value in stop.groups())
    if not 0 < step < steps:
        raise CheckFailed(f"job {job} stopped at step {step}/{steps}: not inside an epoch")
    restarts = int(job_records(job, env)[0].get("Restarts", "0"))
    attempts = re.findall(r"train\.sbatch: job \d+ attempt (\d+)", text)
    if restarts != 1 or attempts != ["1", "2"]:
        raise CheckFailed(f"job {job}: {restarts} restarts, attempts logged {attempts} (expected 1 and [1, 2])")
    if not re.search(rf"resumed from .* at epoch {epoch} step {step}/{steps}", text):
        raise CheckFailed(f"job {job}: the second attempt did not resume at epoch {epoch} step {step}")
    return {"job": job, "stopped_at": {"epoch": epoch, "step": step, "steps_per_epoch": steps},
            "seconds_from_signal_to_end": round(time.monotonic() - signalled, 1)}


def compare_checkpoints(first: Path, second: Path) -> dict[str, Any]:
    """Compare two final checkpoints bitwise; return what was compared (CheckFailed on any difference)."""
    import torch

    a = torch.load(first, map_location="cpu", weights_only=True)
    b = torch.load(second, map_location="cpu", weights_only=True)
    differences = [name for name in a["model"] if not torch.equal(a["model"][name], b["model"][name])]
    flat_a, flat_b = flatten_tensors(a["optimizer"]), flatten_tensors(b["optimizer"])
    differences += [f"optimizer.{key}" for key in flat_a
                    if key not in flat_b or not torch.equal(flat_a[key], flat_b[key])]
    if a["optimizer"]["param_groups"] != b["optimizer"]["param_groups"]:
        differences.append("optimizer.param_groups")
    if a["scheduler"] != b["scheduler"]:
        differences.append("scheduler")
    losses = [[record["train_loss"] for record in payload["metrics"]["history"]] for payload in (a, b)]
    if losses[0] != losses[1]:
        differences.append(f"train losses {losses[0]} != {losses[1]}")
    if a["epoch"] != b["epoch"] or a["epoch"] != EPOCHS:
        differences.append(f"epochs {a['epoch']} and {b['epoch']}")
    if differences:
        raise CheckFailed(f"{first} and {second} differ: {differences[:8]}")
    return {"model_tensors": len(a["model"]), "optimizer_tensors": len(flat_a), "train_losses": losses[0]}


def flatten_tensors(state: Any, prefix: str = "") -> dict[str, Any]:
    """Every tensor of a nested state (dicts and lists), keyed by its path."""
    if hasattr(state, "dtype") and hasattr(state, "shape"):  # a tensor
        return {prefix: state}
    items = state.items() if isinstance(state, dict) else enumerate(state) if isinstance(state, list) else ()
    flat: dict[str, Any] = {}
    for key, value in items:
        flat.update(flatten_tensors(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def collect_logs(work: Path, started: float) -> list[str]:
    """Move the job logs this check wrote in the repository root into <work>/logs; return their names."""
    destination = work / "logs"
    destination.mkdir(parents=True, exist_ok=True)
    moved = []
    for path in sorted(REPO_ROOT.glob("slurm-*.out")):
        if path.stat().st_mtime >= started - 1:
            shutil.move(str(path), destination / path.name)
            moved.append(path.name)
    return moved


def run_check(work: Path, python: str, env: dict[str, str], record: dict[str, Any]) -> None:
    """Every step in order, each timed into `record`."""
    steps = record["seconds"]

    def timed(name: str, start: float) -> None:
        steps[name] = round(time.monotonic() - start, 1)
        say(f"{name} ok ({steps[name]} s)")

    start = time.monotonic()
    data = make_data(work, python, env)
    timed("data", start)
    start = time.monotonic()
    shards, record["shards"] = make_shards(data, work, python, env)
    timed("shards", start)
    start = time.monotonic()
    verify_shards(shards, python, env)
    timed("verify", start)
    start = time.monotonic()
    record["training"] = train_concurrently(shards, work, python, env)
    timed("training", start)
    start = time.monotonic()
    record["requeue"] = resubmit_and_requeue(shards, work, python, env)
    timed("resubmit_and_requeue", start)
    record["compare"] = compare_checkpoints(work / "reference" / "last.pt", work / "interrupted" / "last.pt")
    say(f"final checkpoints equal bitwise ({record['compare']['model_tensors']} model tensors, "
        f"{record['compare']['optimizer_tensors']} optimiser tensors, losses {record['compare']['train_losses']})")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: 0 when every step passed (or SLURM cannot be had here: skipped), 1 otherwise."""
    args = parse_args(argv)
    began = time.monotonic()
    started_at = time.time()
    reason = prepare_cluster()
    if reason is not None:
        say(f"skipped: {reason}")
        return 0
    work = args.work.resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    record: dict[str, Any] = {"seconds": {}, "nodes": NODES, "cores": os.cpu_count()}
    status = 0
    try:
        with local_cluster(work / "logs" / "cluster") as env:
            env["PYTHONUNBUFFERED"] = "1"
            record["seconds"]["cluster_start"] = round(time.monotonic() - began, 1)
            run_check(work, args.python, env, record)
    except CheckFailed as error:
        say(f"FAILED: {error}")
        status = 1
    finally:
        record["logs"] = collect_logs(work, started_at)
        record["seconds"]["total"] = round(time.monotonic() - began, 1)
        record["passed"] = status == 0
        write_json_atomic(work / "slurm_check.json", record)
    say(f"{'passed' if status == 0 else 'failed'} in {record['seconds']['total']} s; logs and runs in {work}")
    return status


if __name__ == "__main__":
    sys.exit(main())
