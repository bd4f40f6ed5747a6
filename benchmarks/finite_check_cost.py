"""Per-step cost of the non-finite check with gradients folded in, against the loss-only check and no check.

``PreferenceModule.stop_if_not_finite`` runs once per optimizer step: the micro-batches' losses and
the gradients' max-abs norms folded into one flag, one host sync. With ``check_gradients = False`` it
checks the losses alone (what every step paid before gradients were checked, also one sync); the
"no check" arm skips it (no sync). Fits
of a tiny model alternate between the two in one process, so machine load drifts hit both; the
time of each training batch (forward, backward, check, optimizer step) is taken by a callback, and
each arm's median per-step time over all rounds is reported with their ratio.

    OMP_NUM_THREADS=1 python -m benchmarks.finite_check_cost --steps 300 --rounds 6
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import lightning as L


class StepTimer(L.Callback):
    """Wall time of each training batch, from its start to its end (the optimizer step included)."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._start = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.times.append(time.perf_counter() - self._start)


ARMS = ("no check", "loss only", "loss + gradients")
CHECK_TIMES: dict[str, list[float]] = {}


def one_fit(train: Path, steps: int, arm: str, hidden_size: int) -> list[float]:
    from lit_align.data import PreferenceDataModule
    from lit_align.models import TinyModel
    from lit_align.module import PreferenceModule
    from lit_align.trainer import quiet_trainer

    L.seed_everything(0, verbose=False)
    module = PreferenceModule(model=TinyModel(hidden_size=hidden_size, num_layers=2, num_heads=2), lr=1e-4)
    module.check_gradients = arm == "loss + gradients"
    check = module.stop_if_not_finite
    if arm == "no check":  # no check, no sync at all: the floor
        check = lambda optimizer: module._unchecked.clear()  # noqa: E731
    check_times = CHECK_TIMES.setdefault(arm, [])

    def timed_check(optimizer) -> None:  # the check's own time, apart from the step's (less noisy on a busy machine)
        start = time.perf_counter()
        check(optimizer)
        check_times.append(time.perf_counter() - start)

    module.stop_if_not_finite = timed_check
    data = PreferenceDataModule(train_path=str(train), batch_size=4, max_length=64, max_prompt_length=32, chat_template=False)
    timer = StepTimer()
    quiet_trainer(max_steps=steps, callbacks=[timer], num_sanity_val_steps=0, limit_val_batches=0).fit(module, data)
    return timer.times[5:]  # the first steps warm allocators and caches


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="optimizer steps per fit")
    parser.add_argument("--rounds", type=int, default=6, help="fits per arm, the arms' order rotating")
    parser.add_argument("--hidden_size", type=int, default=64)
    args = parser.parse_args(argv)
    from benchmarks.demos.sort_task import write_task

    with tempfile.TemporaryDirectory() as tmp:
        train = write_task(Path(tmp), train=2048, val=8, test=8)["train"]
        times: dict[str, list[float]] = {arm: [] for arm in ARMS}
        for round_ in range(args.rounds):
            for arm in ARMS[round_ % 3:] + ARMS[:round_ % 3]:  # rotate which arm goes first
                times[arm] += one_fit(train, args.steps, arm, args.hidden_size)
    medians = {arm: statistics.median(t) for arm, t in times.items()}
    ratios = {f"{arm} / no check": medians[arm] / medians["no check"] for arm in ARMS[1:]}
    ratios["loss + gradients / loss only"] = medians["loss + gradients"] / medians["loss only"]
    for arm, value in medians.items():
        print(f"{arm:>17}: median {value * 1e3:.3f} ms/step over {len(times[arm])} steps")
    for name, ratio in ratios.items():
        print(f"ratio {name}: {ratio:.4f}")
    checks = {arm: statistics.median(t) for arm, t in CHECK_TIMES.items()}
    for arm, value in checks.items():
        print(f"{arm:>17}: the check itself, median {value * 1e6:.1f} us/step "
              f"({value / medians['no check'] * 100:.2f}% of a no-check step)")
    return {"medians_s": medians, "ratios": ratios, "check_medians_s": checks}


if __name__ == "__main__":
    main()
