"""The language of a prompt: the writing system first, then, for Latin and Cyrillic text,
``py3langid`` (a pure-Python, offline, deterministic n-gram classifier shipping its own model).

Scripts that name one language here (kana -> ja, hangul -> ko, Devanagari -> hi, Thai, Bengali,
Telugu, Arabic, Greek, Hebrew) decide outright; Han without kana is zh; Latin text of which 30%
of the words are common English function words is English; other Latin and Cyrillic text goes to
the classifier, restricted to the languages those scripts write. The first 3,000 characters are
read. Code fences, URLs and digits are removed first. Text too short to judge (under 12 Latin or
Cyrillic letters, under 4 of another script) is ``"und"``.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from functools import lru_cache

#: Unicode script (first word of the character name) -> the language it names here.
SCRIPT_LANG = {"HIRAGANA": "ja", "KATAKANA": "ja", "HANGUL": "ko", "DEVANAGARI": "hi",
               "THAI": "th", "BENGALI": "bn", "TELUGU": "te", "ARABIC": "ar", "GREEK": "el",
               "HEBREW": "he", "TAMIL": "ta", "GUJARATI": "gu"}
#: Languages the classifier may answer for Latin and for Cyrillic text.
LATIN_LANGS = ("en", "de", "es", "fr", "it", "pt", "nl", "sw", "tr", "vi", "id", "ro", "pl", "cs",
               "sv", "da", "no", "fi", "ca", "hu")
CYRILLIC_LANGS = ("ru", "uk", "bg", "sr", "mk", "be")

_FENCE = re.compile(r"```.*?(```|$)", re.S)
_NOISE = re.compile(r"https?://\S+|[\d_]+")
MIN_LETTERS = 12


_ASCII_LETTERS = re.compile(r"[A-Za-z]")
_NON_ASCII = re.compile(r"[^\x00-\x7f]")
_WORD = re.compile(r"[a-z']+")
#: The commonest English function words: text that is mostly these is English outright (the
#: classifier is slow on long text and not needed there).
EN_WORDS = frozenset([
    "the", "of", "and", "to", "a", "in", "is", "that", "for", "it", "as", "was", "with", "be", "by",
    "on", "not", "he", "this", "are", "or", "his", "from", "at", "which", "but", "have", "an",
    "they", "you", "were", "her", "she", "there", "been", "one", "all", "we", "their", "has",
    "would", "what", "will", "if", "can", "when", "who", "so", "no", "more", "its", "into", "than",
    "them", "do", "how", "these", "some", "could", "any", "did", "our", "your", "does", "should",
    "where", "why", "i", "my", "me"
])
EN_SHARE = 0.3
SAMPLE_CHARS = 3000


@lru_cache(maxsize=65536)
def _script(ch: str) -> str | None:
    if not ch.isalpha():
        return None
    name = unicodedata.name(ch, "")
    if name.startswith("CJK") or name.startswith("IDEOGRAPHIC"):
        return "HAN"
    return name.split(" ", 1)[0] if name else None


def script_counts(text: str) -> Counter[str]:
    """Letters per script (ASCII letters counted as LATIN without a lookup)."""
    counts = Counter(s for s in map(_script, _NON_ASCII.findall(text)) if s)
    counts["LATIN"] += len(_ASCII_LETTERS.findall(text))
    return +counts


@lru_cache(maxsize=1)
def _identifier():
    try:
        from py3langid.langid import MODEL_FILE, LanguageIdentifier
    except ImportError:
        raise RuntimeError("language detection needs py3langid: pip install 'loadgen[data]'") \
            from None

    ident = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=False)
    ident.set_languages(list(LATIN_LANGS + CYRILLIC_LANGS))
    return ident


@lru_cache(maxsize=8192)
def detect_language(text: str) -> str:
    """ISO 639-1 code of ``text``'s main language, or ``"und"`` (too little text)."""
    text = _NOISE.sub(" ", _FENCE.sub(" ", text[:SAMPLE_CHARS * 2]))[:SAMPLE_CHARS]
    counts = script_counts(text)
    total = sum(counts.values())
    if total < 4:
        return "und"
    kana = counts["HIRAGANA"] + counts["KATAKANA"]
    if kana >= 0.05 * total:
        return "ja"
    script, _n = max(counts.items(), key=lambda kv: (kv[1], kv[0]))
    if script == "HAN":
        return "zh"
    if script in SCRIPT_LANG:
        return SCRIPT_LANG[script]
    if script in ("LATIN", "CYRILLIC") and total < MIN_LETTERS:
        return "und"
    if script == "LATIN":
        words = _WORD.findall(text.lower())
        if words and sum(w in EN_WORDS for w in words) >= EN_SHARE * len(words):
            return "en"
    if script in ("LATIN", "CYRILLIC"):
        return _identifier().classify(text)[0]
    return script.lower()
