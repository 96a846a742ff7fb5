#!/usr/bin/env bash
# rank-gpu.sh CMD...: give this MPI rank its GPUs, then run CMD (one process per rank).
#
# Rank 0 is the ESSA master: CPU only (CUDA_VISIBLE_DEVICES=""); it shares the first node with
# that node's workers. Every other rank is a worker that gets ESSA_TP GPUs of its node: on the
# master's node its slot is local rank - 1 (the master holds local rank 0), elsewhere local rank.
# With ESSA_MASTER_EVALUATES=1 (runtime.master_evaluates) the master runs an engine too: every
# rank, the master included, takes the slot of its local rank.
# Slot s takes entries s*TP .. s*TP+TP-1 of the node's visible GPUs ($CUDA_VISIBLE_DEVICES as set
# by SLURM for the step, else 0..ESSA_GPUS_PER_NODE-1). With ESSA_GPUS_PER_NODE=0 (a CPU-only
# cluster, vLLM's CPU build) workers keep their environment.
#
# The master's exit status is also written to $ESSA_STATUS_FILE (when set): srun and mpirun may
# report another rank's status (a worker ended by the launcher), and the batch script must see
# the master's own 75 to requeue.
#
# Rank variables: SLURM_PROCID/SLURM_LOCALID (srun), OMPI_COMM_WORLD_RANK/_LOCAL_RANK (Open MPI),
# PMI_RANK/MPI_LOCALRANKID (MPICH Hydra). The master's node is $ESSA_MASTER_HOST.
set -u

rank=${SLURM_PROCID:-${OMPI_COMM_WORLD_RANK:-${PMI_RANK:-${PMIX_RANK:-0}}}}
local_rank=${SLURM_LOCALID:-${OMPI_COMM_WORLD_LOCAL_RANK:-${MPI_LOCALRANKID:-0}}}
tp=${ESSA_TP:-1}
gpus_per_node=${ESSA_GPUS_PER_NODE:-0}
master_evaluates=${ESSA_MASTER_EVALUATES:-0}

# gpus_of SLOT: set CUDA_VISIBLE_DEVICES to the ESSA_TP GPUs of SLOT on this node (or exit 2).
gpus_of() {
    local slot=$1 first visible mine
    if [ -n "${CUDA_VISIBLE_DEVICES:-}" ]; then
        IFS=, read -r -a visible <<< "$CUDA_VISIBLE_DEVICES"
    else
        visible=()
        for ((g = 0; g < gpus_per_node; g++)); do visible+=("$g"); done
    fi
    first=$((slot * tp))
    if [ "$slot" -lt 0 ] || [ $((first + tp)) -gt "${#visible[@]}" ]; then
        echo "rank-gpu.sh: rank $rank (local $local_rank on $host) needs GPUs $first-$((first + tp - 1))" \
             "but the node shows ${#visible[@]} (${visible[*]}); check --ntasks-per-node and ESSA_TP" >&2
        exit 2
    fi
    mine=("${visible[@]:first:tp}")
    CUDA_VISIBLE_DEVICES=$(IFS=,; echo "${mine[*]}")
    export CUDA_VISIBLE_DEVICES
}

host=${SLURMD_NODENAME:-$(hostname -s)}
if [ "$rank" -eq 0 ]; then
    if [ "$master_evaluates" = 1 ] && [ "$gpus_per_node" -gt 0 ]; then
        gpus_of "$local_rank"
    elif [ "$master_evaluates" != 1 ]; then
        export CUDA_VISIBLE_DEVICES=""
    fi
    "$@" &
    child=$!
    # The launcher signals this wrapper; pass stop requests on to the master (it decides).
    trap 'kill -s USR1 "$child" 2>/dev/null' USR1
    trap 'kill -s TERM "$child" 2>/dev/null' TERM
    while :; do
        wait "$child"
        rc=$?
        if [ "$rc" -gt 128 ] && kill -0 "$child" 2>/dev/null; then
            continue  # wait was interrupted by a trapped signal; the master is still running
        fi
        break
    done
    if [ -n "${ESSA_STATUS_FILE:-}" ]; then
        echo "$rc" > "$ESSA_STATUS_FILE"
    fi
    exit "$rc"
fi

if [ "$gpus_per_node" -gt 0 ]; then
    slot=$local_rank
    if [ "$master_evaluates" != 1 ] && [ "${host%%.*}" = "${ESSA_MASTER_HOST%%.*}" ]; then
        slot=$((local_rank - 1))
    fi
    gpus_of "$slot"
fi
exec "$@"
