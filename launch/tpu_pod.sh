#!/usr/bin/env bash
# Runs a darkjax config on every host of a Cloud TPU pod slice (one process per host;
# jax.distributed finds the coordinator and process ids from the TPU metadata). docs/multihost.md.
#   launch/tpu_pod.sh [--dry-run] TPU_NAME ZONE configs/lift_arid.py gs://bucket/workdir [flags...]
# The dataset must be prepared where the config points (e.g. gs://bucket/data/..., or a disk
# mounted on every host); the repo is expected at ~/darkjax with its .venv on every host.
# $DARKJAX_DATA, when set here, is set on every host too (DARKJAX_DATA=gs://bucket/data ...).
# --dry-run prints the command instead of running it.
set -euo pipefail
dry_run=0
if [ "${1:-}" = "--dry-run" ]; then dry_run=1; shift; fi
if [ $# -lt 4 ]; then
  echo "usage: $0 [--dry-run] TPU_NAME ZONE CONFIG WORKDIR [flags...]" >&2; exit 2
fi
tpu=$1 zone=$2 config=$3 workdir=$4; shift 4
data_env=""
if [ -n "${DARKJAX_DATA:-}" ]; then
  printf -v data_env 'DARKJAX_DATA=%q ' "$DARKJAX_DATA"
fi
remote="cd ~/darkjax && . .venv/bin/activate && ${data_env}python -m darkjax.main --config=$config --workdir=$workdir --jax_distributed $*"
command=(gcloud compute tpus tpu-vm ssh "$tpu" --zone "$zone" --worker=all --command "$remote")
if [ "$dry_run" = 1 ]; then
  printf '%q ' "${command[@]}"; echo
  exit 0
fi
"${command[@]}"
