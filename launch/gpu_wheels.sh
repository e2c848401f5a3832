#!/usr/bin/env bash
# Wheels of what darkjax imports that the lent GPU machines' image lacks (it has jax, flax, optax,
# orbax-checkpoint, chex, torch, numpy, opencv-python-headless, ...; nothing can be installed there
# from the network): downloaded here for Python 3.12 / manylinux x86-64 into DIR (default .whl,
# git-ignored), for `launch/bench_gpu.sh` to install with `pip install --no-deps --target`.
#   bash launch/gpu_wheels.sh [DIR]
# The list is darkjax's run-time requirement closure (pyproject.toml) less the image's packages,
# without av (video decoding, 36 MB: `bench` never decodes video) and opencv-contrib (TV-L1 flow;
# the image's opencv-python-headless has the rest of cv2). promise has no wheel on PyPI: built here.
set -euo pipefail
dir=${1:-.whl}
python=${PYTHON:-python3}
mkdir -p "$dir"
wheels=(array-record==0.8.6 dm-tree==0.1.10 docstring-parser==0.18.0 google-crc32c==1.9.0
        googleapis-common-protos==1.76.0 grain==0.2.18 immutabledict==4.3.1 ml-collections==1.1.0
        portpicker==1.6.0 simple-parsing==0.1.9 tensorboardx==2.6.5 tensorflow-datasets==4.9.10
        tensorflow-metadata==1.21.0 termcolor==3.3.0 toml==0.10.2)
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 \
    manylinux2014_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$p")
done
"$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp "${platforms[@]}" -d "$dir" "${wheels[@]}"
"$python" -m pip wheel -q --no-deps -w "$dir" promise==2.3
du -sh "$dir"
