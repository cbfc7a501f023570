"""bert-base-uncased WordPiece tokenisation from a ``vocab.txt``, and training a small vocabulary.

Uses the ``tokenizers`` library directly (transformers 5's ``BertTokenizer(vocab_file=...)`` silently ignores
the file). Targets are ``[CLS] text [SEP]`` as in mPLUG; prompts are encoded the same way.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .files import record_digest

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


class Tokenizer:
    """Lower-casing BERT WordPiece tokenizer read from a ``vocab.txt`` (one token per line)."""

    def __init__(self, vocab_path: str | Path) -> None:
        from tokenizers import BertWordPieceTokenizer

        path = Path(vocab_path)
        if not path.is_file():
            raise FileNotFoundError(f"vocabulary file not found: {path}")
        self.vocab_path = path
        # Checked before BertWordPieceTokenizer, which raises a bare TypeError without [CLS] or [SEP].
        try:
            tokens = {line.rstrip() for line in path.read_text(encoding="utf-8").splitlines()}
        except UnicodeDecodeError as e:
            raise ValueError(
                f"{path} is not a text vocabulary ({e}); delete it and rerun the stage that wrote it "
                "(train_vocab or fetch_vocab)"
            ) from None
        missing = [t for t in SPECIAL_TOKENS[:4] if t not in tokens]
        if missing:
            raise ValueError(f"{path} lacks special token(s) {missing}: not a BERT vocabulary")
        self._tok = BertWordPieceTokenizer(str(path), lowercase=True)
        vocab = self._tok.get_vocab()
        self.pad_id, self.unk_id = vocab["[PAD]"], vocab["[UNK]"]
        self.cls_id, self.sep_id = vocab["[CLS]"], vocab["[SEP]"]
        self.vocab_size = self._tok.get_vocab_size()

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self._tok.encode(text, add_special_tokens=add_special_tokens).ids

    def lengths(self, texts: list[str], add_special_tokens: bool = True) -> list[int]:
        """``len(encode(t))`` of every text, encoded in one parallel batch."""
        return [len(e.ids) for e in self._tok.encode_batch(list(texts), add_special_tokens=add_special_tokens)]

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids, skip_special_tokens=True)

    def batch(self, texts: list[str], max_length: int, add_special_tokens: bool = True) -> tuple[torch.Tensor, ...]:
        """Right-padded ``(ids, mask)``; sequences longer than ``max_length`` are cut (keeping the final [SEP])."""
        seqs = []
        for t in texts:
            ids = self.encode(t, add_special_tokens)
            if len(ids) > max_length:
                ids = ids[: max_length - 1] + (
                    [self.sep_id] if add_special_tokens else ids[max_length - 1 : max_length]
                )
            seqs.append(ids)
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
            mask[i, : len(s)] = 1
        return ids, mask


def train_vocab(texts: list[str], out_path: str | Path, vocab_size: int = 400) -> Path:
    """A WordPiece vocabulary (bert-base-uncased format, specials first) for a small closed corpus.

    Deterministic by construction: every character (word-initial and ``##`` continuation), then whole words by
    decreasing frequency (ties alphabetical), cut at ``vocab_size`` (never below the character set, so every
    text stays encodable). ``tokenizers``' WordPiece trainer breaks frequency ties in hash order and gives a
    different vocabulary on every run (huggingface/tokenizers#1794), which would make the mini study irreproducible.
    """
    from collections import Counter

    from tokenizers.normalizers import BertNormalizer
    from tokenizers.pre_tokenizers import BertPreTokenizer

    normalizer, pre = BertNormalizer(lowercase=True), BertPreTokenizer()
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(word for word, _ in pre.pre_tokenize_str(normalizer.normalize_str(text)))
    chars = sorted({c for word in counts for c in word})
    words = [w for w in sorted(counts, key=lambda w: (-counts[w], w)) if len(w) > 1]
    vocab = SPECIAL_TOKENS + chars + ["##" + c for c in chars] + words
    vocab = vocab[: max(vocab_size, len(SPECIAL_TOKENS) + 2 * len(chars))]
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text("".join(f"{t}\n" for t in vocab))
    tmp.replace(out)
    record_digest(out)  # the runs reading it take its content digest from the sidecar
    return out
