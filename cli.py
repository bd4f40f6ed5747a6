"""lit-align command line: ``python cli.py {fit,validate,test,predict,evaluate,export} --config ...``.

Every component (model source, loss, reference strategy, data, callbacks, evaluation tasks) is
injected by ``class_path`` in YAML; ``--print_config`` shows a complete, runnable config and
``python cli.py fit --help`` / ``--model.loss.help lit_align.losses.DPO`` document every option.

Errors (``run``, the entry point): a problem with the input (a setting, an impossible combination,
a data row, a missing file or model, a non-finite loss) ends the run with ONE line on stderr,
``error: <message naming the file / row / key / value>``, and exit status 1 (2 for a command line
the parser refuses). What counts as the input's fault: ``lit_align.errors.UserError`` (``DataError``,
``ConfigError`` ... raised where the problem is found, with its location in the message) and
``evals.base.EvalError`` (an evaluation input, or a task that failed: ``cli.py evaluate`` exits 1
when results.json has ``complete: false``),
``ValueError`` and ``OSError`` (missing / unreadable files), Lightning's ``MisconfigurationException``
(a setting it refuses once the data is known; those it refuses at construction are ``ConfigError``s,
``lit_align.settings``), and ``KeyboardInterrupt`` (status 130).
A ``ValueError`` / ``OSError`` that is not a ``UserError`` may come from a library, so its line
also names the exception type and where it was raised. Anything else (``TypeError``,
``AttributeError``, a torch ``RuntimeError`` ...) is taken for a bug and keeps its traceback.
``--debug`` (anywhere on the command line) or ``LIT_ALIGN_DEBUG=1`` re-raises every error with its
traceback. Exceptions raised inside ``Trainer.fit`` reach here unwrapped (Lightning re-raises them
after its teardown); under several processes every rank reports its own line and exits (the
non-finite check of losses and gradients is all-reduced, so all ranks stop at the same step).

Checkpoints (docs/resume-and-checkpoints.md): ``--ckpt_path`` is verified against its checksum file
and loaded weights-only, and its recorded settings are compared with the config's before anything
is built (``lit_align.resume_config``; ``--use_checkpoint_config true`` takes the checkpoint's).
"""

from __future__ import annotations

import errno
import logging
import os
import re
import sys
import traceback
import warnings
from pathlib import Path

import lightning as L
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback

from callbacks.evaluation import evaluate_checkpoint
from callbacks.hf_export import HFExport, export_checkpoint
from callbacks.training_monitor import TrainingMonitor
from evals.base import EvalError, EvalTask
from lit_align.checkpoint_files import FULL_DISK_ERRNOS, load_checkpoint
from lit_align.checkpoint_io import redact_hyperparameters
from lit_align.config_yaml import install as install_yaml_loader
from lit_align.errors import ConfigError, UserError
from lit_align.models.limits import check_model_fits_data
from lit_align.module import PreferenceModule
from lit_align.redaction import redact, redact_text
from lit_align.resume_config import (DATA_CONFIG_KEY, EVALUATED, SCORED_WITH, SWITCH, TRAINER_CONFIG_KEY, announce_differences,
                                     differences, plain, refuse_differences, trained_by)
from lit_align.run_dirs import RunDirLock, check_fit_dir, clear_replaced_run, first_process, evaluation_dir, fit_dir, resolved_logger_version
from lit_align.settings import check_checkpoint_settings
from lit_align.trainer import SPECIAL_CKPT_PATHS, AlignTrainer, check_ckpt_path

CHECKPOINT_DEFAULTS = {"save_last": True, "save_top_k": 0, "every_n_train_steps": 50}
"""The run's ModelCheckpoint (config group ``checkpoint``): ``last.ckpt`` every 50 optimizer steps and
at the end, so a run killed mid-epoch resumes with ``--ckpt_path <run>/checkpoints/last.ckpt``
(bit-exactly: tests/test_kill_resume.py). Large models: raise ``checkpoint.every_n_train_steps``."""

