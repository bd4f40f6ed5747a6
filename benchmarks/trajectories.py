"""Loss trajectories of every reference strategy and loss path, for checking that a refactor changes no number.

Runs short fits of the tiny model (each loss / reference / layout path once) and writes, per case,
every logged training value at every step, the validation metrics and a digest of the final policy
weights. Run it at two commits (each with its own copy of this script) and compare the files: a
refactor that only moves code must leave them identical (``--compare`` prints every difference and
exits 1 on any).

    python -m benchmarks.trajectories --out /tmp/before.json          # at the old commit
    python -m benchmarks.trajectories --out /tmp/after.json --compare /tmp/before.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import tempfile
from pathlib import Path


def cases(tmp: Path) -> dict:
    """name -> (reference, loss, model source, data-module options): one case per code path."""
    from lit_align.data.packing import PackedPairCollator, SharedPromptCollator
    from lit_align.losses import DPO, IPO, SFT, EpsilonDPO, LengthDesensitized, LikelihoodDPO, SimPO, WeightedLoss, WPOWeighted
    from lit_align.models import TinyModel
    from lit_align.peft_config import LoraSource
    from lit_align.reference import (
        AdapterDisabledReference, CachedReference, FrozenReference, MovingReference, MRPOReference, MultiReference,
        NoReference, UnconditionalReference,
    )

    def tiny(seed: int = 0) -> TinyModel:
        return TinyModel(hidden_size=32, num_layers=1, num_heads=2, max_position_embeddings=128, seed=seed)

    return {
        "dpo_frozen": (lambda: FrozenReference(), lambda: DPO(), tiny, {}),
        "dpo_frozen_packed": (lambda: FrozenReference(), lambda: DPO(), tiny, {"collator": PackedPairCollator}),
        "dpo_frozen_shared_prompt": (lambda: FrozenReference(), lambda: DPO(), tiny, {"collator": SharedPromptCollator}),
        "dpo_stronger_frozen": (lambda: FrozenReference(source=tiny(1)), lambda: DPO(), tiny, {}),
        "trdpo_soft": (lambda: MovingReference(alpha=0.6, tau=2), lambda: DPO(), tiny, {}),
        "trdpo_hard": (lambda: MovingReference(alpha=1.0, tau=3), lambda: DPO(), tiny, {}),
        "epsilon_dpo": (lambda: FrozenReference(), lambda: EpsilonDPO(beta=0.1, eps=0.05), tiny, {}),
        "epsilon_dpo_moving_packed": (lambda: MovingReference(alpha=0.5, tau=2), lambda: EpsilonDPO(beta=0.1, eps=0.05), tiny,
                                      {"collator": PackedPairCollator}),
        "cached": (lambda: CachedReference(cache_dir=str(tmp / "cache")), lambda: DPO(), tiny, {}),
        "cached_unconditional": (lambda: CachedReference(cache_dir=str(tmp / "cache_u"), unconditional=True),
                                 lambda: LikelihoodDPO(), tiny, {}),
        "unconditional": (lambda: UnconditionalReference(), lambda: LikelihoodDPO(), tiny, {}),
        "multi_adaptive": (lambda: MultiReference(sources=[None, tiny(1)], adaptive=True), lambda: IPO(), tiny, {}),
        "mrpo": (lambda: MRPOReference(source=tiny(1)), lambda: DPO(), tiny, {}),
        "none_simpo": (lambda: NoReference(), lambda: SimPO(), tiny, {}),
        "sft": (lambda: NoReference(), lambda: SFT(), tiny, {}),
        "ld_dpo_reference_too": (lambda: FrozenReference(), lambda: LengthDesensitized(DPO(), reference_too=True), tiny, {}),
        "wpo_weighted_sum": (lambda: FrozenReference(), lambda: WeightedLoss([WPOWeighted(DPO()), SFT()], [1.0, 0.5]), tiny, {}),
        "lora_adapter": (lambda: AdapterDisabledReference(), lambda: DPO(),
                         lambda: LoraSource(tiny(), r=4, alpha=8), {}),
        "lora_trdpo": (lambda: MovingReference(alpha=0.5, tau=2), lambda: DPO(),
                       lambda: LoraSource(tiny(), r=4, alpha=8), {}),
    }


class Recorder:
    """Every logged training value after each step (``trainer.callback_metrics``)."""

    def __init__(self) -> None:
        import lightning as L

        steps: list[dict[str, float]] = []

        class _Callback(L.Callback):
            def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
                steps.append({k: float(v) for k, v in sorted(trainer.callback_metrics.items()) if k.startswith("train/")})

        self.steps = steps
        self.callback = _Callback()


def digest(module) -> str:
    h = hashlib.sha256()
    for name, value in sorted(module.policy.state_dict().items()):
        h.update(name.encode())
        h.update(value.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def run_case(name: str, case, tmp: Path, steps: int) -> dict:
    import lightning as L

    from benchmarks.demos.sort_task import write_task
    from lit_align.data.datamodule import PreferenceDataModule
    from lit_align.module import PreferenceModule
    from lit_align.trainer import quiet_trainer

    make_reference, make_loss, make_source, dm_kwargs = case
    paths = write_task(tmp / "data", train=64, val=16, test=16)
    L.seed_everything(0, verbose=False)
    module = PreferenceModule(model=make_source(), loss=make_loss(), reference=make_reference(), lr=1e-2,
                              warmup_steps=0, schedule="constant")
    data = PreferenceDataModule(train_path=str(paths["train"]), val_path=str(paths["val"]), batch_size=4,
                                max_length=64, max_prompt_length=32, chat_template=False, **dm_kwargs)
    recorder = Recorder()
    trainer = quiet_trainer(max_steps=steps, num_sanity_val_steps=0, limit_val_batches=0, deterministic=True,
                            callbacks=[recorder.callback], default_root_dir=str(tmp / name))
    trainer.fit(module, datamodule=data)
    val = quiet_trainer(default_root_dir=str(tmp / name)).validate(module, datamodule=data, verbose=False)
    return {"steps": recorder.steps, "val": {k: float(v) for k, v in sorted(val[0].items())}, "policy": digest(module)}


def compare(now: dict, before: dict) -> list[str]:
    """Every difference (bit-exact: floats compared with ==, NaN equal to NaN)."""
    problems = []
    for name in sorted(set(now) | set(before)):
        if name not in now or name not in before:
            problems.append(f"{name}: only in {'before' if name in before else 'now'}")
            continue
        a, b = now[name], before[name]
        if a["policy"] != b["policy"]:
            problems.append(f"{name}: final policy weights differ")
        for label, xs, ys in [("val", [a["val"]], [b["val"]])] + [("step", a["steps"], b["steps"])]:
            if len(xs) != len(ys):
                problems.append(f"{name}: {len(xs)} {label} records vs {len(ys)}")
            for i, (x, y) in enumerate(zip(xs, ys)):
                for key in sorted(set(x) | set(y)):
                    u, v = x.get(key), y.get(key)
                    same = u == v or (u is not None and v is not None and math.isnan(u) and math.isnan(v))
                    if not same:
                        problems.append(f"{name} {label} {i} {key}: {u!r} vs {v!r}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="JSON file to write")
    parser.add_argument("--compare", help="an earlier --out file: print every difference, exit 1 on any")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--only", nargs="*", help="case names (default: all)")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)  # thread count can change float reduction order
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, case in cases(Path(tmp)).items():
            if args.only and name not in args.only:
                continue
            results[name] = run_case(name, case, Path(tmp), args.steps)
            print(f"{name}: loss {[round(s['train/loss'], 6) for s in results[name]['steps']]}", flush=True)
    Path(args.out).write_text(json.dumps(results, indent=1, sort_keys=True))
    if args.compare:
        before = json.loads(Path(args.compare).read_text())
        problems = compare(results, {k: v for k, v in before.items() if k in results or not args.only})
        print("\n".join(problems) if problems else f"identical to {args.compare}: {len(results)} cases")
        return 1 if problems else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
