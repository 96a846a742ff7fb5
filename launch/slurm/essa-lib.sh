# essa-lib.sh: shared by essa-train.sbatch and essa-sweep.sbatch (source it; it runs nothing).
#
# One job = one essa-train run under MPI: rank 0 the master (CPU only, on the first node beside
# that node's workers), ranks 1..N-1 workers with one engine each (engine.tensor_parallel_size
# GPUs per engine). The flow of essa_run_job:
#   1. ask Python for the job plan (python -m essa.cluster.job): run directory, resume?, done?,
#      tensor parallel size, whether the SFT warm start must be trained first, the config args;
#   2. done -> exit 0; warm start missing -> one single-task step `essa-sft --cache --no-eval`;
#   3. lay out the ranks (hostfile: master + workers on node 1, workers elsewhere) and start
#      `essa-train <config args> [--resume RUN_DIR]` under srun (or mpirun), in the background;
#   4. forward USR1/TERM from SLURM (#SBATCH --signal=B:USR1@<s>) to the step: the master
#      checkpoints and exits 75;
#   5. exit status 75 -> `scontrol requeue $SLURM_JOB_ID`; the requeued job finds the checkpoint
#      and resumes. 0 done, 2 config error, 3 a worker failed: never requeued.
#
# Settings (environment):
#   ESSA_LAUNCHER        srun (default inside SLURM) or mpirun
#   ESSA_SRUN_MPI        srun's --mpi plugin: pmix (default; Open MPI, or MPICH built with PMIx) or
#                        pmi2 (MPICH, MVAPICH, Intel MPI)
#   ESSA_SRUN_ARGS       extra srun options, e.g. "--gres=gpu:8" where steps do not see the GPUs
#   ESSA_MPIRUN_ARGS     extra mpirun options
#   ESSA_GPUS_PER_NODE   GPUs per node (default $SLURM_GPUS_ON_NODE; 0: CPU-only workers)
#   ESSA_WORKERS_PER_NODE workers per node (default GPUs / TP; without GPUs $SLURM_NTASKS_PER_NODE - 1, else 1)
#   ESSA_PYTHON          interpreter with essa installed (default: python)
#   ESSA_TRAIN, ESSA_SFT commands (default: essa-train, essa-sft)
#   ESSA_MAX_REQUEUES    stop requeueing after this many restarts (default 50)
#   ESSA_WARM_START      0: never run the essa-sft step (the master trains a missing warm start)

ESSA_SLURM_DIR=${ESSA_SLURM_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}
EXIT_OK=0
EXIT_CONFIG=2
EXIT_FAILURE=3
EXIT_REQUEUE=75

essa_log() {
    echo "[essa-slurm $(date +%H:%M:%S)] $*" >&2
}

# essa_read_plan CMD...: run CMD (prints the job plan) and set RUN_DIR, RESUME, DONE, GENERATION,
# TP, WARM_START, MASTER_EVALUATES and the array CONFIG_ARGS. Returns CMD's status.
essa_read_plan() {
    local text rc line key value
    text=$("$@")
    rc=$?
    [ "$rc" -eq 0 ] || return "$rc"
    CONFIG_ARGS=()
    while IFS= read -r line; do
        key=${line%%=*}
        value=${line#*=}
        case $key in
            run_dir) RUN_DIR=$value ;;
            resume) RESUME=$value ;;
            done) DONE=$value ;;
            generation) GENERATION=$value ;;
            tensor_parallel) TP=$value ;;
            master_evaluates) MASTER_EVALUATES=$value ;;
            warm_start) WARM_START=$value ;;
            arg) CONFIG_ARGS+=("$value") ;;
        esac
    done <<< "$text"
    return 0
}