EVALUATION_FOLDERS = {"evaluate": "eval", "validate": "validate", "test": "test", "predict": "predict"}
"""Subcommands that read a fit's config but must not write over its files, and the folder of the run
directory their own versions go to (``<run>/eval/version_0`` ...)."""

NOT_SAVED = ("overwrite", "use_checkpoint_config")
"""Switches of one invocation, left out of the saved config.yaml (a rerun from it must opt in again)."""


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
        drop_per_group_settings(dumped)
        (log_dir / self.config_filename).write_text(yaml.safe_dump(redact(dumped), sort_keys=False))

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        # the data settings travel with the checkpoint (the module's hyper-parameters hold the rest), so a
        # resume can compare them (lit_align.resume_config); plain data only, for weights_only loading
        data = self.config.get("data")
        if data is not None:
            checkpoint[DATA_CONFIG_KEY] = redact(plain(data))
        checkpoint[TRAINER_CONFIG_KEY] = trained_by(self.config.get("trainer"))


def drop_per_group_settings(config: dict) -> None:
    """Leave the optimizer's lr / weight_decay out of a saved config: they are the class's defaults, unused.

    model.lr and model.weight_decay are set on every parameter group (lit_align.optim); the module refuses any
    other value in the optimizer's init_args, so what jsonargparse filled in there is only the class default,
    which a reader of config.yaml would take for the rate the run used.
    """
    from lit_align.optim import SET_PER_GROUP

    optimizer = (config.get("model") or {}).get("optimizer")
    if isinstance(optimizer, dict) and isinstance(optimizer.get("init_args"), dict):
        for key in SET_PER_GROUP:
            optimizer["init_args"].pop(key, None)


class EvaluatingTrainer(AlignTrainer):
    """The library's trainer plus ``evaluate``: held-out preference metrics plus an evaluation suite."""

    def evaluate(
        self,
        model: L.LightningModule,
        datamodule: L.LightningDataModule | None = None,
        ckpt_path: str | None = None,
        weights_only: bool | None = None,
        tasks: list[EvalTask] | None = None,
        output_dir: str | None = None,
    ) -> dict:
        """Evaluate a Lightning checkpoint or an exported Hugging Face directory.

        Args:
            model: the PreferenceModule (from a fit's config.yaml, or rebuilt from the checkpoint).
            datamodule: held-out preference pairs; when given, validation metrics (rewards, margins,
                accuracies, log-probs) are computed against the module's reference.
            ckpt_path: a Lightning ``.ckpt`` or an HF directory written by the export callback. With an
                HF directory the policy weights come from it and the reference from the config.
            weights_only: Lightning checkpoints are loaded with ``torch.load(weights_only=True)`` (None and True: a
                checkpoint cannot run code); false loads arbitrary pickles, only for a file you trust.
            tasks: evaluation tasks (``evals.EvalTask`` subclasses: verifier, MT-Bench, AlpacaEval, lm-eval).
            output_dir: where results.json and per-task files go (default: ``<log_dir>/eval``; ``cli.py
                evaluate`` always passes one: ``<fit run>/eval/version_N`` or its ``--output_dir``).
        """
        # this signature and docstring are `cli.py evaluate --help`; the work is shared with PostFitEvaluation
        return evaluate_checkpoint(self, model, datamodule, ckpt_path, weights_only, tasks, output_dir)

    def export(
        self,
        model: L.LightningModule,
        ckpt_path: str,
        output_dir: str,
        merged: bool = False,
        weights_only: bool | None = None,
        datamodule: L.LightningDataModule | None = None,
    ) -> Path:
        """Export a Lightning checkpoint as a Hugging Face folder, as the fit's own ``hf/`` export is made.

        The folder holds the model (or, for a LoRA policy, the adapter, whose ``base_model_name_or_path`` is the
        base's own name: a hub name, a GGUF file's name), the tokenizer and a model card (README.md: base, training,
        data, steps, final metrics and config, read from the checkpoint's run directory when it has them).

        Args:
            model: the PreferenceModule (from a fit's config.yaml, or rebuilt from the checkpoint's hyper-parameters).
            ckpt_path: a single-file Lightning checkpoint (``<run>/checkpoints/last.ckpt``).
            output_dir: the folder to write (new, or empty).
            merged: with a LoRA policy, also write the full model with the adapter merged in (``<output_dir>/merged``).
            weights_only: passed to ``torch.load``.
            datamodule: not read (a fit's config.yaml brings its data section; the card takes the data paths from
                the run's config.yaml).
        """
        return export_checkpoint(model, ckpt_path, output_dir, merged, weights_only)


