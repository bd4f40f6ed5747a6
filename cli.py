"""lit-align command line: ``python cli.py {fit,validate,test,predict,evaluate} --config ...``.

Every component (model source, loss, reference strategy, data, callbacks, evaluation tasks) is
injected by ``class_path`` in YAML; ``--print_config`` shows a complete, runnable config and
``python cli.py fit --help`` / ``--model.loss.help lit_align.losses.DPO`` document every option.
"""

from __future__ import annotations

import re
from pathlib import Path

from lightning.pytorch.cli import LightningCLI, SaveConfigCallback

from lit_align.module import PreferenceModule
from lit_align.trainer import AlignTrainer

SECRET_KEY = re.compile(r"(api[_-]?key|secret|password|token)$", re.IGNORECASE)


def redact(node):
    """Null out values under secret-looking keys (``api_key``, ``hf_token`` ...), recursively.

    Config is meant to hold the NAME of an environment variable (``api_key_env``), never a key;
    this is the safety net for when someone writes the key itself.
    """
    if isinstance(node, dict):
        return {k: (None if isinstance(k, str) and SECRET_KEY.search(k) and isinstance(v, str) else redact(v)) for k, v in node.items()}
    if isinstance(node, list):
        return [redact(v) for v in node]
    return node


class RedactingSaveConfig(SaveConfigCallback):
    """Saves the resolved config of each run (``config.yaml`` in the run dir) with secrets removed."""

    def setup(self, trainer, pl_module, stage: str) -> None:
        # trainer.log_dir is a collective (it broadcasts rank 0's directory): read it here, on every
        # rank, because Lightning calls save_config on rank 0 only (reading it there deadlocks DDP).
        self._log_dir = Path(trainer.log_dir or trainer.default_root_dir)
        super().setup(trainer, pl_module, stage)

    def save_config(self, trainer, pl_module, stage: str) -> None:
        import yaml

        log_dir = self._log_dir
        if not trainer.is_global_zero:
            return
        log_dir.mkdir(parents=True, exist_ok=True)
        dumped = yaml.safe_load(self.parser.dump(self.config, skip_none=False))
        (log_dir / self.config_filename).write_text(yaml.safe_dump(redact(dumped), sort_keys=False))


class AlignCLI(LightningCLI):
    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return {**LightningCLI.subcommands(), "evaluate": {"model", "datamodule"}}


TRAINER_DEFAULTS = {
    # The data module brings its own DistributedSampler (exact mid-epoch resume needs it unwrapped).
    "use_distributed_sampler": False,
    "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": "runs", "name": "default"}},
}


def default_callbacks() -> list:
    """Always on (LightningCLI appends these to the config's callbacks): checkpoints, export, summary."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    from callbacks import HFExport, RunSummary

    return [ModelCheckpoint(save_last=True, save_top_k=0), HFExport(), RunSummary()]


def main(args: list[str] | None = None) -> AlignCLI:
    return AlignCLI(
        PreferenceModule,
        None,  # data is an optional class_path group: evaluate can run without it
        trainer_class=AlignTrainer,
        save_config_callback=RedactingSaveConfig,
        save_config_kwargs={"overwrite": True},
        trainer_defaults={**TRAINER_DEFAULTS, "callbacks": default_callbacks()},
        args=args,
    )


if __name__ == "__main__":
    main()
