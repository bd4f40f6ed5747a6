"""MT-Bench judge prompts (Zheng et al. 2023, "Judging LLM-as-a-Judge with MT-Bench and Chatbot Arena").

The official ``judge_prompts.jsonl`` of FastChat's llm_judge can be loaded from a path. The project's
own defaults below are worded independently but keep the official structure: the same template
names, the same placeholders ({question}, {answer}, {question_1}, {answer_a_2}, {ref_answer_1} ...),
the same section markers and the same output formats (``[[rating]]`` and ``[[A]]``/``[[B]]``/``[[C]]``),
so the parsers are the same for both.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class JudgePrompt:
    name: str
    system_prompt: str
    prompt_template: str
    output_format: str


DEFAULT_VERSION = "lit-align-mt-bench-v1"

_RATE = ('After the explanation, rate the response from 1 to 10, writing the rating strictly in this format: '
         '"[[rating]]", for example: "Rating: [[5]]".')
_PICK = ('After the explanation, give your final verdict strictly in this format: "[[A]]" if assistant A is better, '
         '"[[B]]" if assistant B is better, and "[[C]]" for a tie.')
_FAIR = ("Do not let the order of the answers, their length or the assistants' names influence you. Be as objective as possible. ")
_GENERAL = "Judge helpfulness, relevance, accuracy, depth, creativity and level of detail. "
_MATH = "Judge correctness and helpfulness: compare with the reference answer, identifying and correcting any mistakes. "

_Q1 = "[Question]\n{question}\n\n"
_REF1 = "[The Start of Reference Answer]\n{ref_answer_1}\n[The End of Reference Answer]\n\n"
_ANS = "[The Start of Assistant's Answer]\n{answer}\n[The End of Assistant's Answer]"
_PAIR1 = ("[The Start of Assistant A's Answer]\n{answer_a}\n[The End of Assistant A's Answer]\n\n"
          "[The Start of Assistant B's Answer]\n{answer_b}\n[The End of Assistant B's Answer]")


def _conversation(who: str, a1: str, a2: str) -> str:
    return (f"<|The Start of {who}|>\n\n### User:\n{{question_1}}\n\n### {a1.split('|')[0]}:\n{{{a1.split('|')[1]}}}\n\n"
            f"### User:\n{{question_2}}\n\n### {a2.split('|')[0]}:\n{{{a2.split('|')[1]}}}\n\n<|The End of {who}|>")


_REF_CONV = _conversation("Reference Answer", "Reference answer|ref_answer_1", "Reference answer|ref_answer_2")
_A_CONV = _conversation("Assistant A's Conversation with User", "Assistant A|answer_a_1", "Assistant A|answer_a_2")
_B_CONV = _conversation("Assistant B's Conversation with User", "Assistant B|answer_b_1", "Assistant B|answer_b_2")
_SINGLE_CONV = _conversation("Assistant A's Conversation with User", "Assistant A|answer_1", "Assistant A|answer_2")
_JUDGE_ONE = "You are an impartial judge of the answer an AI assistant gave to the user question below. "
_JUDGE_TWO = "You are an impartial judge comparing the answers two AI assistants gave to the user question below. "
_SECOND = "Focus on the answer to the second user question. Begin with a short explanation. "

DEFAULT_PROMPTS: dict[str, JudgePrompt] = {
    p.name: p
    for p in [
        JudgePrompt("single-v1", "You are a helpful assistant.",
                    "[Instruction]\n" + _JUDGE_ONE + _GENERAL + "Begin with a short explanation. " + _RATE + "\n\n" + _Q1 + _ANS, "[[rating]]"),
        JudgePrompt("single-math-v1", "You are a helpful assistant.",
                    "[Instruction]\n" + _JUDGE_ONE + _MATH + "Begin with a short explanation. " + _RATE + "\n\n" + _Q1 + _REF1 + _ANS, "[[rating]]"),
        JudgePrompt("single-v1-multi-turn", _JUDGE_ONE + _GENERAL + _SECOND + _RATE, _SINGLE_CONV, "[[rating]]"),
        JudgePrompt("single-math-v1-multi-turn", _JUDGE_ONE + _MATH + _SECOND + _RATE, _REF_CONV + "\n\n\n" + _SINGLE_CONV, "[[rating]]"),
        JudgePrompt("pair-v2", _JUDGE_TWO + _GENERAL + "Begin with a short comparison. " + _FAIR + _PICK,
                    "[User Question]\n{question}\n\n" + _PAIR1, "[[A]]"),
        JudgePrompt("pair-math-v1", _JUDGE_TWO + _MATH + "Begin with a short comparison. " + _FAIR + _PICK,
                    "[User Question]\n{question}\n\n" + _REF1 + _PAIR1, "[[A]]"),
        JudgePrompt("pair-v2-multi-turn", _JUDGE_TWO + _GENERAL + _SECOND + _FAIR + _PICK, _A_CONV + "\n\n\n" + _B_CONV, "[[A]]"),
        JudgePrompt("pair-math-v1-multi-turn", _JUDGE_TWO + _MATH + _SECOND + _FAIR + _PICK,
                    _REF_CONV + "\n\n\n" + _A_CONV + "\n\n\n" + _B_CONV, "[[A]]"),
    ]
}


def load_judge_prompts(path: str | None) -> tuple[dict[str, JudgePrompt], str]:
    """The prompts and their version: the defaults, or an official-format jsonl file.

    The version of a file is ``<file name>@sha256:<first 12 hex>`` so results say exactly which
    prompts were used.
    """
    if path is None:
        return dict(DEFAULT_PROMPTS), DEFAULT_VERSION
    raw = Path(path).read_bytes()
    prompts: dict[str, JudgePrompt] = {}
    for line_no, line in enumerate(raw.decode("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            prompts[row["name"]] = JudgePrompt(row["name"], row["system_prompt"], row["prompt_template"], row["output_format"])
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{line_no}: invalid JSON ({err.msg})") from None
        except KeyError as err:
            raise ValueError(f"{path}:{line_no}: judge prompt missing key {err}") from None
    missing = sorted(set(DEFAULT_PROMPTS) - set(prompts))
    if missing:
        raise ValueError(f"{path}: judge prompt file lacks templates {missing}")
    return prompts, f"{Path(path).name}@sha256:{hashlib.sha256(raw).hexdigest()[:12]}"