class UsageError(ConfigError):
    """The command line or a config file did not parse (jsonargparse's message, on one line)."""


class OneLineErrorParser(LightningArgumentParser):
    """A parser whose refusal is a ``UsageError`` (one line from ``run``) instead of usage + exit.

    jsonargparse prints the whole usage (dozens of lines) before its message; the message alone,
    with the key and value, is what the user needs. Parsers that do not exit on error (those
    jsonargparse uses internally to try alternatives) keep raising their own ``ArgumentError``.
    """

    def error(self, message: str, ex: Exception | None = None):
        message = redact_text(message)  # it quotes the offending values (a task list with its base_url, say)
        if not self.exit_on_error or debug_enabled():
            return super().error(message, ex)
        prog = self.prog.replace(" [options]", "")
        raise UsageError(f"{concise(one_line(message))}{usage_hint(message)} (options: {prog} --help)") from ex


def usage_hint(message: str) -> str:
    """A pointer for refusals with a known cause: LightningCLI's top-level optimizer keys, a missing package."""
    if re.search(r"--optimizer|--lr_scheduler|'(optimizer|lr_scheduler)[.']", message):
        return ("; the optimizer is model.optimizer and the scheduler model.scheduler (--model.optimizer torch.optim.SGD "
                "--model.optimizer.momentum 0.9), see docs/training.md")
    return ""


def concise(message: str) -> str:
    """jsonargparse's refusal of a class_path whose package is missing, as one short sentence (else as it is).

    It lists every type of the union it tried ("Does not validate against any of the Union subtypes ...")
    around the one fact that matters: the import failed.
    """
    missing = re.search(r"No module named '([\w.]+)'", message)
    key = re.search(r'Parser key "([\w.]+)"', message)
    value = re.search(r"Given value: (\S+)", message)
    if not (missing and key and value):
        return message
    return f"{key.group(1)} = {value.group(1)} cannot be imported: package {missing.group(1)!r} is not installed"


def data_unused(subcommand: str, config) -> bool:
    """Whether ``subcommand`` runs without the preference pairs: an export, or an evaluate with validation off."""
    if subcommand == "export":
        return True
    return subcommand == "evaluate" and (config.get("trainer") or {}).get("limit_val_batches") in (0, 0.0)


