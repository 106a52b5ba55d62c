"""Target-model tokenizers and chat templates, turned into exact token ids.

A tokenizer is named by a local HF folder, a GGUF file (its tokenizer and chat template are read
through transformers' GGUF support), a hub name (only when online), or the shortcut ``smollm2``
(the cached SmolLM2-135M-Instruct GGUF, loadgen.models.smollm2).

Conventions (the same as SPEED-Bench's reference harness and vLLM's chat endpoint):

* chat prompts are ``render(messages, add_generation_prompt=True)`` encoded with
  ``add_special_tokens=False``: the template already holds BOS if the model wants one, so ids never
  start with a double BOS (a second one, if a template and tokenizer both add it, is dropped);
* ``--raw`` prompts (no template) are encoded with the tokenizer's own special-token policy;
* a later user turn is the token suffix that follows the previous assistant reply: the template is
  rendered with a sentinel reply, and the ids after the sentinel (end of the assistant turn, the
  user
  turn, the generation prompt) are kept. The split is checked on ids: the ids of the text before the
  split must be a prefix of the ids of the whole conversation.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadgen.cache import cache_dir, publish_dir, publish_text

SMOLLM2_ALIASES = ("smollm2", "smollm2-135m", "smollm2-135m-instruct")
REPLY_SENTINEL = "LOADGENREPLYSENTINEL"


class TokenizerError(RuntimeError):
    """A tokenizer that cannot be loaded or used; the message says what to do."""


def _sha256_file(path: Path) -> str:
    """sha256 of a file, memoised in the cache by (path, size, mtime)."""
    st = path.stat()
    ident = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    key = hashlib.sha256(ident.encode()).hexdigest()[:24]
    memo = cache_dir("tokenizers", "filehash") / key
    if memo.exists():
        return memo.read_text().strip()
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            h.update(chunk)
    digest = h.hexdigest()
    publish_text(memo, digest)
    return digest


def _sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass
class ChatTokenizer:
    """A loaded tokenizer plus the identity recorded in prompt-file headers."""

    hf: Any
    name: str
    source: str
    kind: str  # "gguf" | "folder" | "hub"
    file_sha256: str | None = None
    notes: list[str] = field(default_factory=list)
    _identity: dict[str, Any] | None = None

    # ----- identity -------------------------------------------------------------------------
    @property
    def chat_template(self) -> str | None:
        tpl = getattr(self.hf, "chat_template", None)
        if isinstance(tpl, dict):  # several named templates: the default one
            tpl = tpl.get("default") or next(iter(tpl.values()))
        return tpl

    @property
    def bos_id(self) -> int | None:
        return self.hf.bos_token_id

    def identity(self) -> dict[str, Any]:
        """Name, source, vocab hash, file hash and chat-template hash (for the file header)."""
        if self._identity is None:
            vocab = self.hf.get_vocab()
            vocab_json = json.dumps(sorted(vocab.items(), key=lambda kv: kv[1]), ensure_ascii=False)
            tpl = self.chat_template
            self._identity = {
                "name": self.name,
                "source": self.source,
                "kind": self.kind,
                "vocab_size": len(vocab),
                "vocab_sha256": _sha256_text(vocab_json),
                "file_sha256": self.file_sha256,
                "bos_token_id": self.hf.bos_token_id,
                "eos_token_id": self.hf.eos_token_id,
            }
            self._identity["chat_template_sha256"] = _sha256_text(tpl) if tpl else None
        return self._identity

    def header_fields(self) -> dict[str, Any]:
        ident = self.identity()
        return {
            "tokenizer": self.name,
            "tokenizer_identity": ident,
            "chat_template": {"sha256": ident["chat_template_sha256"]},
        }

    # ----- encoding ---------------------------------------------------------------------------
    def _backend(self):
        return getattr(self.hf, "backend_tokenizer", None) or getattr(self.hf, "_tokenizer", None)

    def encode(self, text: str) -> list[int]:
        """Text to ids with no special tokens added (template text carries its own)."""
        backend = self._backend()
        if backend is not None:
            return backend.encode(text, add_special_tokens=False).ids
        return list(self.hf.encode(text, add_special_tokens=False))

    def encode_batch(self, texts: list[str], add_special_tokens: bool = False) -> list[list[int]]:
        """Many texts at once (the Rust backend spreads them over the cores)."""
        backend = self._backend()
        if backend is not None:
            fn = getattr(backend, "encode_batch_fast", None) or backend.encode_batch
            enc = fn(texts, add_special_tokens=add_special_tokens)
            return [e.ids for e in enc]
        return [list(self.hf.encode(t, add_special_tokens=add_special_tokens)) for t in texts]

    def decode(self, ids: list[int]) -> str:
        return self.hf.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def _strip_double_bos(self, ids: list[int]) -> list[int]:
        bos = self.bos_id
        if bos is not None and len(ids) >= 2 and ids[0] == bos and ids[1] == bos:
            return ids[1:]
        return ids

    def raw_ids(self, text: str) -> list[int]:
        """A prompt with no chat template: the tokenizer's own BOS policy, never a double BOS."""
        return self._strip_double_bos(list(self.hf.encode(text, add_special_tokens=True)))

    def render(self, messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
        if not self.chat_template:
            raise TokenizerError(
                f"tokenizer {self.name} has no chat template: use --raw to tokenize without one"
            )
        return self.hf.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt
        )

    def chat_ids(self, messages: list[dict[str, str]]) -> list[int]:
        """The ids of a conversation up to and including the generation prompt."""
        return self._strip_double_bos(self.encode(self.render(messages, True)))

    def template_parts(self, system: str | None = None) -> tuple[list[int], list[int]]:
        """(ids before the user content, ids after it) of a one-turn chat prompt.

        Lets a builder place a user message of exactly N ids between them; checked on ids: the
        three parts concatenated must equal the encoding of the whole render for a sentinel.
        """
        msgs = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": REPLY_SENTINEL}]
        text = self.render(msgs, True)
        i = text.index(REPLY_SENTINEL)
        before = self._strip_double_bos(self.encode(text[:i]))
        after = self.encode(text[i + len(REPLY_SENTINEL):])
        whole = self._strip_double_bos(self.encode(text))
        mid = self.encode(REPLY_SENTINEL)
        if before + mid + after != whole:
            self.notes.append("template parts do not concatenate to the whole render on ids")
        return before, after

    def conversation(
        self, user_turns: list[str], system: str | None = None
    ) -> tuple[list[int], list[list[int]], list[str]]:
        """(first prompt ids, ids of each later user turn, warnings) for live multi-turn replay."""
        if not user_turns:
            raise ValueError("a conversation needs at least one user turn")
        warnings: list[str] = []
        msgs: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
        msgs.append({"role": "user", "content": user_turns[0]})
        prev_text = self.render(msgs, True)
        first = self._strip_double_bos(self.encode(prev_text))
        later: list[list[int]] = []
        for turn in user_turns[1:]:
            msgs = [*msgs, {"role": "assistant", "content": REPLY_SENTINEL},
                    {"role": "user", "content": turn}]
            text = self.render(msgs, True)
            cut = text.rfind(REPLY_SENTINEL)
            if cut < 0:
                raise TokenizerError(
                    f"the chat template of {self.name} drops assistant replies; "
                    "cannot split the conversation into turns"
                )
            head, tail = text[:cut], text[cut + len(REPLY_SENTINEL):]
            if head != prev_text:
                warnings.append("template renders earlier turns differently once a reply follows")
            suffix = self.encode(tail)
            whole = self.encode(text)
            pre = self.encode(text[: cut + len(REPLY_SENTINEL)])
            if whole[: len(pre)] != pre or whole[len(pre):] != suffix:
                warnings.append("turn suffix ids differ from the in-context encoding")
            later.append(suffix)
            prev_text = text
        return first, later, warnings


