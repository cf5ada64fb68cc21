#!/usr/bin/env bash
# A SLURM cluster on this one machine, for trying the scripts of this folder end to end: a controller
# (slurmctld) and NODES emulated compute nodes (slurmd's multiple-slurmd mode, all on 127.0.0.1), each
# configured with this machine's real CPUs and memory as `slurmd -C` reports them, and an authentication
# daemon (munged) with its own key and socket. Everything lives under CLUSTER_DIR: no file under /etc is
# changed and a SLURM or munge already running on the machine is left alone.
#
#   scripts/slurm/local_cluster.sh prepare   # the packages (apt-get install of the missing ones)
#   scripts/slurm/local_cluster.sh start     # then: source "$CLUSTER_DIR/env" (exports SLURM_CONF)
#   scripts/slurm/local_cluster.sh status
#   scripts/slurm/local_cluster.sh stop      # cancels the cluster's jobs, stops the daemons it started
#
# Needs root (slurmd starts jobs as their user) and Debian / Ubuntu's slurmctld, slurmd, slurm-client and munge
# packages (SLURM 22.05 on Debian 12); no systemd, no cgroups (proctrack/linuxproc, task/none). `prepare` exits 3
# with one line naming what is missing when it cannot install them.
# Variables: CLUSTER_DIR (default /tmp/ffn-slurm-cluster), NODES (2), PORT (default 16817; the controller
# listens there, node k on PORT + k), CRED_EXPIRE (20: the seconds a requeued job waits before it starts again;
# SLURM's default is 120).
set -euo pipefail

CLUSTER_DIR=${CLUSTER_DIR:-/tmp/ffn-slurm-cluster}
NODES=${NODES:-2}
PORT=${PORT:-16817}
CRED_EXPIRE=${CRED_EXPIRE:-20}
NODE_PREFIX=node
PACKAGES=(slurmctld slurmd slurm-client munge)
DAEMONS=(slurmctld slurmd munged mungekey)
EXIT_UNAVAILABLE=3

CONF=$CLUSTER_DIR/etc/slurm.conf
MUNGE_DIR=$CLUSTER_DIR/munge
RUN_DIR=$CLUSTER_DIR/run
LOG_DIR=$CLUSTER_DIR/log
export SLURM_CONF=$CONF

node_names() {
    local k
    for ((k = 1; k <= NODES; k++)); do echo "$NODE_PREFIX$k"; done
}

missing_programs() {
    local program
    for program in "${DAEMONS[@]}" sbatch scontrol; do
        command -v "$program" >/dev/null 2>&1 || PATH=$PATH:/usr/sbin:/sbin command -v "$program" >/dev/null 2>&1 \
            || echo "$program"
    done
}

prepare() {
    if [[ $(id -u) != 0 ]]; then
        echo "local_cluster.sh: needs root (slurmd starts jobs as their user); run as root"
        exit "$EXIT_UNAVAILABLE"
    fi
    [[ -z $(missing_programs) ]] && return 0
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "local_cluster.sh: $(missing_programs | tr '\n' ' ')not found and no apt-get to install" \
            "${PACKAGES[*]}; install SLURM and munge"
        exit "$EXIT_UNAVAILABLE"
    fi
    echo "local_cluster.sh: installing ${PACKAGES[*]} with apt-get"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${PACKAGES[@]}" \
        >"$CLUSTER_DIR.apt.log" 2>&1; then
        apt-get update -q >>"$CLUSTER_DIR.apt.log" 2>&1 || true
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${PACKAGES[@]}" \
            >>"$CLUSTER_DIR.apt.log" 2>&1 || {
            echo "local_cluster.sh: apt-get install ${PACKAGES[*]} failed (see $CLUSTER_DIR.apt.log)"
            exit "$EXIT_UNAVAILABLE"
        }
    fi
    if [[ -n $(missing_programs) ]]; then
        echo "local_cluster.sh: $(missing_programs | tr '\n' ' ')still missing after installing ${PACKAGES[*]}"
        exit "$EXIT_UNAVAILABLE"
    fi
}

# The node's real hardware as slurmd detects it: "CPUs=2 Boards=1 ... RealMemory=24105".
node_hardware() {
    local detected
    detected=$(slurmd -C)
    detected=${detected%%$'\n'*}
    tr ' ' '\n' <<<"$detected" | grep -E '^(CPUs|Boards|SocketsPerBoard|CoresPerSocket|ThreadsPerCore|RealMemory)=' \
        | paste -s -d ' '
}

