#!/usr/bin/env bash
# Stop the test Slurm started by start.sh (slurmd, slurmctld; munged unless --keep-munge).
STATE=${1:-/tmp/pixelmill-slurm}
for pidfile in "$STATE/slurmd.pid" "$STATE/slurmctld.pid"; do
  [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null
done
for _ in $(seq 1 20); do
  pgrep -f "slurm(ctld|d) -f $STATE/slurm.conf" >/dev/null || break
  sleep 0.25
done
pkill -9 -f "slurm(ctld|d) -f $STATE/slurm.conf" 2>/dev/null
[ "${2:-}" = "--keep-munge" ] || pkill -x munged 2>/dev/null
exit 0
