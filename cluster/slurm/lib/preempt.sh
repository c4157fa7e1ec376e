# shellcheck shell=bash
# Sourced by the pixelmill sbatch scripts: run one job step so that a preemption or a
# time-limit warning stops it cleanly and the job comes back where it left off.
#
#   source "$PIXELMILL_HOME/cluster/slurm/lib/preempt.sh"
#   pm_run_step pixelmill download ...        # returns the step's exit status
#
# How it works (Slurm's side: --requeue --signal=B:USR1@120 in the job script):
# - Sourcing this file installs traps for USR1, TERM and INT at once, so a signal that
#   arrives before the step starts does not kill the batch shell (it skips the step).
# - The step runs under `srun ... &` and the batch shell `wait`s for it. A shell that is
#   running a foreground command cannot run traps; `wait` is interrupted by a trapped
#   signal, so the batch shell reacts at once.
# - Time limit: Slurm sends SIGUSR1 to the batch shell only (the B: in --signal) about
#   120 s before the limit. The trap forwards the stop request to the step as SIGUSR2
#   (some NCCL versions swallow SIGUSR1; pixelmill treats TERM, USR1 and USR2 alike) and
#   waits again for the step to finish its unit of work and exit.
# - Preemption (PreemptMode=REQUEUE with a GraceTime), as seen on Slurm 22.05: at the
#   start of GraceTime Slurm sends SIGTERM to the job's steps only (the batch shell gets
#   nothing); when GraceTime ends it requeues the job, sending SIGTERM to the batch shell
#   and SIGKILL after KillWait.
# - A pixelmill command that stopped on a signal with its state clean exits 75. Slurm's
#   own requeue does NOT suffice: a preempted job that exits by itself within GraceTime is
#   recorded as FAILED (exit 75) and not requeued (a job still running when GraceTime
#   ends is requeued, whatever its exit status), and nothing requeues a job at its time
#   limit. So on exit status 75 we run `scontrol requeue $SLURM_JOB_ID` ourselves, but
#   only while the job is still RUNNING: a job cancelled with scancel is already
#   COMPLETING then (and scontrol would requeue it all the same). The next run sees
#   SLURM_RESTART_COUNT=1, 2, ... and the same command resumes from the output already
#   on disk. A requeued job is held back ~120 s (BeginTime) before it can start.
# - SIGKILL cannot be trapped: the partition's GraceTime must cover the step's longest
#   unit of work.

PM_STEP_PID=
PM_STEP_SIGNAL=

pm_log() { printf '%s pixelmill-job[%s]: %s\n' "$(date -u +%FT%TZ)" "${SLURM_JOB_ID:-?}" "$*" >&2; }

pm_forward_signal() {
  PM_STEP_SIGNAL=$1
  if [ -n "$PM_STEP_PID" ] && kill -0 "$PM_STEP_PID" 2>/dev/null; then
    pm_log "got SIG$1; forwarding SIGUSR2 to the step (pid $PM_STEP_PID)"
    kill -USR2 "$PM_STEP_PID" 2>/dev/null || true
  else
    pm_log "got SIG$1; no step running"
  fi
}

trap 'pm_forward_signal USR1' USR1
trap 'pm_forward_signal TERM' TERM
trap 'pm_forward_signal INT' INT

# Seconds left before the job's time limit, or -1 when it has none (informational).
pm_time_left() {
  local left
  left=$(squeue -h -j "$SLURM_JOB_ID" -o %L 2>/dev/null) || { echo -1; return; }
  case $left in
    ''|UNLIMITED|NOT_SET|INVALID) echo -1; return ;;
  esac
  # [D-]HH:MM:SS, MM:SS or SS
  local d=0 h=0 m=0 s=0 rest=$left
  case $rest in *-*) d=${rest%%-*}; rest=${rest#*-} ;; esac
  IFS=: read -r -a p <<<"$rest"
  case ${#p[@]} in
    3) h=${p[0]}; m=${p[1]}; s=${p[2]} ;;
    2) m=${p[0]}; s=${p[1]} ;;
    1) s=${p[0]} ;;
  esac
  echo $(( 10#$d * 86400 + 10#$h * 3600 + 10#$m * 60 + 10#$s ))
}

pm_run_step() {
  pm_log "start: restart ${SLURM_RESTART_COUNT:-0}, node ${SLURMD_NODENAME:-?}: $*"
  local rc
  if [ -n "$PM_STEP_SIGNAL" ]; then
    pm_log "SIG$PM_STEP_SIGNAL arrived before the step started: not starting it"
    rc=75
    pm_requeue_if_resumable "$rc"
    return "$rc"
  fi
  # srun exits 0 when its tasks fail to launch (Slurm 22.05, e.g. PMIx set-up failing:
  # 'task 0 launch failed: Unspecified error'), which would end the job COMPLETED and let
  # an afterok chain go on without this stage. Each task marks that it started, then
  # execs the command (same process: signals reach the command itself).
  local started_dir
  started_dir=$(mktemp -d "${TMPDIR:-/tmp}/pm-step.XXXXXX")
  # shellcheck disable=SC2086,SC2016
  srun ${PIXELMILL_SRUN_ARGS:-} bash -c '{ : > "$0"; } 2>/dev/null; exec "$@"' \
    "$started_dir/started" "$@" &
  PM_STEP_PID=$!
  while :; do
    wait "$PM_STEP_PID"
    rc=$?
    # wait returns >128 when a trapped signal interrupted it; the step may still run
    if [ "$rc" -gt 128 ] && kill -0 "$PM_STEP_PID" 2>/dev/null; then
      continue
    fi
    break
  done
  PM_STEP_PID=
  if [ "$rc" -eq 0 ] && [ ! -e "$started_dir/started" ]; then
    pm_log "srun exited 0 but the step never started (task launch failed: see srun's" \
           "errors above); failing the job"
    rc=1
  fi
  rm -rf "$started_dir"
  pm_log "step exited $rc${PM_STEP_SIGNAL:+ after SIG$PM_STEP_SIGNAL}"
  pm_requeue_if_resumable "$rc"
  return "$rc"
}

# Exit status 75 (interrupted, resumable): requeue this job (see above for why).
pm_requeue_if_resumable() {
  [ "$1" -eq 75 ] || return 0
  local state
  state=$(scontrol show job -o "$SLURM_JOB_ID" 2>/dev/null | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p')
  pm_log "job state: ${state:-unknown}"
  # Preempted (Slurm 22.05) or warned of the time limit: still RUNNING. Cancelled with
  # scancel: already COMPLETING (or CANCELLED), and must stay cancelled.
  if [ "$state" != RUNNING ]; then
    pm_log "job is ${state:-gone}, not running (scancel?): not requeueing"
    return 0
  fi
  pm_log "interrupted with state saved (exit 75): requeueing job $SLURM_JOB_ID" \
         "(time left: $(pm_time_left)s)"
  scontrol requeue "$SLURM_JOB_ID" || pm_log "scontrol requeue failed (job cancelled?)"
}
