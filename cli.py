"""lit-align command line: ``python cli.py {fit,validate,test,predict,evaluate} --config ...``.

Every component (model source, loss, reference strategy, data, callbacks, evaluation tasks) is
injected by ``class_path`` in YAML; ``--print_config`` shows a complete, runnable config and
``python cli.py fit --help`` / ``--model.loss.help lit_align.losses.DPO`` document every option.
"""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback

from evals.redaction import redact, redact_text
from lit_align.checkpoint_io import redact_hyperparameters
from lit_align.module import PreferenceModule
from lit_align.run_dirs import check_fit_dir, evaluation_dir, fit_dir, resolved_logger_version
from lit_align.trainer import AlignTrainer

CHECKPOINT_DEFAULTS = {"save_last": True, "save_top_k": 0, "every_n_train_steps": 50}
"""The run's ModelCheckpoint (config group ``checkpoint``): ``last.ckpt`` every 50 optimizer steps and
at the end, so a run killed mid-epoch resumes with ``--ckpt_path <run>/checkpoints/last.ckpt``
(bit-exactly: tests/test_kill_resume.py). Large models: raise ``checkpoint.every_n_train_steps``."""

EVALUATION_FOLDERS = {"evaluate": "eval", "validate": "validate", "test": "test", "predict": "predict"}
"""Subcommands that read a fit's config but must not write over its files, and the folder of the run
directory their own versions go to (``<run>/eval/version_0`` ...)."""

NOT_SAVED = ("overwrite",)
"""Switches of one invocation, left out of the saved config.yaml (a rerun from it must opt in again)."""


class RedactingArgumentParser(LightningArgumentParser):
    """Argument errors quote the offending values (a whole task list, say): credentials are masked first."""

    def error(self, message: str, ex: Exception | None = None):
        return super().error(redact_text(message), ex)


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
        for key in NOT_SAVED:
            dumped.pop(key, None)
        version = resolved_logger_version(trainer) if stage == "fit" else None
        logger = (dumped.get("trainer") or {}).get("logger")
        if version not in (None, "") and isinstance(logger, dict) and logger.get("init_args", {}).get("version") is None:
            # an auto-numbered run (version_3) records its number, so that `evaluate --config <run>/config.yaml`
            # finds this run directory rather than the next free one
            logger.setdefault("init_args", {})["version"] = version
        (log_dir / self.config_filename).write_text(yaml.safe_dump(redact(dumped), sort_keys=False))


class AlignCLI(LightningCLI):
    """LightningCLI plus ``evaluate``; an evaluation writes into a directory of its own, a fit refuses
    to replace another run's files (lit_align.run_dirs)."""

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return {**LightningCLI.subcommands(), "evaluate": {"model", "datamodule"}}

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({f"checkpoint.{k}": v for k, v in CHECKPOINT_DEFAULTS.items()})
        parser.add_argument("--overwrite", type=bool, default=False,
                            help="fit: allow writing into a run directory that already holds a run's files (config.yaml, "
                                 "checkpoints/, hf/, metrics.csv); without it such a fit stops, unless it resumes with --ckpt_path")

    def instantiate_classes(self) -> None:
        # jsonargparse reports a failed instantiation with the whole offending value (a task list with
        # its base_url, say): mask credentials and drop the chained original, which holds them too
        try:
            super().instantiate_classes()
        except (ValueError, TypeError) as err:
            message = redact_text(str(err))
            if message == str(err):
                raise
            raise type(err)(message) from None
        redact_hyperparameters(self.model, self.datamodule)  # hparams.yaml and checkpoints record them

    def instantiate_trainer(self, **kwargs):
        folder = EVALUATION_FOLDERS.get(self.subcommand)
        if folder is None:
            return super().instantiate_trainer(**kwargs)
        # These read a fit's config, whose logger points at the fit's run directory: log (config.yaml,
        # hparams.yaml, metrics.csv) and write results into <run>/<folder>/version_N instead (or --output_dir).
        from lightning.pytorch.loggers import CSVLogger

        trainer_config = self._get(self.config_init, "trainer", default={})
        logger = trainer_config.get("logger")
        subcommand = self.config_init[self.subcommand]
        target = evaluation_dir(logger, trainer_config.get("default_root_dir"), subcommand.get("output_dir"), folder)
        if "output_dir" in subcommand:
            subcommand["output_dir"] = str(target)
        if logger is False or logger is None:
            kwargs["default_root_dir"] = str(target)
        else:
            kwargs["logger"] = CSVLogger(save_dir=str(target), name="", version="")
        return super().instantiate_trainer(**kwargs)

    def before_fit(self) -> None:
        config = self.config_init[self.subcommand]
        check_fit_dir(fit_dir(self.trainer), resuming=config.get("ckpt_path") is not None, overwrite=bool(config.get("overwrite")))


TRAINER_DEFAULTS = {
    # The data module brings its own DistributedSampler (exact mid-epoch resume needs it unwrapped).
    "use_distributed_sampler": False,
    "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": "runs", "name": "default"}},
}


def default_callbacks() -> list:
    """Always on (LightningCLI appends these to the config's callbacks): export, summary. (The
    ModelCheckpoint is the ``checkpoint`` config group, see CHECKPOINT_DEFAULTS.)"""
    from callbacks import HFExport, RunSummary

    return [HFExport(), RunSummary()]


def main(args: list[str] | None = None) -> AlignCLI:
    return AlignCLI(
        PreferenceModule,
        None,  # data is an optional class_path group: evaluate can run without it
        trainer_class=AlignTrainer,
        save_config_callback=RedactingSaveConfig,
        parser_class=RedactingArgumentParser,
        save_config_kwargs={"overwrite": True},
        trainer_defaults={**TRAINER_DEFAULTS, "callbacks": default_callbacks()},
        args=args,
    )


if __name__ == "__main__":
    main()
