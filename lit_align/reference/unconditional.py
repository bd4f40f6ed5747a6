"""Unconditional reference log-probs: each response scored WITHOUT its prompt.

This is the "likelihood" reward of the reference-policy study (Liu, Liu, Cohan 2024, arXiv
2407.13709): ``beta * [log pi(y|x) - log p(y)]`` with ``p`` the SFT model's unconditional
log-probability of the response.

Start symbol: a response with its prompt removed still needs a first position to be predicted
from, so each completion is re-packed left-aligned behind ONE start token: the tokenizer's BOS
token if it has one, else its EOS token (what a causal LM has seen right before a new document in
packed pre-training). The first completion token is therefore scored as ``p(y_1 | <start>)``; the
same completion tokens as in the conditional batch are scored, so token counts agree.
"""

from __future__ import annotations

import torch
from torch import nn

from lit_align.batch import LogpsRequest, PreferenceBatch, SequenceLogps
from lit_align.errors import ConfigError
from lit_align.logprobs import sequence_logps
from lit_align.reference.base import ReferenceContext
from lit_align.reference.frozen import FrozenReference


def start_token_id(tokenizer) -> int:
    """BOS if the tokenizer has one, else EOS (see the module docstring)."""
    token = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if token is None:
        raise ConfigError("unconditional scoring needs a tokenizer with a BOS or EOS token")
    return int(token)


def strip_prompts(batch: PreferenceBatch, start_id: int) -> PreferenceBatch:
    """The batch's completions alone, as a padded batch: row s is ``[start] + completion s``, right-padded.

    Works from either layout (a packed row's completions are found by ``seq_ids``). Padding
    positions hold ``start_id`` but are masked (attention and completion masks 0).
    """
    completion = batch.completion_mask.bool()  # (R, T)
    if batch.packed:
        completions = [batch.input_ids[completion & (batch.seq_ids == s)] for s in range(2 * batch.num_pairs)]
    else:
        completions = [batch.input_ids[i][completion[i]] for i in range(completion.shape[0])]
    rows, width = len(completions), max(len(c) for c in completions) + 1
    input_ids = torch.full((rows, width), start_id, dtype=batch.input_ids.dtype, device=batch.input_ids.device)
    attention = torch.zeros((rows, width), dtype=batch.attention_mask.dtype, device=batch.input_ids.device)
    scored = torch.zeros((rows, width), dtype=batch.completion_mask.dtype, device=batch.input_ids.device)
    for i, tokens in enumerate(completions):  # (n,) tokens of sequence i, in order
        n = len(tokens)
        input_ids[i, 1 : n + 1] = tokens
        attention[i, : n + 1] = 1
        scored[i, 1 : n + 1] = 1
    return PreferenceBatch(
        input_ids=input_ids, attention_mask=attention, completion_mask=scored, index=batch.index,
        scores=batch.scores, ref_logps=batch.ref_logps, prompt_lengths=torch.zeros_like(batch.index),
    )


class UnconditionalReference(FrozenReference):
    """A frozen model (the policy's start or ``source``) scoring each response without its prompt, every step.

    To score once and reuse, use ``CachedReference(unconditional=True)`` instead.
    """

    scores_unconditionally = True
    provides_logits = False  # its logits are over another sequence layout: they cannot be mixed with the policy's

    def configure(self, policy: nn.Module, context: ReferenceContext) -> None:
        super().configure(policy, context)
        self.start_id = start_token_id(context.tokenizer)

    @torch.no_grad()
    def logps(self, policy: nn.Module, batch: PreferenceBatch, request: LogpsRequest) -> SequenceLogps:
        return sequence_logps(self.model, strip_prompts(batch, self.start_id), request, self.chunk_size)
