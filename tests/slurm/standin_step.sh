#!/usr/bin/env bash
# Stand-in for a pixelmill stage inside a job step: counts units of work into
# $STANDIN_DIR/progress (resuming from it), stops cleanly on TERM/USR1/USR2 like
# pm_signal (finish the unit, record the signal, exit 75), and exits 0 after
# $STANDIN_UNITS units. Used by tests/test_slurm_cluster.py.
set -u
dir=$STANDIN_DIR
units=${STANDIN_UNITS:-100000}
stop=
trap 'stop=USR2' USR2
trap 'stop=USR1' USR1
trap 'stop=TERM' TERM
done_units=$(cat "$dir/progress" 2>/dev/null || echo 0)
echo "step start restart=${SLURM_RESTART_COUNT:-unset} from=$done_units" >>"$dir/events"
while [ "$done_units" -lt "$units" ]; do
  if [ -n "$stop" ]; then
    echo "step stop signal=$stop at=$done_units" >>"$dir/events"
    exit 75
  fi
  sleep 0.1 & wait $!   # one unit of work (interruptible, so a signal is seen at once)
  done_units=$((done_units + 1))
  echo "$done_units" >"$dir/progress.tmp" && mv "$dir/progress.tmp" "$dir/progress"
done
echo "step done restart=${SLURM_RESTART_COUNT:-unset} at=$done_units" >>"$dir/events"
