"""Child entry point: ``python -m benchmarks.run_one FRAMEWORK CONFIG_JSON ARGS_JSON`` runs one training run.

A fresh process per run, so peak RSS (getrusage maxrss) belongs to that run alone.
"""

from __future__ import annotations

import json
import sys

from benchmarks.configs import Config
from benchmarks.measure import emit


def main() -> None:
    framework, config, args = sys.argv[1], Config(**json.loads(sys.argv[2])), json.loads(sys.argv[3])
    import torch

    torch.manual_seed(0)
    torch.set_num_threads(args.pop("threads"))
    if torch.cuda.is_available():  # TF32 for fp32 matmuls left outside autocast (e.g. a reference cache pass)
        torch.set_float32_matmul_precision("high")
    if framework == "lit":
        from benchmarks.run_lit import run
    else:
        from benchmarks.run_trl import run
    emit(run(config, **args))


if __name__ == "__main__":
    main()
