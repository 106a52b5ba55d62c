"""Content filters: prompts a model cannot answer as meant, found before selection.

Seven defect classes (FILTERS). Two are repaired where the text survives: transcription tags
(``{disfmarker}``, ``{vocalsound}``... removed) and, inside a document a source declares
(``document:`` in the recipe, a regex with a ``doc`` group), markup (tags removed, entities
decoded) and truncation (the document cut back to whole sentences, the question kept after it).
Everything else that shows a defect is dropped. ``filter_prompt`` says what happened to one
prompt; ``FilterReport`` counts each class with a few examples for the build report, and the
review command runs ``defects`` over a built file (a clean split has none).
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from typing import Any

from loadgen.data.caseless import Caseless, lowered

#: Defect class -> what it is (the build report and review use these names).
FILTERS = {
    "placeholder": "unfilled template slots: {character}, [title], {age}-year-old",
    "jailbreak": "jailbreak or refusal bait: DAN, 'ignore previous instructions', no-limits AI",
    "markup": "HTML tags or entities left in the text: <P>, <Td>, &nbsp;",
    "transcript_tags": "transcription tags: {disfmarker}, {vocalsound}, {gap}",
    "truncated": "a document cut mid-sentence, or a long block starting mid-sentence",
    "mc_without_options": "asks for the letter of an option but lists no options",
    "provider_error": "an API, provider or document-generator error string: 'Content is "
                      "blocked', 'Error! Reference source not found'",
}
EXAMPLES_KEPT = 3
EXAMPLE_CHARS = 160
#: Categories whose prompts hold code: no markup, placeholder or truncation checks there.
CODE_CATEGORIES = ("coding",)

_FENCE = re.compile(r"```.*?(?:```|$)", re.S)
_TRANSCRIPT = re.compile(r"\{(?:disfmarker|vocalsound|nonvocalsound|gap|pause|comment|laugh|"
                         r"cough|inaudible)\}", re.I)
#: Slot names that templates leave in brackets ([title], [your name], [insert x]).
SLOT_WORDS = ("name|title|author|topic|subject|company|product|city|country|date|age|gender|"
              "occupation|character|series|position|job title|language|number|word|keyword|"
              "field|industry|location|person|employer|recipient|song|book|movie|event|brand|"
              "role|skill|audience|platform|text|sentence|question|prompt|description")
_PLACEHOLDER = re.compile(
    r"(?<![\\\w$}^_])\{[a-z][a-z /-]{2,30}\}"                  # {character}, {age}
    rf"|\[(?i:(?:insert|enter|your|add)\b[^\]\n]{{0,30}}|(?:{SLOT_WORDS}))\](?!\()"
    r"|\$\{[A-Za-z][A-Za-z ]{1,30}(?::[^}\n]{0,40})?\}"         # ${Position:Engineer}
    r"|<(?i:insert|your|enter)\b[^>\n]{0,30}>")
_DAN = re.compile(r"\bDAN\b")
_JAILBREAK = Caseless(
    r"do anything now|jailbr(?:eak|oken)|developer mode|\baim\b.*machiavellian"
    r"|ignore (?:all |any )?(?:the |your )?(?:previous|prior|above|earlier) (?:instructions|rules)"
    r"|(?:you|ai|model|chatbot|assistant)s? (?:has|have|with|without) (?:no|any) (?:restrictions"
    r"|censorship|filters|limitations|limits|ethics)"
    r"|no (?:ethical|moral) (?:guidelines|restrictions|limits|principles)"
    r"|(?:unfiltered|uncensored) (?:ai|model|assistant|chatbot|responses?|answers?)"
    r"|broken free of|not bound by (?:any|the) (?:rules|policies)|content polic(?:y|ies)")
_HTML_TAGS = ("p|td|tr|th|table|tbody|thead|li|ul|ol|br|div|span|h[1-6]|dd|dt|dl|a|b|i|em|"
              "strong|img|hr|font|center|sup|sub|caption|blockquote")
_TAG = re.compile(rf"</?(?:{_HTML_TAGS})(?=[\s>_/])[^<>\n]{{0,200}}>", re.I)
_BLOCK_TAG = re.compile(r"</?(?:p|tr|table|li|ul|ol|br|div|h[1-6]|dd|dt|dl|caption)\b", re.I)
_ENTITY = re.compile(r"&(?:nbsp|amp|lt|gt|quot|apos|#\d{1,6}|#x[0-9a-f]{1,5});", re.I)
_MC_ASK = Caseless(r"letter of the (?:correct|right|best) (?:option|answer|choice)"
                  r"|answer with the letter|choose the correct option")
_MC_OPTIONS = re.compile(r"\bOptions:")
_MC_OPTION = re.compile(r"^\s*(?:\(?[A-Ea-e][).:]|\([A-Ea-e]\)|[-•*])\s*\S", re.M)
_ERROR = Caseless(r"content is blocked|content was blocked|blocked by (?:the )?(?:safety|content)"
                  r"|as an ai language model|i'?m sorry, but i can(?:not|'t)"
                  r"|an error (?:has )?occurred|rate limit (?:exceeded|reached)"
                  r"|internal server error|request failed with status|\bopenai\.error\b"
                  r"|i cannot fulfill (?:this|that|your) request"
                  r"|error! (?:no text of specified style|reference source not found"
                  r"|bookmark not defined)")
_SENT_END = re.compile(r"[.!?。！？…](?:[\"'”’)\]]*)(?=\s|$)")
_TERMINAL = tuple(".!?。！？…\"'”’“„)]:;»«」』।؟—–")
_FOOTNOTE = re.compile(r"[.!?]\d{1,2}$")
_UTTERANCE = re.compile(r"^[A-Z][\w .'-]{0,40}: ")
LONG_BLOCK = 300


def strip_code(text: str) -> str:
    return _FENCE.sub(" ", text)


def strip_transcript_tags(text: str) -> str:
    """Remove transcription tags; lines left with only a speaker name go too."""
    out = []
    for line in _TRANSCRIPT.sub("", text).split("\n"):
        line = re.sub(r"[ \t]{2,}", " ", line).rstrip()
        line = re.sub(r"\s+([,.?!])", r"\1", line)
        if re.fullmatch(r"[^:\n]{1,40}:\s*[,.]?", line):
            continue  # "Speaker: " with nothing left
        out.append(line)
    return "\n".join(out)


def strip_markup(text: str) -> str:
    """Tags removed (block tags become line breaks), entities decoded, spaces collapsed."""
    text = _BLOCK_TAG.sub(lambda m: "\n" + m.group(0), text)
    text = _TAG.sub(lambda m: "\n" if _BLOCK_TAG.match(m.group(0)) else " ", text)
    text = html.unescape(text).replace("\xa0", " ")
    lines = [re.sub(r"[ \t]{2,}", " ", ln).strip() for ln in text.split("\n")]
    return "\n".join(ln for ln in lines if ln)


def trim_to_sentences(text: str) -> str:
    """``text`` cut to whole sentences: a leading fragment (starting lower-case) and a trailing
    one (no sentence end) removed. Empty when no whole sentence is left."""
    text = text.strip()
    if text and text[0].islower():
        m = _SENT_END.search(text)
        text = text[m.end():].lstrip() if m else ""
    if text and not text.endswith(_TERMINAL):
        ends = list(_SENT_END.finditer(text))
        text = text[:ends[-1].end()] if ends else ""
    return text


def truncated_block(text: str) -> str | None:
    """A document cut before its question: the last long line (>= 300 characters) before a
    question among the last three lines, when it starts mid-word (lower-case) or ends without a
    sentence end (a speaker's utterance in a transcript excepted: speech trails off)."""
    lines = [ln.strip() for ln in text.split("\n") if ln.strip()]
    asks = [i for i in range(max(0, len(lines) - 3), len(lines))
            if "?" in lines[i] or lines[i].lower().startswith("question")]
    if not asks:
        return None
    doc = [ln for ln in lines[:asks[-1]] if len(ln) >= LONG_BLOCK][-1:]
    for ln in doc:
        starts_cut = ln[0].islower() and ln[1].isalpha()
        ends_cut = not (ln.endswith(_TERMINAL) or _FOOTNOTE.search(ln) or _UTTERANCE.match(ln))
        if starts_cut or ends_cut:
            return ln[:60] + " ... " + ln[-60:]
    return None


def _first(*found: re.Match[str] | None) -> re.Match[str] | None:
    """The leftmost of several patterns' matches (what one alternation of them finds)."""
    return min((m for m in found if m), key=lambda m: m.start(), default=None)


def defects(turns: list[str], category: str) -> dict[str, str]:
    """Defect class -> the offending text, for every class this prompt shows."""
    text = "\n\n".join(turns)
    prose = strip_code(text)
    low_text = lowered(text)
    low_prose = low_text if prose is text else lowered(prose)  # no code block: the same text
    found: dict[str, str] = {}
    code = category in CODE_CATEGORIES
    checks: list[tuple[str, re.Match[str] | None, str]] = [
        ("transcript_tags", _TRANSCRIPT.search(text), text),
        ("jailbreak", _first(_DAN.search(prose), _JAILBREAK.search(prose, low_prose)), prose),
        ("provider_error", _ERROR.search(text, low_text), text)]
    if not code:
        checks += [("placeholder", _PLACEHOLDER.search(prose), prose),
                   ("markup", _TAG.search(prose) or _ENTITY.search(prose), prose)]
    for name, m, where in checks:
        if m and name not in found:
            found[name] = where[max(0, m.start() - 40): m.end() + 40]
    ask = _first(_MC_OPTIONS.search(prose), _MC_ASK.search(prose, low_prose))
    if ask and len(_MC_OPTION.findall(prose)) < 2:
        found["mc_without_options"] = ask.group(0)
    if not code:
        cut = truncated_block(prose)
        if cut:
            found["truncated"] = cut
    return found


@dataclass
class FilterReport:
    """Per defect class: prompts dropped, prompts repaired, and a few examples of each."""

    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FILTERS, 0))
    fixed: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FILTERS, 0))
    examples: dict[str, list[str]] = field(default_factory=dict)

    def note(self, name: str, kind: str, pid: str, text: str) -> None:
        (self.dropped if kind == "dropped" else self.fixed)[name] += 1
        ex = self.examples.setdefault(name, [])
        if len(ex) < EXAMPLES_KEPT:
            ex.append(f"{kind} {pid}: {' '.join(text.split())[:EXAMPLE_CHARS]}")

    def to_dict(self) -> dict[str, Any]:
        return {n: {"dropped": self.dropped[n], "fixed": self.fixed[n],
                    "examples": self.examples.get(n, [])} for n in FILTERS}


