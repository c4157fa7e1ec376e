#!/usr/bin/env bash
# Start a real single-machine Slurm for tests and demos: munged, slurmctld and slurmd on
# this host, with a preemptible `low` partition (PreemptMode=REQUEUE, GraceTime) and a
# `high` partition that preempts it (preempt/partition_prio). Runs as root with
# proctrack/linuxproc and task/none. All state lives under STATE_DIR.
#   cluster/slurm/local/start.sh [STATE_DIR]      (default /tmp/pixelmill-slurm)
# Optional: PIXELMILL_SLURM_PROLOG=/abs/path/script adds Prolog=script (node health test).
# then:  export SLURM_CONF=STATE_DIR/slurm.conf;  sinfo; sbatch ...
# Stop with cluster/slurm/local/stop.sh [STATE_DIR].
set -euo pipefail
STATE=${1:-/tmp/pixelmill-slurm}
GRACE=${PIXELMILL_SLURM_GRACE:-15}
mkdir -p "$STATE"/{ctld,spool,log}
STATE=$(cd "$STATE" && pwd)
HOST=$(hostname -s)
CPUS=$(nproc)
MEM_MB=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))

for bin in munged slurmctld slurmd sbatch; do
  command -v "$bin" >/dev/null || { echo "start.sh: $bin missing; run scripts/install-deps.sh" >&2; exit 1; }
done

# munge: the Debian package creates /etc/munge/munge.key; make one if it is missing.
if [ ! -s /etc/munge/munge.key ]; then
  mkdir -p /etc/munge
  dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 2>/dev/null
  chmod 400 /etc/munge/munge.key
fi
mkdir -p /run/munge /var/lib/munge /var/log/munge
if ! pgrep -x munged >/dev/null; then
  munged --force --num-threads=2
fi

cat > "$STATE/slurm.conf" <<CONF
ClusterName=pixelmill
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# a requeued job may start again cred_expire seconds after it stopped (default 120): short
# here so that tests see the restart soon, without releasing it early (which races the
# revocation of the old run's credential: 'Job credential revoked', state FAILED)
AuthInfo=cred_expire=10
CredType=cred/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
SlurmctldPort=${PIXELMILL_SLURMCTLD_PORT:-6817}
SlurmdPort=${PIXELMILL_SLURMD_PORT:-6818}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=pmix
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
JobRequeue=1
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
MinJobAge=600
KillWait=${GRACE}
InactiveLimit=0
${PIXELMILL_SLURM_PROLOG:+Prolog=$PIXELMILL_SLURM_PROLOG}
NodeName=$HOST CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=low Nodes=$HOST Default=YES PriorityTier=1 PreemptMode=REQUEUE GraceTime=$GRACE MaxTime=INFINITE State=UP
PartitionName=high Nodes=$HOST PriorityTier=2 PreemptMode=OFF MaxTime=INFINITE State=UP
CONF
# PMIx puts each step's files in spmix_appdir_UID_JOB.STEP under this base (default /tmp).
# Job ids restart at 1 in every fresh local cluster, so a shared base would let one
# cluster's leftovers (or a second cluster running at the same time) fail another's step
# launch with 'Cannot create client cli tmpdir ... File exists'.
mkdir -p "$STATE/tmp"
printf 'PMIxCliTmpDirBase=%s\n' "$STATE/tmp" > "$STATE/mpi.conf"
cp "$STATE/slurm.conf" "$STATE/slurm.conf.used"

"$(dirname "$0")/stop.sh" "$STATE" --keep-munge >/dev/null 2>&1 || true
slurmctld -f "$STATE/slurm.conf" -c
slurmd -f "$STATE/slurm.conf"
export SLURM_CONF="$STATE/slurm.conf"
for _ in $(seq 1 60); do
  if sinfo -h -o '%T' 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
    echo "slurm ready: export SLURM_CONF=$STATE/slurm.conf"
    exit 0
  fi
  sleep 0.5
done
echo "start.sh: slurm did not become ready; see $STATE/log/" >&2
sinfo >&2 || true
exit 1
