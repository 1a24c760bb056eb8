#!/usr/bin/env bash
# Runs one shard job over N GPUs of a Slurm cluster: a job array of N parts, then a merge job
# that starts when every part has succeeded.
#
#   JOB=hist SAE_DIR=runs/my-sae SHARDS=/data/acts OUT=/scratch/hist N=16 examples/slurm/submit.sh
#
# Extra sbatch options (partition, account, ...) go in SBATCH_OPTS, e.g.
# SBATCH_OPTS="--partition=gpu --account=lab".
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
: "${JOB:?set JOB to hist, eval, encode or categories}" "${SAE_DIR:?}" "${SHARDS:?}" "${OUT:?}"
N="${N:-8}"
export JOB SAE_DIR SHARDS OUT
# shellcheck disable=SC2086 # SBATCH_OPTS is a list of options
array=$(sbatch --parsable ${SBATCH_OPTS:-} --export=ALL --array="0-$((N - 1))" "$here/part.sbatch")
array="${array%%;*}" # --parsable prints JOBID[;CLUSTER]
# shellcheck disable=SC2086
merge=$(sbatch --parsable ${SBATCH_OPTS:-} --export=ALL --dependency="afterok:$array" "$here/merge.sbatch")
echo "parts: job array $array ($N tasks); merge: job ${merge%%;*} -> $OUT"