def clean_document(turn: str, pattern: str) -> tuple[str, list[str]]:
    """The turn with its ``doc`` group (``pattern``) stripped of markup and cut to whole
    sentences; also the repairs made (``markup``, ``truncated``). No match: unchanged."""
    m = re.search(pattern, turn, re.S)
    if not m or m.group("doc") is None:
        return turn, []
    doc = m.group("doc")
    done = []
    clean = strip_markup(doc) if (_TAG.search(doc) or _ENTITY.search(doc)) else doc
    if clean != doc:
        done.append("markup")
    trimmed = "\n".join(trim_to_sentences(p) if len(p) >= LONG_BLOCK else p
                        for p in clean.split("\n"))
    trimmed = trim_to_sentences(trimmed) if trimmed.strip() else trimmed
    if trimmed.strip() != clean.strip():
        done.append("truncated")
    return turn[:m.start("doc")] + trimmed.strip() + turn[m.end("doc"):], done


def filter_prompt(turns: list[str], category: str, document: str | None = None,
                  min_chars: int = 1) -> tuple[list[str] | None, list[str], dict[str, str]]:
    """(the turns to keep, or None to drop; the classes repaired; the classes that drop it)."""
    fixed: list[str] = []
    if any(_TRANSCRIPT.search(t) for t in turns):
        turns = [strip_transcript_tags(t) for t in turns]
        fixed.append("transcript_tags")
    if document:
        out = []
        for t in turns:
            t2, done = clean_document(t, document)
            out.append(t2)
            fixed += [d for d in done if d not in fixed]
        turns = out
    found = defects(turns, category)
    if sum(len(t) for t in turns) < min_chars:
        found.setdefault(fixed[-1] if fixed else "truncated", "nothing left after repair")
    return (None if found else turns), fixed, found