class AlignCLI(LightningCLI):
    """LightningCLI plus ``evaluate``; an evaluation writes into a directory of its own, a fit refuses
    to replace another run's files (lit_align.run_dirs)."""

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return {**LightningCLI.subcommands(), "evaluate": {"model", "datamodule"}, "export": {"model", "datamodule"}}

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        # the end-of-fit Hugging Face export as a group of its own (--hf_export.merged true), not a default
        # callback: one listed in trainer.callbacks as well would write hf/ twice
        parser.add_lightning_class_args(HFExport, "hf_export")
        parser.add_lightning_class_args(TrainingMonitor, "monitor")  # lr, grad norm, tokens/s, MFU (callbacks/training_monitor.py)
        parser.set_defaults({f"checkpoint.{k}": v for k, v in CHECKPOINT_DEFAULTS.items()})
        parser.add_argument("--overwrite", type=bool, default=False,
                            help="fit: allow writing into a run directory that already holds a run's files (config.yaml, "
                                 "checkpoints/, hf/, metrics.csv); without it such a fit stops, unless it resumes with --ckpt_path")
        parser.add_argument(f"--{SWITCH}", type=bool, default=False,
                            help="with --ckpt_path: take the model, loss, reference and data settings recorded in the "
                                 "checkpoint instead of the config's; without it a checkpoint trained with other settings "
                                 "is refused, naming the differing keys (docs/resume-and-checkpoints.md)")
        lead_with_own_groups(parser)

    def instantiate_classes(self) -> None:
        subcommand = self.config.get("subcommand")
        checkpoint = (self.config[subcommand] if subcommand else self.config).get("checkpoint")
        if checkpoint is not None:  # before Lightning's ModelCheckpoint refuses it with a traceback
            check_checkpoint_settings(dict(checkpoint))
        if subcommand and data_unused(subcommand, self.config[subcommand]):
            # the data module reads (and checks) its files when built: a command that never runs a held-out
            # pass must not need them (a recipe's evaluate with validation off, an export)
            self.config[subcommand]["data"] = None
        # jsonargparse reports a failed instantiation with the whole offending value (a task list with
        # its base_url, say): mask credentials and drop the chained original, which holds them too
        try:
            super().instantiate_classes()
        except (ValueError, TypeError) as err:
            message = redact_text(str(err))
            if message == str(err):
                raise
            found = user_error_in(err)
            if found is not None and found is not err:
                # the class's own one-line refusal, masked, and the class it came from (as describe_error names it)
                where = re.search(r"class_path='([\w.]+)'", message)
                raise ConfigError((where.group(1) + ": " if where else "") + redact_text(one_line(found))) from None
            raise type(err)(message) from None
        redact_hyperparameters(self.model, self.datamodule)  # hparams.yaml and checkpoints record them
        check_model_fits_data(getattr(self.model, "model_source", None), self.datamodule)

    def instantiate_trainer(self, **kwargs):
        if self.subcommand == "export":  # writes its output_dir only: no logger that could touch the fit's folder
            kwargs["logger"] = False
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

    def _instantiate_trainer(self, config: dict, callbacks: list) -> L.Trainer:
        # The bar in optimizer steps (callbacks/progress.py) replaces Lightning's, unless bars are off
        # (Lightning refuses a bar callback then) or the config brings a bar of its own.
        from lightning.pytorch.callbacks import ProgressBar

        from callbacks import StepProgressBar

        if config.get("enable_checkpointing") is False:  # the checkpoint group's ModelCheckpoint is not wanted then
            callbacks = [c for c in callbacks if not isinstance(c, ModelCheckpoint)]
        listed = config.get("callbacks") or []
        listed = listed if isinstance(listed, list) else [listed]
        if config.get("enable_progress_bar") is not False and not any(isinstance(c, ProgressBar) for c in [*listed, *callbacks]):
            callbacks = [*callbacks, StepProgressBar()]
        return super()._instantiate_trainer(config, callbacks)

    def before_fit(self) -> None:
        config = self.config_init[self.subcommand]
        folder = fit_dir(self.trainer)
        # claimed first, so a second fit started at once cannot pass the check too; by the first process only
        # (the trainer's global_rank is set only once fit launches: before that, the launchers' env says the rank)
        if first_process() and self.trainer.global_rank == 0:
            self._claim = RunDirLock(folder).acquire()
        check_fit_dir(folder, resuming=config.get("ckpt_path") is not None, overwrite=bool(config.get("overwrite")))
        if config.get("overwrite") and config.get("ckpt_path") is None and first_process() and self.trainer.global_rank == 0:
            clear_replaced_run(folder)

    def _run_subcommand(self, subcommand: str) -> None:
        try:
            super()._run_subcommand(subcommand)
        finally:  # released however the fit ends (a killed process's claim is dropped by the kernel)
            claim = getattr(self, "_claim", None)
            if claim is not None:
                claim.release()

    def _parse_ckpt_path(self) -> None:
        # LightningCLI's version torch.loads ckpt_path here and replaces the configured model by the
        # checkpoint's hyper-parameters without a word. Instead: refuse a missing path or a file that is
        # not a checkpoint (naming it), verify and load it weights-only, compare the settings and refuse a
        # difference (lit_align.resume_config); take the checkpoint's only when asked, or when the config
        # names no model (evaluate of a bare checkpoint).
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        config = self.config[subcommand]
        ckpt_path = config.get("ckpt_path")
        refuse_shortcut(ckpt_path)
        check_ckpt_path(ckpt_path, allow_hf=subcommand == "evaluate")
        if not ckpt_path or not Path(ckpt_path).is_file():
            return
        checkpoint = load_checkpoint(ckpt_path, map_location="cpu")
        hparams = dict(checkpoint.get("hyper_parameters") or {})
        hparams.pop("_instantiator", None)
        recorded = {"model": hparams or None, "data": checkpoint.get(DATA_CONFIG_KEY) if subcommand == "fit" else None,
                    "trainer": checkpoint.get(TRAINER_CONFIG_KEY) if subcommand == "fit" else None}
        model_configured = (config.get("model") or {}).get("model") is not None
        if not config.get(SWITCH) and model_configured:
            configured = {"model": config.get("model"), "data": config.get("data"), "trainer": trained_by(config.get("trainer"))}
            found = differences(configured, recorded, only=None if subcommand == "fit" else EVALUATED)
            refuse_differences(ckpt_path, found, subcommand)
            if subcommand != "fit":
                line = announce_differences(ckpt_path, differences(configured, recorded, only=SCORED_WITH), subcommand)
                if line:
                    print(redact_text(line), file=sys.stderr)
            return
        taken = {k: v for k, v in recorded.items() if v}
        if "_class_path" in taken.get("model", {}):
            model = taken["model"]
            taken["model"] = {"class_path": model.pop("_class_path"), "dict_kwargs": model}
        if taken:
            self.config = self.parser.parse_object({subcommand: taken}, self.config)