write_config() {
    local hardware host k
    hardware=$(node_hardware)
    host=$(hostname)
    mkdir -p "$CLUSTER_DIR/etc"
    {
        echo "# Written by scripts/slurm/local_cluster.sh: one host, $NODES emulated nodes."
        echo "ClusterName=ffnlocal"
        echo "SlurmctldHost=$host(127.0.0.1)"
        echo "SlurmctldPort=$PORT"
        echo "SlurmUser=root"
        echo "AuthType=auth/munge"
        echo "CredType=cred/munge"
        # cred_expire is also how long a requeued job waits before it may start again (SLURM's default: 120 s).
        echo "AuthInfo=socket=$MUNGE_DIR/munge.socket,cred_expire=$CRED_EXPIRE"
        echo "MpiDefault=none"
        echo "ProctrackType=proctrack/linuxproc"
        echo "TaskPlugin=task/none"
        echo "JobAcctGatherType=jobacct_gather/none"
        echo "AccountingStorageType=accounting_storage/none"
        # The main scheduler also runs every 5 s (SLURM's default: 60 s), so a requeued job starts soon after
        # its wait.
        echo "SchedulerParameters=sched_interval=5"
        echo "SelectType=select/cons_tres"
        echo "SelectTypeParameters=CR_Core"
        echo "ReturnToService=2"
        echo "StateSaveLocation=$CLUSTER_DIR/state"
        echo "SlurmdSpoolDir=$CLUSTER_DIR/spool/%n"
        echo "SlurmctldPidFile=$RUN_DIR/slurmctld.pid"
        echo "SlurmdPidFile=$RUN_DIR/slurmd-%n.pid"
        echo "SlurmctldLogFile=$LOG_DIR/slurmctld.log"
        echo "SlurmdLogFile=$LOG_DIR/slurmd-%n.log"
        k=0
        for name in $(node_names); do
            k=$((k + 1))
            echo "NodeName=$name NodeHostname=$host NodeAddr=127.0.0.1 Port=$((PORT + k)) $hardware"
        done
        echo "PartitionName=local Nodes=ALL Default=YES MaxTime=INFINITE State=UP"
    } >"$CONF"
}

start_munge() {
    mkdir -p "$MUNGE_DIR"
    chmod 700 "$MUNGE_DIR"
    [[ -s $MUNGE_DIR/munge.key ]] || mungekey --create --keyfile="$MUNGE_DIR/munge.key"
    chmod 400 "$MUNGE_DIR/munge.key"
    # --force: munged runs as root here (the key and socket are private to this cluster).
    munged --force --key-file="$MUNGE_DIR/munge.key" --socket="$MUNGE_DIR/munge.socket" \
        --pid-file="$RUN_DIR/munged.pid" --log-file="$LOG_DIR/munged.log" --seed-file="$MUNGE_DIR/munged.seed"
    munge --socket="$MUNGE_DIR/munge.socket" -n | unmunge --socket="$MUNGE_DIR/munge.socket" \
        | grep -q 'STATUS: *Success'
}

wait_for_idle_nodes() {
    local idle
    for _ in $(seq 60); do
        idle=$(sinfo -h -N -t idle -o %N 2>/dev/null | sort -u | wc -l)
        [[ $idle == "$NODES" ]] && return 0
        sleep 1
    done
    echo "local_cluster.sh: the nodes did not become idle in 60 s:"
    sinfo -N -o '%N %T %E' || true
    tail -n 20 "$LOG_DIR"/slurm*.log || true
    return 1
}

start() {
    prepare
    if [[ -f $RUN_DIR/slurmctld.pid ]] && kill -0 "$(cat "$RUN_DIR/slurmctld.pid")" 2>/dev/null; then
        echo "local_cluster.sh: already running (SLURM_CONF=$CONF); stop it first"
        exit 1
    fi
    rm -rf "$CLUSTER_DIR"
    mkdir -p "$RUN_DIR" "$LOG_DIR" "$CLUSTER_DIR/state"
    write_config
    start_munge
    slurmctld -c
    for name in $(node_names); do
        mkdir -p "$CLUSTER_DIR/spool/$name"
        slurmd -N "$name"
    done
    wait_for_idle_nodes
    echo "export SLURM_CONF=$CONF" >"$CLUSTER_DIR/env"
    echo "local_cluster.sh: $NODES nodes up ($(node_hardware)); source $CLUSTER_DIR/env to use them"
    sinfo -N -o '%N %c %m %T'
}

stop_pid_file() {
    local file=$1 pid
    [[ -f $file ]] || return 0
    pid=$(cat "$file")
    if kill "$pid" 2>/dev/null; then
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
    rm -f "$file"
}

stop() {
    if [[ -f $RUN_DIR/slurmctld.pid ]] && kill -0 "$(cat "$RUN_DIR/slurmctld.pid")" 2>/dev/null; then
        # Jobs first, so that no job step outlives its node daemon.
        scancel --full --user="$(id -un)" 2>/dev/null || true
        for _ in $(seq 60); do [[ -z $(squeue -h -o %i 2>/dev/null) ]] && break; sleep 1; done
    fi
    local file
    for file in "$RUN_DIR"/slurmd-*.pid "$RUN_DIR/slurmctld.pid" "$RUN_DIR/munged.pid"; do
        stop_pid_file "$file"
    done
    echo "local_cluster.sh: stopped (logs in $LOG_DIR)"
}

status() {
    if [[ -f $RUN_DIR/slurmctld.pid ]] && kill -0 "$(cat "$RUN_DIR/slurmctld.pid")" 2>/dev/null; then
        sinfo -N -o '%N %c %m %T'
        squeue
    else
        echo "local_cluster.sh: not running"
    fi
}

case ${1:-} in
    prepare) prepare ;;
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 prepare|start|stop|status" >&2; exit 2 ;;
esac