# essa_layout: NODES, MASTER_HOST, GPUS_PER_NODE, WORKERS_PER_NODE, NTASKS and HOSTFILE (one line
# per rank: the first node carries the master plus its workers; with MASTER_EVALUATES=1 the
# master is one of the first node's engines and takes its GPU slot 0).
essa_layout() {
    if [ -n "${SLURM_JOB_NODELIST:-}" ] && command -v scontrol > /dev/null; then
        mapfile -t NODES < <(scontrol show hostnames "$SLURM_JOB_NODELIST")
    else
        NODES=("$(hostname -s)")
    fi
    MASTER_HOST=${NODES[0]}
    GPUS_PER_NODE=${ESSA_GPUS_PER_NODE:-${SLURM_GPUS_ON_NODE:-0}}
    local tasks_per_node=${SLURM_NTASKS_PER_NODE:-0}
    tasks_per_node=${tasks_per_node%%[!0-9]*}  # "9(x2)" -> 9
    if [ -n "${ESSA_WORKERS_PER_NODE:-}" ]; then
        WORKERS_PER_NODE=$ESSA_WORKERS_PER_NODE
    elif [ "$GPUS_PER_NODE" -gt 0 ]; then
        WORKERS_PER_NODE=$((GPUS_PER_NODE / ${TP:-1}))
    elif [ "${tasks_per_node:-0}" -gt 1 ]; then
        WORKERS_PER_NODE=$((tasks_per_node - 1))
    else
        WORKERS_PER_NODE=1
    fi
    if [ "$WORKERS_PER_NODE" -lt 1 ]; then
        essa_log "no worker fits: $GPUS_PER_NODE GPUs per node, tensor_parallel_size ${TP:-1}"
        return "$EXIT_CONFIG"
    fi
    local extra=1
    [ "${MASTER_EVALUATES:-0}" = 1 ] && extra=0
    export ESSA_MASTER_EVALUATES=${MASTER_EVALUATES:-0}
    NTASKS=$((${#NODES[@]} * WORKERS_PER_NODE + extra))
    HOSTFILE=${ESSA_HOSTFILE:-${TMPDIR:-/tmp}/essa-hosts-${SLURM_JOB_ID:-$$}}
    local i n k
    : > "$HOSTFILE"
    for i in "${!NODES[@]}"; do
        n=$WORKERS_PER_NODE
        [ "$i" -eq 0 ] && n=$((n + extra))  # the master shares the first node
        for ((k = 0; k < n; k++)); do echo "${NODES[$i]}" >> "$HOSTFILE"; done
    done
    essa_log "${#NODES[@]} node(s) x $WORKERS_PER_NODE engine(s) + master on $MASTER_HOST" \
             "$([ "$extra" = 0 ] && echo "(the master is one of the engines)"):" \
             "$NTASKS ranks, $GPUS_PER_NODE GPU(s) per node, ${TP:-1} per engine"
}

# essa_launcher_command CMD...: the srun / mpirun command line that runs CMD on every rank
# through rank-gpu.sh (in the array LAUNCH).
essa_launcher_command() {
    local launcher=${ESSA_LAUNCHER:-}
    if [ -z "$launcher" ]; then
        if [ -n "${SLURM_JOB_ID:-}" ]; then launcher=srun; else launcher=mpirun; fi
    fi
    if [ "$launcher" = srun ]; then
        # SLURM_HOSTFILE + --distribution=arbitrary: rank r runs on line r+1 of the hostfile.
        LAUNCH=(env SLURM_HOSTFILE="$HOSTFILE" srun --mpi="${ESSA_SRUN_MPI:-pmix}"
                --distribution=arbitrary --ntasks="$NTASKS" --kill-on-bad-exit=1)
        [ -n "${SLURM_CPUS_PER_TASK:-}" ] && LAUNCH+=(--cpus-per-task="$SLURM_CPUS_PER_TASK")
    else
        LAUNCH=(mpirun -np "$NTASKS")
        if mpirun --version 2>&1 | grep -q "Open MPI"; then
            LAUNCH+=(--hostfile "$HOSTFILE" -x ESSA_TP -x ESSA_GPUS_PER_NODE -x ESSA_MASTER_HOST
                     -x ESSA_STATUS_FILE -x ESSA_MASTER_EVALUATES)
        else  # MPICH Hydra: one host per line is one slot, in order; the environment is passed on
            LAUNCH+=(-f "$HOSTFILE")
        fi
    fi
    # shellcheck disable=SC2206  # site options are split on spaces on purpose
    if [ "$launcher" = srun ]; then LAUNCH+=(${ESSA_SRUN_ARGS:-}); else LAUNCH+=(${ESSA_MPIRUN_ARGS:-}); fi
    LAUNCH+=("$ESSA_SLURM_DIR/rank-gpu.sh" "$@")
}

# essa_forward SIGNAL: pass a stop request on to the running step.
essa_forward() {
    STOP_SIGNAL=$1
    essa_log "received SIG$1: asking the run to checkpoint and stop"
    [ -n "${STEP_PID:-}" ] && kill -s "$1" "$STEP_PID" 2> /dev/null
    return 0
}

# essa_wait PID: wait for PID, also across interruptions by trapped signals; its exit status.
essa_wait() {
    local rc
    while :; do
        wait "$1"
        rc=$?
        if [ "$rc" -gt 128 ] && kill -0 "$1" 2> /dev/null; then
            continue  # a trapped signal interrupted wait; the step is still running
        fi
        return "$rc"
    done
}

# essa_step CMD...: run the launcher command CMD in the background with USR1/TERM forwarded;
# returns the master's exit status (from ESSA_STATUS_FILE when rank 0 wrote it).
essa_step() {
    # In the run directory: on the shared file system, seen by rank 0 wherever it runs.
    mkdir -p "${RUN_DIR:-.}"
    export ESSA_STATUS_FILE=${ESSA_STATUS_FILE:-${RUN_DIR:-.}/.exit-status-${SLURM_JOB_ID:-$$}}
    rm -f "$ESSA_STATUS_FILE"
    STOP_SIGNAL=""
    trap 'essa_forward USR1' USR1
    trap 'essa_forward TERM' TERM
    "$@" &
    STEP_PID=$!
    essa_wait "$STEP_PID"
    local rc=$?
    trap - USR1 TERM
    STEP_PID=""
    if [ -s "$ESSA_STATUS_FILE" ]; then
        rc=$(cat "$ESSA_STATUS_FILE")
    fi
    rm -f "$ESSA_STATUS_FILE"
    return "$rc"
}

# essa_after_exit STATUS: requeue on 75, report the rest; returns STATUS.
essa_after_exit() {
    local rc=$1
    case $rc in
        "$EXIT_OK") essa_log "run finished (exit 0)" ;;
        "$EXIT_REQUEUE")
            if [ -z "${SLURM_JOB_ID:-}" ]; then
                essa_log "stopped after a checkpoint (exit 75); not under SLURM: resume by hand"
            elif [ "${SLURM_RESTART_COUNT:-0}" -ge "${ESSA_MAX_REQUEUES:-50}" ]; then
                essa_log "stopped after a checkpoint (exit 75); already requeued" \
                         "${SLURM_RESTART_COUNT} times (ESSA_MAX_REQUEUES): not again"
            else
                essa_log "stopped after a checkpoint (exit 75): scontrol requeue $SLURM_JOB_ID" \
                         "(the requeued job resumes ${RUN_DIR:-the run})"
                scontrol requeue "$SLURM_JOB_ID"
            fi ;;
        "$EXIT_FAILURE") essa_log "a worker failed (exit 3): see ${RUN_DIR:-the}/run.log; not requeued" ;;
        "$EXIT_CONFIG") essa_log "config or set-up error (exit 2): not requeued" ;;
        *) essa_log "the step ended with status $rc: not requeued" ;;
    esac
    return "$rc"
}

