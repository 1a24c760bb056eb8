#!/usr/bin/env bash
# Runs a sweep over N GPUs of a Slurm cluster: a job array of N parts of the sweep, then (with
# EVAL set) a frontier job that starts when every part has succeeded.
#
#   SHARDS=/data/acts OUT=/scratch/sweep N=4 EVAL=/data/heldout \
#     SWEEP_ARGS="--k 16,32,64,128 --expansion-factor 8,16 --tokens 200000000" \
#     examples/slurm/submit-sweep.sh
#
# Extra sbatch options (partition, account, ...) go in SBATCH_OPTS.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
: "${SHARDS:?}" "${OUT:?}"
N="${N:-4}"
export SHARDS OUT
# shellcheck disable=SC2086 # SBATCH_OPTS is a list of options
array=$(sbatch --parsable ${SBATCH_OPTS:-} --export=ALL --array="0-$((N - 1))" "$here/sweep.sbatch")
array="${array%%;*}" # --parsable prints JOBID[;CLUSTER]
if [ -n "${EVAL:-}" ]; then
    export EVAL
    # shellcheck disable=SC2086
    frontier=$(sbatch --parsable ${SBATCH_OPTS:-} --export=ALL --dependency="afterok:$array" "$here/frontier.sbatch")
    echo "sweep: job array $array ($N tasks); frontier: job ${frontier%%;*} -> $OUT/frontier"
else
    echo "sweep: job array $array ($N tasks) -> $OUT"
fi