def _is_gguf(path: Path) -> bool:
    if path.suffix.lower() == ".gguf":
        return True
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == b"GGUF"
    except OSError:
        return False


def gguf_context_length(path: Path) -> int | None:
    """The ``<arch>.context_length`` a GGUF declares (its trained context), or None; memoised
    in the cache by the file's sha256 (reading it parses every metadata field, the whole
    vocabulary included: seconds for a 49k-token vocabulary)."""
    try:
        memo = cache_dir("tokenizers", "gguf-context") / _sha256_file(path)
        if memo.exists():
            text = memo.read_text().strip()
            return int(text) if text else None
        from gguf import GGUFReader

        fields = GGUFReader(str(path)).fields
        arch = bytes(fields["general.architecture"].parts[-1]).decode()
        f = fields.get(f"{arch}.context_length")
        n = int(f.parts[f.data[0]][0]) if f is not None else None
    except Exception:  # an unreadable header only costs the default length limit
        return None
    publish_text(memo, "" if n is None else str(n))
    return n


def _with_context(tok: Any, path: Path) -> Any:
    """Transformers leaves a GGUF tokenizer's model_max_length unknown: take the GGUF's."""
    if not (0 < int(getattr(tok, "model_max_length", 0) or 0) < 10_000_000):
        n = gguf_context_length(path)
        if n:
            tok.model_max_length = n
    return tok


