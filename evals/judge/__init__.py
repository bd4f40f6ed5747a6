"""LLM-as-a-judge: an OpenAI-compatible client with retries and a request-keyed cache, the judge
prompt templates (MT-Bench, AlpacaEval) and the parsers of their verdicts."""

from evals.judge.cache import JudgeCache, request_key
from evals.judge.client import JudgeClient, JudgeRequest, JudgeResponse, JudgeStats

__all__ = ["JudgeCache", "JudgeClient", "JudgeRequest", "JudgeResponse", "JudgeStats", "request_key"]
