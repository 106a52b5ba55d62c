"""The synthetic engine's prefix cache, as vLLM counts it: full blocks of the prompt keyed by
the chain of block hashes (and the request's ``cache_salt``), hits counted in tokens.

It counts only: a hit does not shorten the synthetic prefill (docs/SYNTHETIC.md). Like vLLM,
the last prompt token is never served from cache (its logits are needed), the lookup stops at
the first block not cached, and every full block of a prompt is cached after it arrives.
"""

from __future__ import annotations

from loadgen.synthetic.wire import BadRequest

BLOCK = 16
_FORBIDDEN = frozenset("@/\\\x00")  # vLLM's validate_cache_salt
MAX_SALT = 128


def check_salt(salt: object) -> str | None:
    """vLLM's rule: absent, or a non-empty string of at most 128 characters without @ / \\."""
    if salt is None:
        return None
    if not isinstance(salt, str) or not salt or len(salt) > MAX_SALT or set(salt) & _FORBIDDEN:
        raise BadRequest("Parameter 'cache_salt' must be a non-empty string of at most "
                         f"{MAX_SALT} characters without @, / or \\")
    return salt


class PrefixCache:
    def __init__(self) -> None:
        self.blocks: set[int] = set()
        self.queries = 0
        self.hits = 0

    def lookup_and_insert(self, ids: list[int], salt: str | None) -> int:
        """Tokens of ``ids`` served from cache; counts the query, then caches its blocks."""
        h = hash(("salt", salt))
        hits = 0
        missed = False
        usable = (len(ids) - 1) // BLOCK  # full blocks before the last token
        for i in range(len(ids) // BLOCK):
            h = hash((h, tuple(ids[i * BLOCK:(i + 1) * BLOCK])))
            if not missed and i < usable and h in self.blocks:
                hits += BLOCK
            else:
                missed = True
            self.blocks.add(h)
        self.queries += len(ids)
        self.hits += hits
        return hits

    def reset(self) -> None:
        self.blocks.clear()
