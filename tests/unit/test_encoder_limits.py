"""Raw encoder requests are checked one by one before they join a batch (``encoder.check_token_inputs``)."""

import numpy as np
import pytest

from aisle_server.encoder import check_token_inputs, token_limits
from aisle_server.errors import InvalidInput
from aisle_server.tokenization import TokenizerSettings


def ok(batch=2, length=16):
    return np.ones((batch, length), dtype=np.int64), np.ones((batch, length), dtype=np.int64)


def test_valid_tokens_pass():
    check_token_inputs(*ok(), max_length=256, vocab_size=30522)


@pytest.mark.parametrize(
    "ids, mask, field",
    [
        (np.ones((1, 300), np.int64), np.ones((1, 300), np.int64), "input_ids"),  # longer than the tower
        (np.ones((1, 0), np.int64), np.ones((1, 0), np.int64), "input_ids"),  # empty sequence
        (np.full((1, 4), 30522, np.int64), np.ones((1, 4), np.int64), "input_ids"),  # out of vocabulary
        (np.full((1, 4), -1, np.int64), np.ones((1, 4), np.int64), "input_ids"),
        (np.ones((1, 4), np.int64), np.full((1, 4), 2, np.int64), "attention_mask"),
        (np.ones((1, 4), np.int64), np.ones((1, 5), np.int64), "attention_mask"),
    ],
)
def test_bad_tokens_name_their_tensor(ids, mask, field):
    with pytest.raises(InvalidInput) as caught:
        check_token_inputs(ids, mask, max_length=256, vocab_size=30522)
    assert caught.value.field == field


def test_limit_rounds_max_length_up_to_the_padding_multiple(tmp_path):
    TokenizerSettings(max_length=100, pad_to_multiple_of=16).save(tmp_path)
    assert token_limits(tmp_path) == (112, None)  # 100 tokens pad to 112: our own tokenizer's widest


class CountingEncoder:
    """A stand-in tower: the embedding is a fixed function of the unpadded tokens; counts rows run."""

    def __init__(self):
        self.rows = 0

    def __call__(self, ids, mask):
        self.rows += len(ids)
        return np.stack(
            [np.bincount((ids[i] * mask[i])[mask[i] == 1] % 8, minlength=8) for i in range(len(ids))]
        ).astype(np.float32)


def test_empty_text_memo_answers_empty_rows_without_the_tower():
    from aisle_server.encoder import EmptyTextMemo

    inner = CountingEncoder()
    empty_ids, empty_mask = np.array([101, 102, 0, 0]), np.array([1, 1, 0, 0])
    memo = EmptyTextMemo(inner, empty_ids, empty_mask)
    assert inner.rows == 1  # computed once, at load
    ids = np.array(
        [
            [101, 102] + [0] * 14,  # empty text, wider padding
            [101, 2023, 102] + [0] * 13,  # a real query
            [101, 102] + [0] * 14,
            [101, 102, 102] + [0] * 13,
        ]
    )  # same prefix, one more token: not empty
    mask = (ids != 0).astype(np.int64)
    out = memo(ids, mask)
    np.testing.assert_array_equal(out, CountingEncoder()(ids, mask))  # what the tower alone returns
    assert inner.rows == 1 + 2  # only the two non-empty rows ran
    memo(ids[[0, 2]], mask[[0, 2]])
    assert inner.rows == 3  # an all-feed batch never reaches the tower
