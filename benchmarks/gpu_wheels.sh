#!/usr/bin/env bash
# Wheels the GPU machine lacks, fetched here (it has no network) into .wheels/ (git-ignored).
#
#   bash benchmarks/gpu_wheels.sh            # on this machine, once
#   run(carry=[".wheels"], command="python3 -m pip install -q --no-index --no-deps .wheels/*.whl && ...")
#
# The GPU image already holds torch, lightning, transformers, accelerate, peft, pyarrow, pandas,
# xxhash, rich, safetensors and tokenizers; lit-align's data path and TRL need these on top, as
# pure-Python wheels for the image's Python (3.12), 3 MB in all.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
rm -rf .wheels && mkdir -p .wheels
"$python" -m pip download -q --no-deps --only-binary=:all: --python-version "${GPU_PYTHON_VERSION:-3.12}" -d .wheels \
  trl==1.16.0 datasets torchdata dill multiprocess jsonargparse docstring-parser typeshed-client 2>&1 \
  | { grep -v "is ignored: it is neither a file nor a directory" || true; }
ls .wheels
