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