def refuse_shortcut(ckpt_path: object) -> None:
    """Refuse Lightning's ``ckpt_path`` shortcuts (``last``, ``best``, ``hpc``, ``registry:...``) on the command line.

    Lightning resolves them only once the trainer runs, so the settings comparison and the checksum check
    (which need the file before anything is built) never saw the file; and ``last`` with no checkpoint
    found trains from scratch after a warning, exiting 0 as if it had resumed.
    """
    if isinstance(ckpt_path, str) and (ckpt_path in SPECIAL_CKPT_PATHS or ckpt_path.startswith("registry")):
        raise ConfigError(f"ckpt_path {ckpt_path!r} is a Lightning shortcut that cli.py cannot check before it runs (and "
                          "'last' without a checkpoint silently trains from scratch): give the checkpoint file, e.g. "
                          "<run dir>/checkpoints/last.ckpt")


HELP_GROUPS = {
    "model": "model: the policy's source, the loss and the reference strategy (lit_align.module.PreferenceModule)",
    "data": "data: the preference pairs (a class_path; --data.help lit_align.data.PreferenceDataModule lists its options)",
    "hf_export": "hf_export: the Hugging Face export at the end of fit (callbacks.HFExport)",
    "checkpoint": "checkpoint: last.ckpt for resuming (Lightning's ModelCheckpoint)",
    "trainer": "trainer: Lightning's Trainer (devices, strategy, precision, steps, validation, logger, callbacks)",
}
"""``--help`` sections, in this order after the general options, with these titles; LightningCLI adds the trainer
first, and titles each group with its class's docstring (a DataModule's is Lightning's generic one)."""


