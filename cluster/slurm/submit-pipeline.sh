#!/usr/bin/env bash
# Submit a pipeline file as a chain of Slurm jobs, one per stage, each starting only after
# the previous one completed successfully (--dependency=afterok). Every job runs
# `pixelmill run PIPELINE.ini --only STAGE` through cluster/slurm/run.sbatch: requeued
# after a preemption, it skips what is complete and resumes its stage; a dependent job
# waits through any number of requeues of the job before it. A stage that fails cancels
# the jobs after it (--kill-on-invalid-dep=yes).
#
#   cluster/slurm/submit-pipeline.sh [--partition P] [--train-partition P] PIPELINE.ini \
#       [SBATCH_ARGS...]
#
# Prints one line per stage: STAGE JOBID. SBATCH_ARGS (e.g. -N 8 --ntasks-per-node=32
# --time=2-0) go to every job. Defaults: every stage on `low` (PIXELMILL_PARTITION);
# train on PIXELMILL_TRAIN_PARTITION or --train-partition, else the same partition.
# PIXELMILL (the binary, default pixelmill) and PIXELMILL_HOME (this checkout, default:
# found from this script) are passed to the jobs.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export PIXELMILL_HOME=${PIXELMILL_HOME:-$(cd "$here/../.." && pwd)}
export PIXELMILL=${PIXELMILL:-pixelmill}
partition=${PIXELMILL_PARTITION:-low}
train_partition=${PIXELMILL_TRAIN_PARTITION:-}
usage() { sed -n '2,/^set /p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' >&2; exit 2; }
while [ $# -gt 0 ]; do
  case $1 in
    --partition) partition=${2:?}; shift 2 ;;
    --train-partition) train_partition=${2:?}; shift 2 ;;
    -h|--help) usage ;;
    *) break ;;
  esac
done
[ $# -ge 1 ] || usage
ini=$1; shift
[ -r "$ini" ] || { echo "submit-pipeline.sh: cannot read '$ini'" >&2; exit 2; }
ini=$(cd "$(dirname "$ini")" && pwd)/$(basename "$ini")
# the file is checked (and its stages listed) before anything is submitted
stages=$("$PIXELMILL" run "$ini" --list) || exit 2
prev=
for stage in $stages; do
  p=$partition
  [ "$stage" = train ] && [ -n "$train_partition" ] && p=$train_partition
  dep=()
  [ -n "$prev" ] && dep=(--dependency="afterok:$prev" --kill-on-invalid-dep=yes)
  job=$(sbatch --parsable --partition="$p" --job-name="pm-$stage" "${dep[@]}" "$@" \
        "$PIXELMILL_HOME/cluster/slurm/run.sbatch" "$ini" --only "$stage")
  job=${job%%;*}
  echo "$stage $job"
  prev=$job
done
