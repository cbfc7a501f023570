"""Batched beam search for the mPLUG decoder, with a key/value cache (greedy = one beam).

Scores follow GNMT (Wu et al. 2016): a hypothesis of ``n`` generated tokens (its EOS included) is ranked by
``sum(log p) / ((5 + n) / 6) ** alpha``. EOS is masked until ``min_new_tokens`` tokens exist. The decoder
starts from ``[CLS]`` plus an optional decoder prompt, which is prefilled in one pass and stripped from the
output. ``use_cache=False`` recomputes the whole sequence at every step: the reference the cache is tested
against, token for token.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .mplug import MPlug


@dataclass(frozen=True)
class GenerationConfig:
    num_beams: int = 5
    min_new_tokens: int = 1
    max_new_tokens: int = 10
    length_penalty: float = 0.6
    use_cache: bool = True

    def __post_init__(self) -> None:
        if self.num_beams < 1:
            raise ValueError(f"num_beams must be >= 1, got {self.num_beams}")
        if not 0 <= self.min_new_tokens <= self.max_new_tokens or self.max_new_tokens < 1:
            raise ValueError(f"need 0 <= min_new_tokens <= max_new_tokens, >= 1; got {self}")


def gnmt_penalty(length: int, alpha: float) -> float:
    return ((5.0 + length) / 6.0) ** alpha


@torch.no_grad()
def generate(
    model: MPlug,
    images: torch.Tensor,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    cfg: GenerationConfig,
    decoder_prompt: list[int] | None = None,
) -> list[list[int]]:
    """Generate token ids (without BOS, decoder prompt and EOS) for every image/prompt pair."""
    mc = model.config
    states, states_mask = model.encode(images, prompt_ids, prompt_mask)
    batch, k = states.shape[0], cfg.num_beams
    device = states.device
    states = states.repeat_interleave(k, dim=0)
    states_mask = states_mask.repeat_interleave(k, dim=0)
    start = [mc.bos_token_id] + list(decoder_prompt or [])
    seqs = torch.tensor(start, device=device).repeat(batch * k, 1)
    n_start = seqs.shape[1]
    # Only beam 0 is live at the start, so the first top-k draws k distinct tokens.
    beam_scores = torch.full((batch, k), float("-inf"), device=device)
    beam_scores[:, 0] = 0.0
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(batch)]
    done = [False] * batch
    cache = model.text_decoder.new_cache() if cfg.use_cache else None
    step_input = seqs
    past = 0
    for t in range(cfg.max_new_tokens):
        full_mask = torch.ones(seqs.shape, dtype=torch.long, device=device)
        if cfg.use_cache:
            logits = model.text_decoder(step_input, full_mask, states, states_mask, cache=cache, past_length=past)
            past = seqs.shape[1]
        else:
            logits = model.text_decoder(seqs, full_mask, states, states_mask)
        logp = torch.log_softmax(logits[:, -1].float(), dim=-1)
        if t < cfg.min_new_tokens:
            logp[:, mc.eos_token_id] = float("-inf")
        vocab = logp.shape[-1]
        cand = (beam_scores[:, :, None] + logp.view(batch, k, vocab)).view(batch, k * vocab)
        top_scores, top_idx = cand.topk(min(2 * k, k * vocab), dim=1)
        top_scores, top_idx = top_scores.tolist(), top_idx.tolist()
        next_beam, next_tok, next_score = [], [], []
        for b in range(batch):
            chosen: list[tuple[int, int, float]] = []
            if not done[b]:
                for score, idx in zip(top_scores[b], top_idx[b]):
                    beam, tok = divmod(idx, vocab)
                    if score == float("-inf"):
                        break
                    if tok == mc.eos_token_id:
                        hyp = seqs[b * k + beam, n_start:].tolist()
                        finished[b].append((score / gnmt_penalty(t + 1, cfg.length_penalty), hyp))
                        finished[b].sort(key=lambda x: -x[0])
                        del finished[b][k:]
                    else:
                        chosen.append((beam, tok, score))
                    if len(chosen) == k:
                        break
                best_running = chosen[0][2] if chosen else float("-inf")
                # Exact stop: a running beam's score can only fall and its length penalty is at most that of
                # max_new_tokens, so no running beam can beat the worst kept hypothesis. One beam is greedy search:
                # its EOS is only recorded when it is the argmax, and greedy decoding stops there.
                if len(finished[b]) == k and (
                    k == 1
                    or not chosen
                    or finished[b][-1][0] >= best_running / gnmt_penalty(cfg.max_new_tokens, cfg.length_penalty)
                ):
                    done[b] = True
            while len(chosen) < k:  # finished items keep dummy beams
                chosen.append((0, mc.pad_token_id, float("-inf")))
            for beam, tok, score in chosen:
                next_beam.append(b * k + beam)
                next_tok.append(tok)
                next_score.append(score)
        if all(done):
            break
        index = torch.tensor(next_beam, device=device)
        seqs = torch.cat([seqs.index_select(0, index), torch.tensor(next_tok, device=device)[:, None]], dim=1)
        beam_scores = torch.tensor(next_score, device=device).view(batch, k)
        if cache is not None:
            for layer_cache in cache:
                layer_cache.reorder(index)
        step_input = seqs[:, -1:]
    out = []
    n_new = seqs.shape[1] - n_start
    for b in range(batch):
        hyps = list(finished[b])
        if not done[b]:
            for j in range(k):
                score = beam_scores[b, j].item()
                if score > float("-inf"):
                    hyps.append((score / gnmt_penalty(n_new, cfg.length_penalty), seqs[b * k + j, n_start:].tolist()))
        hyps.sort(key=lambda x: -x[0])
        out.append(hyps[0][1] if hyps else [])
    return out