# essa_run_job PLAN_CMD...: the whole job (see the top of this file).
essa_run_job() {
    essa_read_plan "$@" || return $?
    if [ "${DONE:-0}" = 1 ]; then
        essa_log "$RUN_DIR is complete (summary.json, generation $GENERATION): nothing to do"
        return "$EXIT_OK"
    fi
    essa_layout || return $?
    export ESSA_TP=${TP:-1} ESSA_GPUS_PER_NODE=$GPUS_PER_NODE ESSA_MASTER_HOST=$MASTER_HOST
    if [ "${WARM_START:-0}" = 1 ] && [ "${ESSA_WARM_START:-1}" != 0 ]; then
        essa_log "training the SFT warm start first (essa-sft --cache)"
        local sft=(${ESSA_SFT:-essa-sft} --cache --no-eval --quiet "${CONFIG_ARGS[@]}")
        if [ -n "${SLURM_JOB_ID:-}" ] && [ "${ESSA_LAUNCHER:-srun}" = srun ]; then
            sft=(srun --nodes=1 --ntasks=1 "${sft[@]}")
        fi
        "${sft[@]}" || return $?
    fi
    local train=(${ESSA_TRAIN:-essa-train} "${CONFIG_ARGS[@]}")
    if [ "${RESUME:-0}" = 1 ]; then
        train+=(--resume "$RUN_DIR")
        essa_log "resuming $RUN_DIR from generation $GENERATION"
    fi
    essa_launcher_command "${train[@]}"
    essa_log "${LAUNCH[*]}"
    essa_step "${LAUNCH[@]}"
    essa_after_exit $?
}
