"""Planted keys leak nowhere: not into any file under the run directory (config.yaml, hparams.yaml,
metrics.csv, checkpoints, the HF export, results.json, judgments, caches), nor into stdout / stderr,
while the key from the environment still reaches the judge endpoint.

Planted: a key in the environment variable that ``api_key_env`` names; a key inside ``base_url``
(``http://user:KEY@host``); a key written as ``api_key`` in a config; a key typed into ``api_key_env``;
and a judge endpoint that echoes the Authorization headers it received in its replies.
"""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import yaml

from tests.evals_support.fake_openai import FakeOpenAIServer

MT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mt_bench"
KEY_PREFIX = "sk" + "-"  # fake keys, assembled so that secret scanners do not flag this file
ENV_KEY = KEY_PREFIX + "envPLANTED0a1b2c3d4e5f60718293"
URL_KEY = "urlPLANTED9f8e7d6c5b4a"
CONFIG_KEY = KEY_PREFIX + "cfgPLANTED1122334455667788"
TYPED_KEY = KEY_PREFIX + "typedPLANTED99887766554433"
PLANTED = (ENV_KEY, URL_KEY, CONFIG_KEY, TYPED_KEY)


def files_holding(root: Path, secrets=PLANTED) -> list[str]:
    """Every file under ``root`` (binary ones included) containing any of ``secrets``."""
    return sorted(f"{p} ({s[:8]}...)" for p in root.rglob("*") if p.is_file() for s in secrets if s.encode() in p.read_bytes())


def mt_bench(base_url: str, **judge) -> dict:
    return {"class_path": "evals.mt_bench.MTBench",
            "init_args": {"question_file": str(MT / "question.jsonl"), "limit": 2, "max_new_tokens": 3, "batch_size": 2,
                          "judge": {"class_path": "evals.judge.JudgeClient",
                                    "init_args": {"model": "judge-x", "base_url": base_url, "timeout": 10, "max_retries": 0,
                                                  **judge}}}}


def fit_config(tmp_path: Path, data: dict, base_url: str) -> Path:
    config = {
        "seed_everything": 0,
        "model": {"model": {"class_path": "lit_align.models.TinyModel",
                            "init_args": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "max_position_embeddings": 4096}},
                  "loss": {"class_path": "lit_align.losses.DPO"}, "reference": {"class_path": "lit_align.reference.FrozenReference"}},
        "data": {"class_path": "lit_align.data.PreferenceDataModule",
                 "init_args": {"train_path": str(data["train"]), "val_path": str(data["val"]), "batch_size": 4,
                               "max_length": 64, "max_prompt_length": 48}},
        "trainer": {"max_steps": 2, "log_every_n_steps": 1, "enable_progress_bar": False, "enable_model_summary": False,
                    "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger",
                               "init_args": {"save_dir": str(tmp_path), "name": "run", "version": ""}},
                    "callbacks": [{"class_path": "callbacks.post_fit_eval.PostFitEvaluation",
                                   "init_args": {"tasks": [mt_bench(base_url, api_key_env="LIT_ALIGN_TEST_JUDGE_KEY")]}}]},
    }
    path = tmp_path / "fit.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_redaction_of_text_and_config_trees():
    from lit_align.redaction import is_env_var_name, redact, redact_text

    assert redact_text("http://user:KEY1@host:8/v1 and https://h/v1?x=1&api_key=KEY2&y=2") == \
        "http://***@host:8/v1 and https://h/v1?x=***&api_key=***&y=***"  # every query value
    assert redact_text("{'api_key': 'abc', 'api_key_env': 'OPENAI_API_KEY', 'max_tokens': 5}") == \
        "{'api_key': '***', 'api_key_env': 'OPENAI_API_KEY', 'max_tokens': 5}"
    assert redact_text("failed with " + "sk-" + "abcdefghijklmnopqrstu" + " and hf_" + "a1" * 17) == "failed with *** and ***"
    assert redact_text("runs/demo/sft/hf https://api.openai.com/v1 tokenizer: x") == "runs/demo/sft/hf https://api.openai.com/v1 tokenizer: x"
    assert redact({"judge": {"base_url": "http://u:K@h/v1", "api_key": "x", "api_key_env": "VLLM_API_KEY"}, "n": [1, "a"]}) == \
        {"judge": {"base_url": "http://***@h/v1", "api_key": None, "api_key_env": "VLLM_API_KEY"}, "n": [1, "a"]}
    assert all(is_env_var_name(n) for n in ("OPENAI_API_KEY", "FAKE_JUDGE_KEY", "my_judge_key_2"))
    assert not any(is_env_var_name(k) for k in (TYPED_KEY, "3f9a8b7c6d5e4f3a2b1c0d9e", "hf_" + "Ab1" * 11, "not a name"))


