#!/usr/bin/env bash
# One H100 invocation of the TRL comparison for one model shape, both sequence lengths:
#
#   bash benchmarks/gpu.sh qwen2.5-0.5b     # about 8 to 9.5 minutes
#   bash benchmarks/gpu.sh llama3.2-1b      # about 8 to 9.5 minutes
#
# Writes OUTDIR/gpu_<preset>.md (the table), .json (every run) and .log (progress), OUTDIR being the
# second argument, else $OUT (the device runner's return folder), else benchmarks/results. The report
# is rewritten after every run, so a cut-short invocation still returns what it measured.
# PYTHON picks the interpreter (default: .venv/bin/python if present, else python).
# EXTRA is appended to the harness's arguments (e.g. EXTRA=--checkpointing if a row ran out of memory).
set -euo pipefail
cd "$(dirname "$0")/.."

PRESET=${1:?usage: benchmarks/gpu.sh qwen2.5-0.5b|llama3.2-1b [OUTDIR]}
OUTDIR=${2:-${OUT:-benchmarks/results}}
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python; fi
fi
mkdir -p "$OUTDIR"
LOG="$OUTDIR/gpu_$PRESET.log"

# The offline GPU image lacks TRL, datasets, torchdata ...: install the wheels carried in .wheels/
# (made here by benchmarks/gpu_wheels.sh; run(carry=[".wheels"])).
if [[ -d .wheels ]] && ! "$PYTHON" -c "import trl, datasets, torchdata, jsonargparse" 2>/dev/null; then
  "$PYTHON" -m pip install -q --no-index --no-deps .wheels/*.whl
fi

# Fail in seconds, not minutes: a CPU-only torch would run the 0.5B model on the CPU.
"$PYTHON" - <<'EOF' 2>&1 | tee "$LOG"
import torch, transformers, trl, lightning
assert torch.cuda.is_available(), "no CUDA device visible to torch " + torch.__version__
try:
    import triton
    tri = triton.__version__
except ImportError:
    tri = "missing (TRL's fused log-prob head falls back to scoring every position)"
print(f"{torch.cuda.get_device_name()}: torch {torch.__version__}, transformers {transformers.__version__}, "
      f"trl {trl.__version__}, lightning {lightning.__version__}, triton {tri}")
EOF

# 15 steps (3 warm-up) per run; per length, each round is 4 lit-align runs and 2 TRL runs of about
# 15-30 s each (process start, imports, model load and 15 steps of 0.2-0.4 s). Round 0 of both
# lengths always runs; later rounds start only while they are predicted to end within 510 s.
timeout --signal=TERM 585 "$PYTHON" -m benchmarks.trl_vs_lit \
  --preset "$PRESET" --seq-len 1024 2048 \
  --configs live cached live+prompt-sharing cached+packing+prompt-sharing \
  --bf16 --attn sdpa \
  --steps 15 --warmup 3 --rounds 3 --time-budget 510 \
  --lr 1e-5 --peak-tflops 989 \
  --workdir "/tmp/lit_align_bench_$PRESET" --out "$OUTDIR/gpu_$PRESET.md" ${EXTRA:-} 2>&1 | tee -a "$LOG"
