"""lm-evaluation-harness tasks on the in-memory model (Gao et al., EleutherAI lm-evaluation-harness 0.4).

Tasks and groups (arc_challenge, hellaswag, the ``leaderboard`` group ...) or local task YAML folders
(``dataset_path: json`` with ``dataset_kwargs.data_files``) run through ``lm_eval.simple_evaluate``
with ``HFLM(pretrained=<model>, tokenizer=<tokenizer>)``. The flags whose defaults changed across
lm-eval versions (``apply_chat_template``, ``fewshot_as_multiturn``) are set explicitly and
recorded with the lm-eval version. A task that cannot be built here (a hub dataset offline, an
unknown name) is a failed task: the others run, their numbers are kept under ``failed``, and the
evaluation is not complete. Local task data: a folder of task YAML files named in ``include_path``
(``evals/local_tasks/`` ships one, ``arith_mc``, with its data).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from evals.base import EvalTask, TaskFailed, write_json_atomic


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def flatten_results(results: dict[str, Any]) -> dict[str, Any]:
    """``{"task/metric": value}`` from lm-eval's ``results`` and ``groups``; the filter is kept when
    it is not ``none`` (``gsm8k/exact_match,strict-match``)."""
    flat: dict[str, Any] = {}
    for section in ("results", "groups"):
        for task, metrics in results.get(section, {}).items():
            for key, value in metrics.items():
                if key == "alias" or not isinstance(value, (int, float)) or isinstance(value, bool):
                    continue
                metric, _, filt = key.partition(",")
                flat[f"{task}/{metric if filt in ('', 'none') else key}"] = _clean(value)
    return flat


class LmEvalTasks(EvalTask):
    """lm-eval tasks/groups on the model being evaluated, numbers as lm-eval's own CLI gives them."""

    def __init__(
        self,
        tasks: list[str],
        include_path: list[str] | None = None,
        include_defaults: bool = True,
        num_fewshot: int | None = None,
        limit: int | float | None = None,
        batch_size: int = 8,
        apply_chat_template: bool = False,
        fewshot_as_multiturn: bool = False,
        max_length: int | None = None,
        bootstrap_iters: int = 100000,
        random_seed: int = 0,
        name: str = "lm_eval",
        log_samples: bool = True,
    ) -> None:
        """
        Args:
            tasks: lm-eval task or group names (e.g. arc_challenge, leaderboard, or a local task's name).
            include_path: Folders of local task YAML files (e.g. evals/local_tasks, whose arith_mc runs offline).
            include_defaults: Index lm-eval's built-in tasks too (8-14 s); False for local tasks only.
            num_fewshot: Few-shot examples (None: each task's default; v1 leaderboard: arc 25, hellaswag 10,
                mmlu 5 ...).
            limit: Examples per task (int) or fraction (float < 1); None: all. Limited runs are not comparable.
            batch_size: Requests per forward pass.
            apply_chat_template: Wrap prompts in the tokenizer's chat template (lm-eval default changed across
                versions).
            fewshot_as_multiturn: Few-shot examples as chat turns (only with apply_chat_template).
            max_length: Context length for lm-eval's truncation; None: from the model config.
            bootstrap_iters: Bootstrap resamples for stderr of non-mean metrics (lm-eval default 100000).
            random_seed: lm-eval's random / numpy / torch / fewshot seeds.
            name: Name under which metrics are reported.
            log_samples: Save per-item predictions to samples_<task>.jsonl.
        """
        self.tasks = tasks
        self.include_path = include_path
        self.include_defaults = include_defaults
        self.num_fewshot = num_fewshot
        self.limit = limit
        self.batch_size = batch_size
        self.apply_chat_template = apply_chat_template
        self.fewshot_as_multiturn = fewshot_as_multiturn
        self.max_length = max_length
        self.bootstrap_iters = bootstrap_iters
        self.random_seed = random_seed
        self.name = name
        self.log_samples = log_samples

    def describe(self) -> dict[str, Any]:
        from importlib.metadata import version

        return {**super().describe(), "lm_eval_version": version("lm_eval")}

    def _task_manager(self):
        from lm_eval.tasks import TaskManager

        include = [str(Path(p).resolve()) for p in self.include_path or []]
        return TaskManager(include_path=include or None, include_defaults=self.include_defaults)

    def buildable(self, task_manager) -> tuple[list[str], dict[str, str]]:
        """Split the requested tasks into those that build here and the others with reasons."""
        from lm_eval.tasks import get_task_dict

        ok, failed = [], {}
        for task in self.tasks:
            if task not in task_manager.all_tasks:
                failed[task] = "unknown task or group (not in lm-eval's index or the include_path)"
                continue
            try:
                get_task_dict([task], task_manager)
            except Exception as err:  # offline hub datasets fail in many ways (ConnectionError, OSError ...)
                failed[task] = f"{type(err).__name__}: {str(err).splitlines()[0][:300] if str(err) else ''}"
            else:
                ok.append(task)
        return ok, failed

    def run(self, model, tokenizer, output_dir: Path) -> dict[str, Any]:
        import lm_eval
        from lm_eval.models.huggingface import HFLM

        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        task_manager = self._task_manager()
        tasks, unbuildable = self.buildable(task_manager)
        why = "; ".join(f"{t}: {r}" for t, r in unbuildable.items())
        failed = (f"{self.name}: {len(unbuildable)} of {len(self.tasks)} lm-eval tasks cannot run here ({why}); "
                  f"a hub dataset needs network or a local copy: point a task YAML at local files (dataset_path: json, "
                  f"dataset_kwargs.data_files) and name its folder in include_path")
        if not tasks:
            raise TaskFailed(failed)
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=self.batch_size, max_length=self.max_length)
        out = lm_eval.simple_evaluate(
            model=lm, tasks=tasks, num_fewshot=self.num_fewshot, limit=self.limit, task_manager=task_manager,
            apply_chat_template=self.apply_chat_template, fewshot_as_multiturn=self.fewshot_as_multiturn,
            bootstrap_iters=self.bootstrap_iters, log_samples=self.log_samples, random_seed=self.random_seed,
            numpy_random_seed=self.random_seed, torch_random_seed=self.random_seed, fewshot_random_seed=self.random_seed,
        )
        metrics = flatten_results(out)
        for task, samples in (out.get("samples") or {}).items():
            with open(output_dir / f"samples_{task}.jsonl", "w", encoding="utf-8") as f:
                for s in samples:
                    f.write(json.dumps({k: s.get(k) for k in ("doc_id", "target", "resps", "filtered_resps", "doc")},
                                       default=str) + "\n")
        record = {
            "metrics": metrics, "failed": unbuildable, "n-shot": out.get("n-shot"), "versions": out.get("versions"),
            "configs": out.get("configs"), "lm_eval_version": lm_eval.__version__ if hasattr(lm_eval, "__version__") else None,
            "flags": {"apply_chat_template": self.apply_chat_template, "fewshot_as_multiturn": self.fewshot_as_multiturn,
                      "num_fewshot": self.num_fewshot, "limit": self.limit, "batch_size": self.batch_size},
        }
        write_json_atomic(output_dir / "lm_eval_results.json", record)
        if unbuildable:  # the tasks that ran keep their numbers, under failed: the suite is not complete
            raise TaskFailed(failed, metrics)
        return metrics