def test_judge_client_refuses_a_key_in_config_or_in_api_key_env_without_echoing_it():
    from evals.judge import JudgeClient

    with pytest.raises(ValueError, match="api_key is not accepted") as err:
        JudgeClient(model="m", api_key=CONFIG_KEY)
    assert CONFIG_KEY not in str(err.value)
    with pytest.raises(ValueError, match="api_key_env must be the NAME of an environment variable") as err:
        JudgeClient(model="m", api_key_env=TYPED_KEY)
    assert TYPED_KEY not in str(err.value)
    described = JudgeClient(model="m", base_url=f"http://u:{URL_KEY}@h/v1").describe()
    assert described["base_url"] == "http://***@h/v1"


@pytest.mark.slow
def test_planted_keys_are_in_no_file_of_the_run_and_in_no_output(tmp_path, monkeypatch, capfd):
    import cli
    from benchmarks.demos.sort_task import write_task

    assert MT.is_dir(), f"shared data missing: {MT}"
    monkeypatch.setenv("LIT_ALIGN_TEST_JUDGE_KEY", ENV_KEY)
    data = write_task(tmp_path / "data", train=16, val=4, test=4)
    with FakeOpenAIServer() as server:
        # the endpoint echoes the credentials it received (the Authorization headers of this run) in its verdicts
        server.fault = lambda body, n: ("content", f"Rating: [[5]] (headers seen: {sorted(server.authorization)})")
        url = server.base_url.replace("http://", f"http://judge:{URL_KEY}@")
        cli.main(["fit", "--config", str(fit_config(tmp_path, data, url))])
        run = tmp_path / "run"
        post_fit = (run / "eval" / "results.json").read_text()
        assert '"complete": true' in post_fit and '"base_url": "http://***@127.0.0.1' in post_fit
        after_fit = set(server.authorization)
        server.authorization.clear()  # (the evaluation's judge echoes its own credentials, not the fit's)
        tasks = tmp_path / "tasks.yaml"
        # evaluate with the plain URL: the environment's key is the bearer token
        tasks.write_text(yaml.safe_dump({"tasks": [mt_bench(server.base_url, api_key_env="LIT_ALIGN_TEST_JUDGE_KEY")]}))
        cli.main(["evaluate", "--config", str(run / "config.yaml"), "--config", str(tasks),
                  "--ckpt_path", str(run / "checkpoints" / "last.ckpt")])
        assert (run / "eval" / "version_0" / "results.json").is_file()
        sent = server.count()
        authorization = after_fit | set(server.authorization)

        for judge, message in (({"api_key": CONFIG_KEY}, "api_key is not accepted"),
                               ({"api_key_env": TYPED_KEY}, "api_key_env must be the NAME")):
            tasks.write_text(yaml.safe_dump({"tasks": [mt_bench(url, **judge)]}))
            with pytest.raises(ValueError, match=message) as err:
                cli.main(["evaluate", "--config", str(run / "config.yaml"), "--config", str(tasks)])
            assert not any(s in str(err.value) for s in PLANTED), str(err.value)
        # an argument error quotes the whole task list, base_url included: masked
        tasks.write_text(yaml.safe_dump({"tasks": [mt_bench(url, api_key_env="LIT_ALIGN_TEST_JUDGE_KEY", bogus_option=1)]}))
        with pytest.raises(cli.UsageError) as refused:  # cli.run prints it as the one error line
            cli.main(["evaluate", "--config", str(run / "config.yaml"), "--config", str(tasks)])
    assert "bogus_option" in str(refused.value) and "http://***@127.0.0.1" in str(refused.value)  # masked
    out, err = capfd.readouterr()
    assert not [s for s in PLANTED if s in out + err + str(refused.value)]

    assert sent == 4 * 2  # 2 questions x 2 turns, judged after fit and by evaluate
    # both keys reached the endpoint: the environment's as the bearer token (evaluate), the URL's
    # credentials as basic auth (post-fit; httpx sends userinfo that way, in place of the bearer token)
    basic = "Basic " + base64.b64encode(f"judge:{URL_KEY}".encode()).decode()
    assert authorization == {f"Bearer {ENV_KEY}", basic}
    assert files_holding(run, PLANTED + (basic.removeprefix("Basic "),)) == []  # (the test's own input files, outside the run, hold them)
    judgments = [p.read_text() for p in run.rglob("judgments.jsonl")] + [p.read_text() for p in run.rglob("judge_cache.jsonl")]
    assert len(judgments) == 4 and all("headers seen: [" in text and "***" in text for text in judgments)  # echoed, masked
    assert len(list(run.rglob("*"))) > 20  # config, hparams, metrics, checkpoint, export, two evaluations
    assert (run / "checkpoints" / "last.ckpt").is_file() and (run / "hf" / "model.safetensors").is_file()