def lead_with_own_groups(parser: LightningArgumentParser) -> None:
    """Put lit-align's groups (model, data, export, checkpoint) before Lightning's trainer in ``--help``.

    argparse prints argument groups in the order of ``parser._action_groups``; only that order and the
    titles change (parsing and the usage line do not depend on it). Groups added later (optimizer,
    lr_scheduler) stay after these.
    """
    def key(group) -> str | None:
        for action in group._group_actions:
            head = action.dest.split(".")[0]
            if head in HELP_GROUPS:
                return head
        return None

    groups = parser._action_groups
    own = {key(g): g for g in groups if key(g) is not None}
    for name, group in own.items():
        group.title = HELP_GROUPS[name]
    rest = [g for g in groups if key(g) is None]
    split = next((i + 1 for i, g in enumerate(rest) if g.title == "options"), len(rest))  # after the general options
    parser._action_groups[:] = rest[:split] + [own[n] for n in HELP_GROUPS if n in own] + rest[split:]


TRAINER_DEFAULTS = {
    # The data module brings its own DistributedSampler (exact mid-epoch resume needs it unwrapped).
    "use_distributed_sampler": False,
    "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": "runs", "name": "default"}},
    # TRL's logging_steps: a short run shows its curve (each logging step costs one host sync)
    "log_every_n_steps": 10,
}


def default_callbacks() -> list:
    """Always on (LightningCLI appends these to the config's callbacks): the run summary. (The
    ModelCheckpoint is the ``checkpoint`` config group, see CHECKPOINT_DEFAULTS; the HF export the
    ``hf_export`` group, callbacks.HFExport.)"""
    from callbacks import RunSummary

    return [RunSummary()]


def main(args: list[str] | None = None) -> AlignCLI:
    install_yaml_loader()  # config files: a duplicate key is refused, a YAML error names its file
    return AlignCLI(
        PreferenceModule,
        None,  # data is an optional class_path group: evaluate can run without it
        trainer_class=EvaluatingTrainer,
        parser_class=OneLineErrorParser,
        save_config_callback=RedactingSaveConfig,
        save_config_kwargs={"overwrite": True},
        trainer_defaults={**TRAINER_DEFAULTS, "callbacks": default_callbacks()},
        # The optimizer and scheduler are the module's own settings (model.optimizer, model.scheduler), built
        # over its parameter groups: LightningCLI's top-level --optimizer / --lr_scheduler would bypass them.
        auto_configure_optimizers=False,
        # An explicit default, saved in config.yaml (Lightning's `true` seeds 0 anyway, warning "No seed found").
        seed_everything_default=0,
        args=args,
    )


DEBUG_ENV = "LIT_ALIGN_DEBUG"
"""Environment variable: set to 1 to see tracebacks of user errors (like ``--debug``)."""


def debug_enabled() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def one_line(message: object) -> str:
    """A message on one line: its lines joined, indentation dropped."""
    return " ".join(part.strip() for part in str(message).splitlines() if part.strip())


USER_ERRORS = (UserError, EvalError)
"""Exceptions whose message alone is the report (they name what is wrong and where)."""


def user_error_in(err: BaseException) -> BaseException | None:
    """The ``UserError`` behind ``err``: itself, or one in its chain of explicit causes (``raise ... from``).

    jsonargparse instantiates a ``class_path`` group inside its own error handling, and wraps what
    the class raised in "Does not validate against any of the Union subtypes ..." (``from`` it),
    the real message buried among the others it tried. (Only ``__cause__``: an error raised while
    another was being handled is not explained by that other one.)
    """
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, USER_ERRORS):
            return err
        seen.add(id(err))
        err = err.__cause__
    return None


PATH_ERRNOS = frozenset({errno.ENOTDIR, errno.EISDIR, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENAMETOOLONG, errno.ELOOP})
"""OSErrors about a path itself (a file where a folder is needed, no permission, a read-only file system):
reported as one line naming the path, without the library frame they were raised in."""


