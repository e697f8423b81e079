#!/usr/bin/env bash
# A real two-node Slurm cluster on this machine, and the three scale scenarios run on it through `lit-papers`.
#
#   sudo bash tests/slurm/run_slurm_tests.sh [--keep-packages]     (root: apt, /etc/hosts, daemons)
#
# 1. installs Debian's slurm-wlm and munge when missing (apt-get update first; services are kept from starting);
# 2. starts munged, slurmctld and two slurmd (-N n1, -N n2, own ports, n1/n2 resolving to 127.0.0.1), with every
#    file (munge key and socket, slurm.conf via SLURM_CONF, state, spool, logs, pids) in one temporary folder;
# 3. runs the scenarios with configs/resnet_cifar/tiny.yaml (CIFAR subset under $LIT_PAPERS_DATA, default
#    ../shared/data next to the checkout), DDP on CPU (gloo):
#    ddp2      `lit-papers slurm --nodes 2 -- fit ...`: world size 2, node ranks 0 and 1 on n1 and n2, a finished
#              checkpoint at max_steps;
#    requeue   the same job, `scancel --signal=USR1` mid-training: checkpoint at a safe point + `scontrol requeue`,
#              the requeued job resumes from that checkpoint's step, continues the same W&B run (offline) and ends
#              with exactly the weights of the uninterrupted ddp2 run;
#    array     a 4-trial grid sweep (tests/launch/tiny_grid_sweep.yaml) as a Slurm array `--array 0-3`: four
#              distinct grid points, all finished, results table with 4 rows, best.yaml;
# 4. stops every daemon it started (by pid), restores /etc/hosts, purges the packages and removes the users it
#    installed (unless --keep-packages), and deletes its temporary folder (KEEP_TMP=1 keeps it for reading).
# Prints "N passed, N failed"; exits non-zero when a scenario fails. About 4-6 minutes on 2 busy cores.
set -uo pipefail

KEEP_PACKAGES=0
[[ "${1:-}" == "--keep-packages" ]] && KEEP_PACKAGES=1
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PY="${PYTHON:-$(command -v python3 || command -v python)}"
if [[ $(id -u) -ne 0 ]]; then
  echo "run as root (sudo bash $0): it installs packages, edits /etc/hosts and starts daemons" >&2
  exit 2
fi

if ! (cd "$REPO" && PYTHONPATH="$REPO" "$PY" -c "import sweeps, lit_papers" 2>/dev/null); then
  echo "needs the project and W&B's sweeps in $PY: pip install -e '.[dev,sweeps]' && pip install --no-deps 'sweeps==0.3.0'" >&2
  exit 2
fi

T="$(mktemp -d /tmp/lit-papers-slurm.XXXXXX)"
chmod 755 "$T"
PIDS=()            # daemons we started, by pid
HOSTS_SAVED=""     # copy of /etc/hosts when we changed it
INSTALLED=()       # packages we installed
NEW_USERS=() NEW_GROUPS=()
POLICY_RC=""
PASSED=0 FAILED=0
log() { echo "[slurm-tests $(date +%H:%M:%S)] $*" >&2; }

