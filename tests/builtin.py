"""The built-in prompts tokenized with SmolLM2's tokenizer (the real engines' model), for the
real-engine tests; a clean skip where the `data` extra (the tokenizer) is not installed."""

from __future__ import annotations

import pytest

from loadgen.data.prompts import PromptFile


def smollm2_prompts() -> PromptFile:
    try:
        from loadgen.data.builtin import builtin_prompts

        return builtin_prompts("smollm2")
    except ImportError as exc:  # the `data` extra is not installed
        pytest.skip(f"cannot tokenize the built-in prompts: {exc}")
