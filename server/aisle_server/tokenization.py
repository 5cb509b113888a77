"""Text → token ids, shared by the ``tokenizer`` Triton model and by offline indexing.

One implementation serves both paths so that the item embeddings written by ``aisle index`` and
the query embeddings computed by the server see byte-for-byte the same token ids.

Sequences are padded to a multiple of ``pad_to_multiple_of`` (not to the batch maximum alone):
Triton's dynamic batcher only merges requests whose tensors have the same shape, so bucketing the
sequence length lets short queries from different callers share one encoder batch.
Over-long text is truncated to the tower's ``max_length`` — never an error. Before tokenizing, a
text is cut to ``max_length × CHARS_PER_TOKEN`` characters: the tokenizer's work (and memory)
grows with the whole text even though only its first ``max_length`` tokens are kept, so one
caller's multi-megabyte query would otherwise cost the server seconds.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from aisle_contract import CHARS_PER_TOKEN, MAX_QUERY_CHARS  # noqa: F401 - MAX_QUERY_CHARS re-exported

SETTINGS_FILE = "tokenizer_settings.json"

TOKENIZER_FILE = "tokenizer.json"


class TextDecodeError(ValueError):
    """A text input is not valid UTF-8; ``index`` is its position in the batch."""

    def __init__(self, index: int, reason: str):
        super().__init__(f"text #{index} is not valid UTF-8 ({reason})")
        self.index = index


@dataclass(frozen=True)
class TokenizerSettings:
    max_length: int = 256
    pad_to_multiple_of: int = 16

    def save(self, directory: Path) -> None:
        (Path(directory) / SETTINGS_FILE).write_text(json.dumps(self.__dict__, indent=2) + "\n")

    @classmethod
    def load(cls, directory: Path) -> TokenizerSettings:
        path = Path(directory) / SETTINGS_FILE
        return cls(**json.loads(path.read_text())) if path.exists() else cls()


def decode_field(name: str, values: Sequence[bytes | str], max_chars: int | None = None) -> list[str]:
    """``decode_utf8`` for a request field: a bad value is ``InvalidInput`` naming ``name``."""
    from .errors import InvalidInput

    try:
        return decode_utf8(values, max_chars)
    except TextDecodeError as exc:
        raise InvalidInput(name, str(exc)) from None


def decode_utf8(values: Sequence[bytes | str], max_chars: int | None = None) -> list[str]:
    """Decode raw BYTES tensor elements, naming the first element that is not UTF-8.

    With ``max_chars``, only the bytes that can hold that many characters are decoded (UTF-8 has at
    most 4 bytes a character) and the text is cut there: a multi-megabyte element costs what its
    prefix costs. A character split by the byte cut is dropped, not an error; bytes past the cut
    are not read, so they are not checked either.
    """
    texts = []
    for i, value in enumerate(values):
        if isinstance(value, str):
            texts.append(value if max_chars is None else value[:max_chars])
            continue
        try:
            if max_chars is None or len(value) <= 4 * max_chars:  # within the budget: every byte read
                text = bytes(value).decode("utf-8")
                texts.append(text if max_chars is None else text[:max_chars])
            else:
                head = memoryview(value)[: 4 * max_chars]
                texts.append(codecs.getincrementaldecoder("utf-8")().decode(head, final=False)[:max_chars])
        except UnicodeDecodeError as exc:
            raise TextDecodeError(i, str(exc)) from None
    return texts


class TextTokenizer:
    """Batched Hugging Face ``tokenizers`` wrapper producing int64 ``input_ids``/``attention_mask``."""

    def __init__(self, tokenizer_json: Path, settings: TokenizerSettings | None = None):
        self.settings = settings or TokenizerSettings()
        self._tok = Tokenizer.from_file(str(tokenizer_json))
        self._tok.enable_truncation(max_length=self.settings.max_length)
        pad_id = self._tok.token_to_id("[PAD]")
        self._tok.enable_padding(
            pad_id=0 if pad_id is None else pad_id,
            pad_token="[PAD]",
            pad_to_multiple_of=self.settings.pad_to_multiple_of,
        )

    @property
    def max_chars(self) -> int:
        """Characters of a text kept before tokenizing (see the module docstring)."""
        return self.settings.max_length * CHARS_PER_TOKEN

    @classmethod
    def from_directory(cls, directory: Path) -> TextTokenizer:
        directory = Path(directory)
        return cls(directory / TOKENIZER_FILE, TokenizerSettings.load(directory))

    def __call__(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(input_ids, attention_mask)``, each int64 of shape (len(texts), padded_len)."""
        if not texts:
            empty = np.zeros((0, self.settings.pad_to_multiple_of), dtype=np.int64)
            return empty, empty.copy()
        encodings = self._tok.encode_batch([text[: self.max_chars] for text in texts])
        ids = np.asarray([e.ids for e in encodings], dtype=np.int64)
        mask = np.asarray([e.attention_mask for e in encodings], dtype=np.int64)
        return ids, mask