def describe_error(err: BaseException) -> str:
    """``error: ...`` for a user error: its message; for a library's ValueError / OSError, also its type and origin."""
    found = user_error_in(err)
    where = re.search(r"class_path='([\w.]+)'", str(err)) if found is not err else None
    prefix = where.group(1) + ": " if where else ""
    if found is not None:
        return f"error: {prefix}{one_line(found) or type(found).__name__}"
    if str(err).startswith("Does not validate against any of the Union subtypes") and err.__cause__ is not None:
        return describe_error(err.__cause__).replace("error: ", f"error: {prefix}", 1)  # what the class raised
    if isinstance(err, OSError) and err.errno in FULL_DISK_ERRNOS:  # any write, not only a checkpoint's
        where = Path(err.filename).parent if err.filename else None
        return f"error: no space left on device{f' in {where}' if where else ''}" + (f" while writing {err.filename}" if err.filename else "")
    if isinstance(err, OSError) and err.errno in PATH_ERRNOS and err.filename:
        # a folder the run writes to is a file, read-only or not ours: the path and the reason are the whole report
        return f"error: cannot use {err.filename}: {err.strerror or os.strerror(err.errno)}" + (
            f" (a folder the run writes to: {Path(err.filename).parent})" if err.errno == errno.ENOTDIR else "")
    message = one_line(err) or type(err).__name__
    frame = traceback.extract_tb(err.__traceback__)[-1] if err.__traceback__ else None
    origin = f" (raised at {Path(frame.filename).name}:{frame.lineno} in {frame.name}" if frame else " ("
    return f"error: {type(err).__name__}: {message}{origin}; {DEBUG_ENV}=1 shows the traceback)"


# Noise that Lightning / torchdata print on every run, and that would bury the one error line.
QUIET_WARNINGS = (
    r"'set_vital' is deprecated",
    r".*isinstance\(treespec, LeafSpec\)",
    r"Found \d+ module\(s\) in eval mode",  # the reference models, in eval mode on purpose
    r"`is_gradient_checkpointing` is deprecated",  # PEFT reads transformers' deprecated alias when it wraps a model
    r"Total length of `\w+` across ranks is zero",  # no validation data: a run without validation is a valid run
)
QUIET_LOG_LINES = ("💡 Tip:",)  # Lightning's advertisements (cloud logging, cloud checkpoint uploads)


class _DropLines(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(QUIET_LOG_LINES)


def quiet_known_noise() -> None:
    for pattern in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    import lightning.pytorch  # noqa: F401  (it installs its log handler on import)

    for handler in logging.getLogger("lightning.pytorch").handlers + logging.getLogger().handlers:
        if not any(isinstance(f, _DropLines) for f in handler.filters):
            handler.addFilter(_DropLines())


def run(argv: list[str] | None = None) -> int:
    """The command line: ``main`` with user errors reported as one line on stderr; returns the exit status.

    ``--debug`` (removed before LightningCLI parses) or ``LIT_ALIGN_DEBUG=1`` lets every error
    through with its traceback.
    """
    if argv is None:  # LightningCLI reads sys.argv itself (and warns when given it as args as well)
        if "--debug" in sys.argv[1:]:
            sys.argv[1:] = [a for a in sys.argv[1:] if a != "--debug"]
            os.environ[DEBUG_ENV] = "1"  # also seen by the parser, and by spawned ranks
    elif "--debug" in argv:
        argv = [a for a in argv if a != "--debug"]
        os.environ[DEBUG_ENV] = "1"
    quiet_known_noise()
    if debug_enabled():
        main(argv)
        return 0
    try:
        main(argv)
    except UsageError as err:
        print(redact_text(describe_error(err)), file=sys.stderr, flush=True)  # it may quote a URL or a key
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr, flush=True)
        return 130
    except (ValueError, OSError, MisconfigurationException) as err:  # UserError is a ValueError; Lightning's refusals mid-fit
        print(redact_text(describe_error(err)), file=sys.stderr, flush=True)  # it may quote a URL or a key
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(run())