cleanup() {
  set +e
  if [[ -n "${SLURM_CONF:-}" && -f "$SLURM_CONF" ]]; then
    scancel --full --quiet -u root 2>/dev/null
    for _ in $(seq 30); do [[ -z "$(squeue -h 2>/dev/null)" ]] && break; sleep 1; done
  fi
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    pid=${PIDS[$i]}
    kill "$pid" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null
  done
  [[ -n "$HOSTS_SAVED" ]] && cat "$HOSTS_SAVED" > /etc/hosts   # in place: /etc/hosts may be a bind mount
  [[ -n "$POLICY_RC" ]] && rm -f /usr/sbin/policy-rc.d
  if ((${#INSTALLED[@]})) && ((KEEP_PACKAGES == 0)); then
    log "purging the packages this script installed: ${INSTALLED[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq "${INSTALLED[@]}" >/dev/null 2>&1
    for u in "${NEW_USERS[@]}"; do userdel "$u" 2>/dev/null; done
    for g in "${NEW_GROUPS[@]}"; do groupdel "$g" 2>/dev/null; done
  fi
  if [[ "${KEEP_TMP:-0}" == 1 ]]; then log "kept $T"; else rm -rf "$T"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# -- 1. packages --------------------------------------------------------------------------------------------------
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null || ! command -v sbatch >/dev/null; then
  dpkg-query -W -f '${Package}\n' | sort > "$T/pkgs.before"
  getent passwd | cut -d: -f1 | sort > "$T/users.before"
  getent group | cut -d: -f1 | sort > "$T/groups.before"
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then   # do not start the packaged services (we run our own daemons)
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && POLICY_RC=1
  fi
  log "installing slurm-wlm and munge"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurm-wlm munge >"$T/apt.log" 2>&1
  rc=$?
  dpkg-query -W -f '${Package}\n' | sort > "$T/pkgs.after"
  mapfile -t INSTALLED < <(comm -13 "$T/pkgs.before" "$T/pkgs.after")
  mapfile -t NEW_USERS < <(getent passwd | cut -d: -f1 | sort | comm -13 "$T/users.before" -)
  mapfile -t NEW_GROUPS < <(getent group | cut -d: -f1 | sort | comm -13 "$T/groups.before" -)
  if ((rc != 0)); then tail -20 "$T/apt.log" >&2; log "apt-get install failed"; exit 1; fi
  [[ -n "$POLICY_RC" ]] && rm -f /usr/sbin/policy-rc.d && POLICY_RC=""
fi

# -- 2. the cluster -----------------------------------------------------------------------------------------------
free_ports() { "$PY" - "$1" <<'EOF'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}
read -r CTLD_PORT N1_PORT N2_PORT <<<"$(free_ports 3)"
HOST="$(hostname -s)"
mkdir -p "$T/munge-run" "$T/munge-key" "$T/state" "$T/spool" "$T/log" "$T/runs"
chmod 755 "$T/munge-run"; chmod 700 "$T/munge-key"
head -c 1024 /dev/urandom > "$T/munge-key/munge.key"; chmod 400 "$T/munge-key/munge.key"
cat > "$T/slurm.conf" <<EOF
ClusterName=litpapers
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$CTLD_PORT
AuthType=auth/munge
AuthInfo=socket=$T/munge-run/munge.socket
CredType=cred/munge
StateSaveLocation=$T/state
SlurmdSpoolDir=$T/spool/%n
SlurmctldPidFile=$T/slurmctld.pid
SlurmdPidFile=$T/slurmd-%n.pid
SlurmctldLogFile=$T/log/slurmctld.log
SlurmdLogFile=$T/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
SlurmdParameters=config_overrides
KillWait=10
MinJobAge=3600
NodeName=n1 NodeAddr=127.0.0.1 NodeHostname=$HOST Port=$N1_PORT CPUs=1 RealMemory=4000 State=UNKNOWN
NodeName=n2 NodeAddr=127.0.0.1 NodeHostname=$HOST Port=$N2_PORT CPUs=1 RealMemory=4000 State=UNKNOWN
PartitionName=debug Nodes=n1,n2 Default=YES MaxTime=INFINITE State=UP
EOF
export SLURM_CONF="$T/slurm.conf"

for node in n1 n2; do
  if [[ "$(getent ahostsv4 "$node" | awk 'NR==1{print $1}')" != "127.0.0.1" ]]; then
    if [[ -z "$HOSTS_SAVED" ]]; then HOSTS_SAVED="$T/hosts.orig"; cp /etc/hosts "$HOSTS_SAVED"; fi
    echo "127.0.0.1 $node  # lit-papers slurm tests" >> /etc/hosts
  fi
done

start_daemon() {  # name pidfile command...
  local name=$1 pidfile=$2; shift 2
  "$@" || { log "$name failed to start"; cat "$T"/log/* "$T/munge-key/munged.log" 2>/dev/null | tail -30 >&2; exit 1; }
  for _ in $(seq 50); do [[ -s "$pidfile" ]] && break; sleep 0.2; done
  [[ -s "$pidfile" ]] || { log "$name wrote no pid file"; exit 1; }
  PIDS+=("$(cat "$pidfile")")
  log "started $name (pid ${PIDS[-1]})"
}
start_daemon munged "$T/munge-run/munged.pid" munged --key-file="$T/munge-key/munge.key" \
  --socket="$T/munge-run/munge.socket" --pid-file="$T/munge-run/munged.pid" \
  --log-file="$T/munge-key/munged.log" --seed-file="$T/munge-key/munged.seed"
start_daemon slurmctld "$T/slurmctld.pid" slurmctld -f "$SLURM_CONF"
start_daemon "slurmd n1" "$T/slurmd-n1.pid" slurmd -f "$SLURM_CONF" -N n1
start_daemon "slurmd n2" "$T/slurmd-n2.pid" slurmd -f "$SLURM_CONF" -N n2
for _ in $(seq 60); do [[ "$(sinfo -h -N -o '%t' 2>/dev/null | sort -u)" == "idle" ]] && break; sleep 1; done
sinfo -N >&2
[[ "$(sinfo -h -N -o '%t' | sort -u)" == "idle" ]] || { log "nodes did not come up"; tail -20 "$T"/log/*.log >&2; exit 1; }

# -- 3. the scenarios -----------------------------------------------------------------------------------------------
cd "$REPO"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" LIT_PAPERS_RUNS="$T/runs" WANDB_MODE=offline WANDB_SILENT=true
export LIT_PAPERS_DATA="${LIT_PAPERS_DATA:-$(cd "$REPO/.." && pwd)/shared/data}"
LOGS="$T/runs/slurm/logs"
TINY=(fit --config configs/resnet_cifar/tiny.yaml)

job_field() { scontrol show job -o "$1" 2>/dev/null | grep -o "$2=[^ ]*" | head -1 | cut -d= -f2; }
wait_job() {  # job [timeout]: until every task of the job has ended
  local job=$1 timeout=${2:-600} start=$SECONDS
  while ((SECONDS - start < timeout)); do
    [[ -z "$(squeue -h -j "$job" 2>/dev/null)" ]] && return 0
    sleep 2
  done
  log "job $job still running after ${timeout}s"; return 1
}
check() {  # scenario-name python-checks (stdin: python source reading env)
  "$PY" - || return 1
}
scenario() {  # name function
  local name=$1 start=$SECONDS
  log "=== scenario $name"
  if "$2"; then PASSED=$((PASSED + 1)); log "=== $name PASSED in $((SECONDS - start)) s"
  else FAILED=$((FAILED + 1)); log "=== $name FAILED after $((SECONDS - start)) s"; fi
  echo "$name $((SECONDS - start))" >> "$T/times"
}

DDP_JOB=""
ddp2() {
  DDP_JOB=$("$PY" -m lit_papers slurm --nodes 2 --job-name ddp2 -- "${TINY[@]}" --wandb false) || return 1
  wait_job "$DDP_JOB" || return 1
  local out="$LOGS/ddp2-$DDP_JOB.out"
  tr '\r' '\n' < "$out" | grep -E "lit-papers|MEMBER|Error|error" >&2
  [[ "$(job_field "$DDP_JOB" JobState)" == COMPLETED && "$(job_field "$DDP_JOB" ExitCode)" == 0:0 ]] || { log "job state $(job_field "$DDP_JOB" JobState) exit $(job_field "$DDP_JOB" ExitCode)"; return 1; }
  JOB="$DDP_JOB" OUT="$out" check <<'EOF'
import os, re, torch
out = open(os.environ["OUT"], errors="replace").read()
ranks = set(re.findall(r"\[lit-papers\] rank (\d)/(\d) node_rank (\d) local_rank 0 host (\w+)", out))
assert ranks == {("0", "2", "0", "n1"), ("1", "2", "1", "n2")}, ranks
assert "MEMBER: 2/2" in out and "distributed_backend=gloo" in out
run = os.path.join(os.environ["LIT_PAPERS_RUNS"], "resnet_cifar/tiny", os.environ["JOB"])
assert os.path.isfile(os.path.join(run, "FINISHED")), run
ckpt = torch.load(os.path.join(run, "checkpoints/last.ckpt"), map_location="cpu", weights_only=False)
assert ckpt["global_step"] == 12, ckpt["global_step"]
print(f"ddp2: world size 2, node ranks 0 (n1) and 1 (n2), finished at step {ckpt['global_step']}: {run}")
EOF
}

requeue() {
  [[ -n "$DDP_JOB" ]] || { log "needs the ddp2 run as the uninterrupted reference"; return 1; }
  local job out started="$T/requeue-started"
  # a probe marks the first training step (a file) and slows every step to 0.5 s, so the signal certainly lands
  # mid-training, however fast the machine (12 tiny steps otherwise take ~2 s); weights are unaffected
  job=$(PROBE_STARTED="$started" PROBE_STEP_S=0.5 "$PY" -m lit_papers slurm --nodes 2 --job-name requeue -- \
        "${TINY[@]}" "--trainer.callbacks+=tests.helpers.probes.SlowSteps") || return 1
  out="$LOGS/requeue-$job.out"
  for _ in $(seq 600); do [[ -e "$started" ]] && break; sleep 0.5; done
  [[ -e "$started" ]] || { log "training never started"; return 1; }
  log "scancel --signal=USR1 $job"
  scancel --signal=USR1 "$job" || return 1
  # requeued jobs wait ~2 min (BeginTime); start it sooner, but not at once: slurmd refuses a job credential issued
  # in the same second as the revocation of the job's previous one ("Job credential revoked", the attempt FAILS),
  # and the nodes must have finished cleaning up the first attempt (no longer "comp")
  for _ in $(seq 120); do
    if [[ "$(job_field "$job" Restarts)" == 1 && "$(job_field "$job" JobState)" == PENDING ]]; then
      sleep 3
      for _ in $(seq 60); do [[ "$(sinfo -h -N -o '%t' | sort -u)" == "idle" ]] && break; sleep 1; done
      scontrol update JobId="$job" StartTime=now
      break
    fi
    sleep 1
  done
  wait_job "$job" || return 1
  tr '\r' '\n' < "$out" | grep -E "lit-papers|Restoring|Error|error" >&2
  [[ "$(job_field "$job" JobState)" == COMPLETED && "$(job_field "$job" Restarts)" == 1 ]] || { log "state $(job_field "$job" JobState) restarts $(job_field "$job" Restarts)"; return 1; }
  JOB="$job" REF="$DDP_JOB" OUT="$out" check <<'EOF'
import glob, os, re, torch
out = open(os.environ["OUT"], errors="replace").read()
runs = os.path.join(os.environ["LIT_PAPERS_RUNS"], "resnet_cifar/tiny")
run = os.path.join(runs, os.environ["JOB"])
saved = re.findall(r"preempted at step (\d+): saved (\S+);", out)
assert len(saved) == 1, saved
step, path = int(saved[0][0]), saved[0][1]
assert 0 < step < 12, step
assert os.path.dirname(path) == run
# the HPC checkpoint was used, then removed once the finished run wrote a newer last.ckpt (issue 17, case 11)
assert not os.path.exists(path) and f"removed {path}: superseded by a newer last.ckpt" in out, path
assert f"resuming from {path}" in out and f"Restoring states from the checkpoint path at {path}" in out
assert "restarts 1" in out and os.path.isfile(os.path.join(run, "FINISHED"))
final = torch.load(os.path.join(run, "checkpoints/last.ckpt"), map_location="cpu", weights_only=False)
ref = torch.load(os.path.join(runs, os.environ["REF"], "checkpoints/last.ckpt"), map_location="cpu", weights_only=False)
assert final["global_step"] == ref["global_step"] == 12
diff = max((final["state_dict"][k].double() - ref["state_dict"][k].double()).abs().max().item() for k in ref["state_dict"])
assert all(torch.equal(final["state_dict"][k], ref["state_dict"][k]) for k in ref["state_dict"]), diff
run_id = open(os.path.join(run, "wandb_id.txt")).read().strip()
wandb_runs = glob.glob(os.path.join(run, "wandb", "offline-run-*"))
assert len(wandb_runs) == 2 and all(p.endswith("-" + run_id) for p in wandb_runs), (run_id, wandb_runs)
print(f"requeue: preempted at step {step}, requeued, resumed from {path}, same W&B run {run_id} in both "
      f"attempts, final weights equal to the uninterrupted run (max abs diff {diff})")
EOF
}

array() {
  local job sweep_dir
  job=$("$PY" -m lit_papers slurm --array 0-3 --job-name array -- sweep tests/launch/tiny_grid_sweep.yaml) || return 1
  wait_job "$job" 900 || return 1
  sweep_dir="$T/runs/sweeps/tiny_grid/slurm-$job"
  for f in "$LOGS"/array-"${job}"_*.out; do tr '\r' '\n' < "$f" | grep -E "lit-papers|Error|error" >&2; done
  cat "$sweep_dir/results.md" >&2
  SWEEP="$sweep_dir" check <<'EOF'
import csv, itertools, json, os, yaml
sweep = os.environ["SWEEP"]
state = json.load(open(os.path.join(sweep, "state.json")))
trials = state["trials"]
assert sorted(trials, key=int) == ["0", "1", "2", "3"], list(trials)
assert all(t["state"] == "finished" for t in trials.values()), {k: t["state"] for k, t in trials.items()}
lr, wd = "model.init_args.optimizer.init_args.lr", "model.init_args.optimizer.init_args.weight_decay"
points = {(t["params"][lr], t["params"][wd]) for t in trials.values()}
assert points == set(itertools.product([0.05, 0.2], [0.0001, 0.0005])), points
rows = list(csv.DictReader(open(os.path.join(sweep, "results.csv"))))
assert len(rows) == 4 and all(r["wandb_id"] and r["val/acc"] for r in rows)
best = max(rows, key=lambda r: (float(r["val/acc"]), -int(r["trial"])))
cfg = yaml.safe_load(open(os.path.join(sweep, "best.yaml")))
opt = cfg["model"]["init_args"]["optimizer"]["init_args"]
assert (opt["lr"], opt["weight_decay"]) == (float(best[lr]), float(best[wd])), (opt, best)
for k, t in trials.items():  # each task ran its own trial in its own folder, with the proposed values
    run_cfg = yaml.safe_load(open(os.path.join(t["run_dir"], "config.yaml")))
    o = run_cfg["model"]["init_args"]["optimizer"]["init_args"]
    assert (o["lr"], o["weight_decay"]) == (t["params"][lr], t["params"][wd]), k
print(f"array: 4 trials, 4 distinct grid points, best trial {best['trial']} val/acc {best['val/acc']}")
EOF
}

scenario ddp2 ddp2
scenario requeue requeue
scenario array array
log "wall times (s): $(tr '\n' ' ' < "$T/times")"
echo "slurm: $PASSED passed, $FAILED failed"
((FAILED == 0))