def gguf_tokenizer_folder(digest: str) -> Path:
    """Where the tokenizer of the GGUF whose sha256 is ``digest``, converted once, is kept."""
    return cache_dir("tokenizers") / f"gguf-{digest[:20]}"


def _load_gguf(path: Path) -> tuple[Any, str]:
    """A GGUF's tokenizer through transformers, converted once and kept in the cache."""
    digest = _sha256_file(path)
    folder = gguf_tokenizer_folder(digest)
    from transformers import AutoTokenizer

    if (folder / "tokenizer_config.json").exists():
        return _with_context(AutoTokenizer.from_pretrained(str(folder)), path), digest
    try:
        tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    except ImportError as exc:
        raise TokenizerError(
            f"reading the tokenizer of {path} needs the 'gguf' package: pip install "
            f"'loadgen[data]' ({exc})"
        ) from None
    if folder.is_dir() and not (folder / "tokenizer_config.json").exists():
        import shutil  # not a folder published whole (publish_dir): remove it

        shutil.rmtree(folder, ignore_errors=True)
    publish_dir(folder, lambda tmp: tok.save_pretrained(str(tmp)))
    return _with_context(AutoTokenizer.from_pretrained(str(folder)), path), digest


def load_tokenizer(spec: str) -> ChatTokenizer:
    """Load a tokenizer from ``smollm2``, a GGUF file, a local HF folder or a hub name."""
    try:
        import transformers  # noqa: F401
    except ImportError:
        raise TokenizerError(
            "tokenizing needs transformers: pip install 'loadgen[data]'"
        ) from None
    if spec.lower() in SMOLLM2_ALIASES:
        from loadgen.models.smollm2 import smollm2_gguf_path

        path = smollm2_gguf_path()
        hf, digest = _load_gguf(path)
        return ChatTokenizer(hf=hf, name="smollm2", source=str(path), kind="gguf",
                             file_sha256=digest)
    path = Path(spec).expanduser()
    if path.is_file() and _is_gguf(path):
        hf, digest = _load_gguf(path)
        return ChatTokenizer(hf=hf, name=path.name, source=str(path.resolve()), kind="gguf",
                             file_sha256=digest)
    from transformers import AutoTokenizer

    if path.is_dir():
        hf = AutoTokenizer.from_pretrained(str(path))
        tj = path / "tokenizer.json"
        digest = _sha256_file(tj) if tj.exists() else None
        return ChatTokenizer(hf=hf, name=path.name, source=str(path.resolve()), kind="folder",
                             file_sha256=digest)
    if path.exists():
        raise TokenizerError(f"{spec}: neither a GGUF file nor a tokenizer folder")
    try:
        hf = AutoTokenizer.from_pretrained(spec)
    except Exception as exc:  # hub errors come in many types
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        raise TokenizerError(
            f"tokenizer {spec!r} is not a local file or folder and could not be fetched from the "
            f"hub{' (HF_HUB_OFFLINE=1)' if offline else ''}: {type(exc).__name__}: {exc}. "
            "Pass a GGUF file, a local HF tokenizer folder, or 'smollm2'."
        ) from None
    return ChatTokenizer(hf=hf, name=spec, source=f"hub:{spec}", kind="hub")
