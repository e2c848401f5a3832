#!/usr/bin/env bash
# Runs a darkjax config on every host of a Cloud TPU pod slice (one process per host).
#   launch/tpu_pod.sh TPU_NAME ZONE configs/lift_arid.py gs://bucket/workdir [extra flags...]
# Datasets must be prepared beforehand at the path the config names (e.g. a mounted disk or
# $DARKJAX_DATA on every host); the repo is expected at ~/darkjax on every host.
set -euo pipefail
if [ $# -lt 4 ]; then
  echo "usage: $0 TPU_NAME ZONE CONFIG WORKDIR [flags...]" >&2; exit 2
fi
tpu=$1 zone=$2 config=$3 workdir=$4; shift 4
gcloud compute tpus tpu-vm ssh "$tpu" --zone "$zone" --worker=all --command "
  cd ~/darkjax && . .venv/bin/activate &&
  python -m darkjax.main --config=$config --workdir=$workdir --jax_distributed $*"
