"""Paper studies: a grid of fits over seeds, evaluated as ``cli.py evaluate`` does, tabulated and plotted.

    python -m benchmarks.studies.study --config configs/studies/dpop.yaml --out runs/studies/dpop

A study (``configs/studies/*.yaml``, read by ``StudyConfig``) names arms: config fragments layered
over one base fit config. Per seed:

1. the synthetic task's SFT start is trained once (``sft``) and shared by every arm;
2. preference pairs are made from it: its own verifier-labelled mistakes (``pairs: own_mistakes``,
   as the demo does) or the task's near-miss pairs (``pairs: task``: small edit distance);
3. every arm is fit from that start with ``cli.py fit`` (same data order: the seed is the same);
4. the start and every arm are evaluated with ``cli.py evaluate``: the verifier's exact-match
   accuracy on held-out prompts and held-out reward metrics against the arm's own reference.

Then ``study.json``, ``study.md`` (mean and sample sd over seeds; fixed / broken test prompts against
the baseline arm, pooled over seeds, with McNemar's exact p) and ``study.png`` (accuracy per arm or
along the study's axis, and training curves averaged over seeds). Every finished step leaves a
``done`` marker and is skipped when the study is run again, so an interrupted study resumes;
``--force`` re-runs everything. ``--publish DIR`` copies the three summary files there.

A reference with another tokenizer: an extra start (``starts: {other: [--model.model.init_args.tokenizer=word]}``,
listed in ``other_tokenizer_starts`` so it is evaluated with its own SFT config) and an arm with
``reference_columns: {start: other}``, whose train and val pairs get ``ref_chosen_logps`` / ``ref_rejected_logps``
from that start (``python -m lit_align.reference_columns``) before its fit, for ``DatasetColumnReference``.

A real model: ``--over configs/recipes/smollm2_dpo_lora.yaml --data runs/smollm2/data`` runs the same arms over
that recipe (``start: pretrained``: no SFT start, pairs from ``python -m benchmarks.demos.real_demo --prepare-only``,
held-out reward metrics of the untuned model and of each arm's ``last.ckpt``; no verifier, so no paired counts).
Arms that need the task's SFT starts (``{start:NAME}``, reference columns) are left out and named.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import re
import shutil
import statistics
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import yaml

from benchmarks.studies.report import SUMMARY, discordant, markdown, mcnemar, plot, verdicts

REPO = Path(__file__).resolve().parents[2]  # benchmarks/<group>/<file>


@dataclass
class Arm:
    """One fit per seed: ``config`` (a fragment of a fit config) and ``args`` layered over the base."""

    name: str
    config: dict = field(default_factory=dict)
    args: list[str] = field(default_factory=list)
    x: float | None = None  # position on the study's axis (e.g. its beta or lr), if it has one
    group: str = ""  # arms of one group are one line along the axis (e.g. DPO and MinorDPO over lr)
    # reference columns from an extra start (for lit_align.reference.DatasetColumnReference), e.g. {start: other}:
    # before the fit, ``python -m lit_align.reference_columns`` scores the arm's train pairs and the val pairs with
    # that start (its own tokenizer and chat template) and the arm trains and is evaluated on those files. Other
    # keys are the command's options (chat_template, max_length, max_prompt_length, batch_size).
    reference_columns: dict | None = None


def substitute(node, values: dict[str, str]):
    """``{start}``, ``{start:NAME}`` (an extra start's HF dir) and ``{starts}`` (the shared starts folder,
    e.g. for a CachedReference's cache_dir) in every string of a config fragment."""
    if isinstance(node, str):
        for key, value in values.items():
            node = node.replace("{" + key + "}", value)
        return node
    if isinstance(node, dict):
        return {k: substitute(v, values) for k, v in node.items()}
    if isinstance(node, list):
        return [substitute(v, values) for v in node]
    return node


@dataclass
class StudyConfig:
    title: str
    arms: list[Arm]
    baseline: str  # arm the others are tested against
    finding: str = ""  # the paper's claim, quoted in study.md
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    data: dict = field(default_factory=lambda: {"train": 4000, "val": 200, "test": 500})
    sft: str = "configs/demo/sft.yaml"
    sft_args: list[str] = field(default_factory=list)
    starts: dict[str, list[str]] = field(default_factory=dict)  # extra SFT models per seed: name -> args over sft
    # extra starts with another tokenizer than the policy's: evaluated with their own SFT fit config (the
    # verifier's accuracy only), since the baseline arm's reference cannot score their tokens
    other_tokenizer_starts: list[str] = field(default_factory=list)
    pairs: Literal["own_mistakes", "task"] = "own_mistakes"
    pair_prompts: int = 1500  # train prompts the SFT model answers (own_mistakes)
    base: str = "configs/demo/dpo.yaml"
    base_args: list[str] = field(default_factory=list)
    eval: str | None = "configs/demo/eval.yaml"  # None: held-out reward metrics only (no verifier)
    # "sft": the synthetic task's SFT start (above); "pretrained": the base config's own model is the start (a real
    # model: no SFT, no own-mistake pairs), the arms train on data_files and are evaluated from checkpoints/last.ckpt
    start: Literal["sft", "pretrained"] = "sft"
    data_files: dict[str, str] | None = None  # {train, val} preference pairs (start: pretrained)
    axis: str | None = None  # the arms' x label (e.g. "beta"); None: arms are categories
    log_axis: bool = True
    curves: list[str] = field(default_factory=lambda: ["train/logps/chosen"])

    @classmethod
    def load(cls, path: str | Path) -> StudyConfig:
        raw = {k: v for k, v in (yaml.safe_load(Path(path).read_text()) or {}).items() if not k.startswith("_")}  # _x: YAML anchors
        known = set(cls.__dataclass_fields__)
        if unknown := sorted(set(raw) - known):
            raise ValueError(f"{path}: unknown study key(s) {unknown}; known: {sorted(known)}")
        try:
            study = cls(**{**raw, "arms": [Arm(**arm) for arm in raw.get("arms", [])]})
        except TypeError as error:
            raise ValueError(f"{path}: {error}") from None
        names = [arm.name for arm in study.arms]
        if len(set(names)) != len(names) or not names:
            raise ValueError(f"{path}: arms need distinct names, got {names}")
        if study.baseline not in names:
            raise ValueError(f"{path}: baseline {study.baseline!r} is not an arm ({names})")
        for name in study.other_tokenizer_starts + [a.reference_columns.get("start") for a in study.arms if a.reference_columns]:
            if name not in study.starts:
                raise ValueError(f"{path}: start {name!r} is not one of the study's starts ({sorted(study.starts)})")
        if study.start not in ("sft", "pretrained"):
            raise ValueError(f"{path}: start must be sft or pretrained, got {study.start!r}")
        if study.pairs not in ("own_mistakes", "task"):
            raise ValueError(f"{path}: pairs must be own_mistakes or task, got {study.pairs!r}")
        return study


def needs_sft_start(arm: Arm) -> bool:
    """Whether an arm uses the task's SFT starts (``{start...}`` in its config or args, or reference columns)."""
    return bool(arm.reference_columns) or re.search(r"\{start(:[^}]*)?\}", json.dumps([arm.config, arm.args])) is not None


def over_pretrained(study: StudyConfig, base: str, data_dir: str | Path) -> tuple[StudyConfig, list[str]]:
    """The study's arms over a real model's recipe (``base``, e.g. configs/recipes/smollm2_dpo_lora.yaml):
    no SFT start, the pairs in ``data_dir`` ({train,val}.jsonl), held-out reward metrics only. Arms that need
    the task's SFT starts are left out (returned by name); the recipe's own settings replace the study's base_args."""
    kept = [arm for arm in study.arms if not needs_sft_start(arm)]
    dropped = [arm.name for arm in study.arms if needs_sft_start(arm)]
    if study.baseline in dropped:
        raise ValueError(f"the baseline arm {study.baseline!r} needs the task's SFT start: no real-model form")
    files = {split: str(Path(data_dir) / f"{split}.jsonl") for split in ("train", "val")}
    variant = replace(study, arms=kept, base=base, base_args=[], start="pretrained", eval=None, data_files=files,
                      starts={}, other_tokenizer_starts=[], title=f"{study.title} [over {Path(base).stem}]")
    return variant, dropped


class Study:
    """Runs a ``StudyConfig`` under ``out`` (``seed_<s>/{sft,<arm>,eval/<arm>}``, shared ``data/``)."""

    def __init__(self, config: StudyConfig, out: Path, force: bool = False, starts_root: Path | None = None) -> None:
        self.config, self.out, self.force = config, out, force
        self.starts_root = starts_root or out / "starts"  # SFT starts and their pairs, shareable across studies

    def _once(self, marker: Path, step) -> None:
        """Run ``step`` unless ``marker`` says it finished; write the marker only after it did.

        A fit without its marker was interrupted (or is forced): it runs again with ``--overwrite``.
        """
        if marker.is_file() and not self.force:
            return
        step()
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text("done\n")

    def _cli(self, *args: str) -> None:
        import cli

        print(f"\n[study] $ python cli.py {' '.join(args)}", flush=True)
        cli.main(list(args))

    def _layer(self, seed_dir: Path, name: str, fragment: dict) -> Path:
        """The arm's fragment plus this study's logger, as a config file layered after the base."""
        logger = {"class_path": "lightning.pytorch.loggers.CSVLogger",
                  "init_args": {"save_dir": str(seed_dir), "name": name, "version": ""}}
        path = seed_dir / f"{name}.layer.yaml"
        seed_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump({**fragment, "trainer": {**fragment.get("trainer", {}), "logger": logger}}, sort_keys=False))
        return path

    def other_tokenizer_names(self) -> set[str]:
        return {f"start_{name}" for name in self.config.other_tokenizer_starts}

    def start_dir(self, seed: int, args: list[str]) -> Path:
        """Where a seed's SFT start lives: keyed by everything that makes it, so studies share it."""
        c = self.config
        key = json.dumps([c.sft, c.sft_args, args, c.data, seed])
        return self.starts_root / f"{Path(c.sft).stem}_{hashlib.sha256(key.encode()).hexdigest()[:10]}" / f"seed_{seed}"

    def _sft(self, seed: int, data: dict[str, Path], args: list[str]) -> Path:
        c, root = self.config, self.start_dir(seed, args)
        layer = self._layer(root.parent, root.name, {})
        self._once(root / "done", lambda: self._cli(
            "fit", "--overwrite=true", "--config", str(REPO / c.sft), "--config", str(layer), f"--data.init_args.val_path={data['val']}",
            f"--seed_everything={seed}", f"--data.init_args.train_path={data['train']}",
            f"--model.model.init_args.seed={seed}", *c.sft_args, *args))
        return root

    def run_seed(self, seed: int, data: dict[str, Path]) -> None:
        c, seed_dir = self.config, self.out / f"seed_{seed}"
        start_root = self._sft(seed, data, [])
        start = start_root / "hf"
        starts = {"start": start} | {f"start_{name}": self._sft(seed, data, args) / "hf" for name, args in c.starts.items()}
        values = {"start": str(start), "starts": str(self.starts_root)}
        values |= {f"start:{name}": str(starts[f"start_{name}"]) for name in c.starts}
        pairs = data["train"] if c.pairs == "task" else start_root / f"pairs_{c.pair_prompts}.jsonl"
        if c.pairs == "own_mistakes":  # the start's own verifier-labelled answers: shared like the start
            from benchmarks.demos.demo import own_mistake_pairs

            self._once(pairs.with_suffix(".done"), lambda: own_mistake_pairs(start, data["train"], pairs, c.pair_prompts))
        for arm in c.arms:
            train, val = pairs, data["val"]
            if arm.reference_columns:
                train, val = self._reference_columns(seed_dir, starts, arm.reference_columns, {"train": pairs, "val": data["val"]})
            self._fit_arm(seed, arm, values, train, val, f"--model.model.init_args.path={start}")
        # the starts are scored against the baseline arm's reference (the start's reward metrics are 0 by definition);
        # a start with another tokenizer is evaluated with its own SFT config (the verifier's accuracy is what counts)
        own = self.other_tokenizer_names()
        evaluated = [(name, (weights.parent if name in own else seed_dir / c.baseline) / "config.yaml", weights)
                     for name, weights in starts.items()]
        evaluated += [(a.name, seed_dir / a.name / "config.yaml", seed_dir / a.name / "hf") for a in c.arms]
        for name, config, weights in evaluated:
            target = seed_dir / "eval" / name
            self._once(target / "done", lambda config=config, weights=weights, target=target: self._cli(
                "evaluate", "--config", str(config), "--config", str(REPO / c.eval),
                f"--tasks.init_args.data_path={data['test']}", "--ckpt_path", str(weights), "--output_dir", str(target)))

    def _fit_arm(self, seed: int, arm: Arm, values: dict[str, str], train: Path, val: Path, *start: str) -> None:
        """``cli.py fit`` of one arm: the base config, the arm's layer, this seed's data (``start``: the policy's weights)."""
        c, seed_dir = self.config, self.out / f"seed_{seed}"
        layer = self._layer(seed_dir, arm.name, substitute(arm.config, values))
        self._once(seed_dir / arm.name / "done", lambda: self._cli(
            "fit", "--overwrite=true", "--config", str(REPO / c.base), "--config", str(layer), f"--data.init_args.val_path={val}",
            f"--seed_everything={seed}", f"--data.init_args.train_path={train}", *start, *c.base_args,
            *substitute(arm.args, values)))

    def _reference_columns(self, seed_dir: Path, starts: dict[str, Path], spec: dict, files: dict[str, Path]) -> tuple[Path, Path]:
        """``python -m lit_align.reference_columns`` with an extra start over the train pairs and the val pairs.

        Shared by the seed's arms that ask for the same start and options (the columns do not depend on beta).
        """
        from lit_align.reference_columns import main as columns

        options = {k: v for k, v in spec.items() if k != "start"}
        flags = []
        for key, value in sorted(options.items()):
            if key == "chat_template":
                flags += [] if value else ["--no-chat-template"]
            else:
                flags.append(f"--{key.replace('_', '-')}={value}")
        tag = hashlib.sha256(json.dumps([str(files["train"]), str(files["val"]), flags]).encode()).hexdigest()[:8]
        folder = seed_dir / f"ref_columns_{spec['start']}_{tag}"
        model = starts[f"start_{spec['start']}"]
        outs = {split: folder / f"{split}.jsonl" for split in files}
        for split, source in files.items():
            argv = ["--model", str(model), "--data", str(source), "--out", str(outs[split]), *flags]
            self._once(folder / f"{split}.done", lambda argv=argv: (
                print(f"\n[study] $ python -m lit_align.reference_columns {' '.join(argv)}", flush=True), columns(argv)))
        return outs["train"], outs["val"]

    def run_pretrained(self, seed: int, data: dict[str, Path]) -> None:
        """Every arm from the base config's own model; evaluated (and the untuned model) on the held-out pairs."""
        c, seed_dir = self.config, self.out / f"seed_{seed}"
        values = {"starts": str(self.starts_root)}
        for arm in c.arms:
            self._fit_arm(seed, arm, values, data["train"], data["val"])
        # the untuned model under the baseline arm's config (no checkpoint: the configured weights), then each arm
        evaluated = [("start", c.baseline, [])] + [(a.name, a.name, ["--ckpt_path", str(seed_dir / a.name / "checkpoints" / "last.ckpt")])
                                                    for a in c.arms]
        for name, config, ckpt in evaluated:
            target = seed_dir / "eval" / name
            tasks = ["--config", str(REPO / c.eval)] if c.eval else []
            self._once(target / "done", lambda config=config, ckpt=ckpt, target=target, tasks=tasks: self._cli(
                "evaluate", "--config", str(seed_dir / config / "config.yaml"), *tasks, "--trainer.limit_val_batches=1.0",
                *ckpt, "--output_dir", str(target)))

    def run(self) -> dict:
        from benchmarks.demos.sort_task import write_task

        self.out.mkdir(parents=True, exist_ok=True)
        if self.config.start == "pretrained":
            if not self.config.data_files:
                raise ValueError("start: pretrained needs data_files: {train: ..., val: ...}")
            data = {split: Path(path) for split, path in self.config.data_files.items()}
            for path in data.values():
                if not path.is_file():
                    raise FileNotFoundError(f"{path}: no such file (for SmolLM2: python -m benchmarks.demos.real_demo --prepare-only)")
            for seed in self.config.seeds:
                self.run_pretrained(seed, data)
            return self.summarise()
        data = write_task(self.out / "data", **self.config.data)
        for seed in self.config.seeds:
            self.run_seed(seed, data)
        return self.summarise()

    # --- summary --------------------------------------------------------------------------------
    def results(self, seed: int, name: str) -> dict[str, float]:
        return json.loads((self.out / f"seed_{seed}" / "eval" / name / "results.json").read_text())["metrics"]

    def curve(self, seed: int, arm: str, metric: str) -> dict[int, float]:
        """step -> value of one metric column of an arm's metrics.csv."""
        points, path = {}, self.out / f"seed_{seed}" / arm / "metrics.csv"
        if not path.is_file():  # a fit shorter than its log interval logs nothing
            return points
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                if row.get(metric) not in (None, ""):
                    points[int(row["step"])] = float(row[metric])
        return points

    def summarise(self) -> dict:
        c = self.config
        names = ["start"] + [f"start_{n}" for n in c.starts if c.start == "sft"] + [a.name for a in c.arms]
        rows = {}
        for name in names:
            per_seed = [self.results(s, name) for s in c.seeds]
            if name in self.other_tokenizer_names():  # its val metrics are its SFT loss's, not rewards
                per_seed = [{k: v for k, v in r.items() if k == "sort_verifier/accuracy"} for r in per_seed]
            stats = {}
            for key in SUMMARY:
                values = [r[key] for r in per_seed if isinstance(r.get(key), (int, float))]
                if values:
                    stats[key] = {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0, "seeds": values}
            rows[name] = {"metrics": stats, "vs_baseline": None}
            if c.eval:  # paired per prompt against the baseline arm, pooled over seeds
                base, mine = [], []
                for seed in c.seeds:
                    base += verdicts(self.out / f"seed_{seed}" / "eval" / c.baseline)
                    mine += verdicts(self.out / f"seed_{seed}" / "eval" / name)
                fixed, broken = discordant(base, mine)
                rows[name]["vs_baseline"] = {"fixed": fixed, "broken": broken, "p": mcnemar(fixed, broken)}
        curves = {a.name: {m: [self.curve(s, a.name, m) for s in c.seeds] for m in c.curves} for a in c.arms}
        summary = {"title": c.title, "finding": c.finding, "seeds": c.seeds, "baseline": c.baseline, "axis": c.axis,
                   "x": {a.name: a.x for a in c.arms}, "group": {a.name: a.group for a in c.arms}, "arms": rows, "curves": curves}
        (self.out / "study.json").write_text(json.dumps(summary, indent=1))
        (self.out / "study.md").write_text(markdown(summary))
        plot(summary, self.out / "study.png", c.log_axis)
        return summary


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="a study, e.g. configs/studies/dpop.yaml")
    parser.add_argument("--out", default=None, help="study directory (default runs/studies/<config name>)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="override the study's seeds")
    parser.add_argument("--force", action="store_true", help="re-run steps that already finished")
    parser.add_argument("--publish", default=None, help="copy study.{md,json,png} into this folder")
    parser.add_argument("--starts", default=None, help="folder of SFT starts shared by studies (default <out>/starts)")
    parser.add_argument("--over", default=None, metavar="RECIPE", help="run the arms over a real model's recipe instead "
                        "(e.g. configs/recipes/smollm2_dpo_lora.yaml): no SFT start, held-out reward metrics only")
    parser.add_argument("--data", default="runs/smollm2/data", help="with --over: folder of train.jsonl / val.jsonl pairs")
    args = parser.parse_args(argv)
    config = StudyConfig.load(args.config)
    if args.seeds:
        config.seeds = args.seeds
    stem = Path(args.config).stem
    if args.over:
        config, dropped = over_pretrained(config, args.over, args.data)
        stem = f"{stem}_{Path(args.over).stem}"
        if dropped:
            print(f"[study] over {args.over}: left out the arms that need the task's SFT starts: {dropped}", flush=True)
    out = Path(args.out or f"runs/studies/{stem}")
    summary = Study(config, out, args.force, Path(args.starts) if args.starts else None).run()
    print((out / "study.md").read_text())
    if args.publish:
        target = Path(args.publish)
        target.mkdir(parents=True, exist_ok=True)
        for name in ("study.md", "study.json", "study.png"):
            shutil.copy(out / name, target / f"{stem}.{name.split('.')[1]}")
        print(f"[study] published to {target}")
    return summary


if __name__ == "__main__":
    main()
