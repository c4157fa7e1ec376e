#!/usr/bin/env bash
# Slurm Prolog (slurm.conf: Prolog=/path/to/prolog.sh, run as root by slurmd before each
# job on each of its nodes): run `pixelmill doctor`; when the node is unhealthy, drain it
# with the doctor's reason and exit non-zero, so the job goes to a healthy node instead.
#   sinfo -R     shows "pixelmill doctor: CHECK: REASON" for the drained node
#   scontrol update nodename=NODE state=resume     after the repair
# Slurm itself also drains a node whose Prolog fails and requeues the job (held unless
# SchedulerParameters=nohold_on_prolog_fail); draining first here puts our reason on the
# node instead of a bare "Prolog error".
#
# Settings (environment, or a file sourced first: $PIXELMILL_DOCTOR_CONF, default
# /etc/pixelmill/doctor.conf):
#   PIXELMILL              the pixelmill binary (default: pixelmill on PATH)
#   PIXELMILL_DOCTOR_ARGS  doctor options for this node type, e.g.
#                          "--gpu --min-gpus 8 --nccl --min-nccl-busbw 200 --fabric efa
#                           --storage /fsx/scratch --storage-mib 256 --min-write-mbps 500"
#                          (default: "--storage /tmp --storage-mib 64")
#   PIXELMILL_DOCTOR_TIMEOUT  seconds before the doctor counts as hung (default 120)
# The same script works as a HealthCheckProgram (HealthCheckInterval=...): it drains
# only, it never resumes a node an operator drained.
set -uo pipefail
CONF=${PIXELMILL_DOCTOR_CONF:-/etc/pixelmill/doctor.conf}
# shellcheck disable=SC1090
[ -r "$CONF" ] && . "$CONF"
PIXELMILL=${PIXELMILL:-pixelmill}
ARGS=${PIXELMILL_DOCTOR_ARGS:---storage /tmp --storage-mib 64}
NODE=${SLURMD_NODENAME:-$(hostname -s)}

# ARGS follow shell quoting ("--force-fail 'two words'"); it comes from root's config
eval "set -- $ARGS"
out=$(timeout "${PIXELMILL_DOCTOR_TIMEOUT:-120}" "$PIXELMILL" doctor "$@" 2>&1)
rc=$?
[ "$rc" -eq 0 ] && exit 0

reason=$(printf '%s\n' "$out" | sed -n 's/^unhealthy: //p' | tail -n 1)
if [ -z "$reason" ]; then
  case $rc in
    124) reason="doctor hung (timeout ${PIXELMILL_DOCTOR_TIMEOUT:-120}s)" ;;
    127) reason="pixelmill not found ($PIXELMILL)" ;;
    *) reason="doctor exited $rc: $(printf '%s\n' "$out" | tail -n 1)" ;;
  esac
fi
# Slurm keeps reasons short in sinfo; the full table goes to slurmd's log via stderr.
reason="pixelmill doctor: ${reason//\"/\'}"
reason=${reason:0:200}
printf '%s\n' "$out" >&2
echo "prolog: draining $NODE: $reason" >&2
scontrol update nodename="$NODE" state=drain reason="$reason" >&2 ||
  echo "prolog: scontrol update failed; Slurm drains the node on the prolog failure" >&2
exit 1
