#!/usr/bin/env bash
# Runs a darkjax config on every host of a Cloud TPU pod slice (one process per host;
# jax.distributed finds the coordinator and process ids from the TPU metadata). docs/multihost.md.
#   launch/tpu_pod.sh [--dry-run] TPU_NAME ZONE configs/lift_arid.py gs://bucket/workdir [flags...]
# The dataset must be prepared where the config points (e.g. gs://bucket/data/..., or a disk
# mounted on every host); the repo is expected at ~/darkjax with its .venv on every host.
# $DARKJAX_DATA, when set here, is set on every host too (DARKJAX_DATA=gs://bucket/data ...).
# The run is started detached on every host (nohup, its own session), its output in
# ~/darkjax-logs/<workdir name>-<time>.log there: it outlives this ssh session (a closed laptop or
# a dropped connection would otherwise hang it up); the script prints how to follow host 0's log.
# --attach keeps it in the foreground of the ssh session instead (a SIGHUP then saves a checkpoint
# and stops the run, darkjax/preemption.py). --dry-run prints the command instead of running it.
set -euo pipefail
usage="usage: $0 [--dry-run] [--attach] TPU_NAME ZONE CONFIG WORKDIR [flags...]"
dry_run=0 attach=0
while [ "${1:-}" != "${1#--}" ]; do   # this script's options, before TPU_NAME
  case $1 in
    --dry-run) dry_run=1 ;;
    --attach) attach=1 ;;
    *) echo "$0: unknown option $1 (before TPU_NAME: --dry-run, --attach)" >&2
       echo "$usage" >&2; exit 2 ;;
  esac
  shift
done
if [ $# -lt 4 ]; then
  echo "$usage" >&2; exit 2
fi
for word in "${@:5}"; do   # put after the positionals, it would reach darkjax.main on every host
  case $word in
    --dry-run|--attach)
      echo "$0: $word goes before TPU_NAME (flags after WORKDIR are darkjax.main's)" >&2; exit 2 ;;
  esac
done
tpu=$1 zone=$2 config=$3 workdir=$4; shift 4
data_env=""
if [ -n "${DARKJAX_DATA:-}" ]; then
  printf -v data_env 'DARKJAX_DATA=%q ' "$DARKJAX_DATA"
fi
# every word shell-quoted: the hosts' shells parse the command again
train="python -m darkjax.main$(printf ' %q' "--config=$config" "--workdir=$workdir" \
  --jax_distributed "$@")"
if [ "$attach" = 1 ]; then
  remote="cd ~/darkjax && . .venv/bin/activate && ${data_env}$train"
else
  name=$(basename "${workdir%/}")
  log="darkjax-logs/${name//[^A-Za-z0-9._-]/_}-$(date -u +%Y%m%d-%H%M%S).log"
  remote="cd ~/darkjax && . .venv/bin/activate && mkdir -p ~/darkjax-logs && { ${data_env}nohup"
  remote+=" setsid $train < /dev/null > ~/$log 2>&1 & } && echo \"\$(hostname): started, log"
  remote+=" ~/$log\""
fi
command=(gcloud compute tpus tpu-vm ssh "$tpu" --zone "$zone" --worker=all --command "$remote")
if [ "$dry_run" = 1 ]; then
  printf '%q ' "${command[@]}"; echo
  exit 0
fi
"${command[@]}"
if [ "$attach" = 0 ]; then
  echo "follow host 0: gcloud compute tpus tpu-vm ssh $tpu --zone $zone --worker=0" \
       "--command 'tail -f ~/$log'"
fi
