"""Export the tuned policy as a Hugging Face directory (weights + tokenizer) at the end of fit."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import lightning as L

from lit_align.checkpoint_io import refuse_non_finite


def run_dir(trainer: L.Trainer) -> Path:
    return Path(trainer.log_dir or trainer.default_root_dir)


class HFExport(L.Callback):
    """Writes ``<run dir>/<dirname>`` with ``save_pretrained``; loadable by AutoModelForCausalLM.

    The directory is written under a temporary name and renamed when complete, so an interrupted
    export never looks like a finished one. Weights with a NaN / inf are refused (one line), not exported.
    """

    def __init__(self, dirname: str = "hf", safe_serialization: bool = True) -> None:
        """
        Args:
            dirname: Folder of the export inside the run directory (``trainer.log_dir``).
            safe_serialization: Write safetensors (True) or PyTorch pickles.
        """
        self.dirname = dirname
        self.safe_serialization = safe_serialization
        self.path: Path | None = None

    def export(self, trainer: L.Trainer, pl_module: L.LightningModule) -> Path | None:
        from lit_align.sharding import full_state_dict, policy_state

        state = full_state_dict(trainer)  # collective: gathers full weights when sharded (FSDP2, FSDP)
        directory = run_dir(trainer)  # collective too (trainer.log_dir broadcasts): before the rank check
        if not trainer.is_global_zero:
            return None
        target = directory / self.dirname
        # a diverged policy is no result: refuse it rather than publish NaN weights as the run's model
        refuse_non_finite(policy_state(state), f"the policy for export to {target}")
        tmp = target.with_name(target.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        pl_module.policy.save_pretrained(tmp, state_dict=policy_state(state), safe_serialization=self.safe_serialization)
        if pl_module.tokenizer is not None:
            pl_module.tokenizer.save_pretrained(tmp)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
        self.path = target
        return target

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.export(trainer, pl_module)
