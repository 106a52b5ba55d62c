"""What each of the 11 categories means, as a check on one prompt (docs/DATASETS.md,
"Category meaning").

The recipe maps each source (or sub-task) to the category whose definition it meets; these
checks reject what still does not: ``category_problem`` returns why a prompt is not of its
category, or None. They read the text only (the review command runs them on a built file).
"""

from __future__ import annotations

import re

from loadgen.data.contentfilter import strip_code
from loadgen.data.language import detect_language

#: The shortest passage a summarization or rag prompt must include (characters).
MIN_DOCUMENT = 400

_SUMMARIZE = re.compile(r"\bsummar(?:y|ies|i[sz]e|i[sz]ing)\b|\bsum up\b|\btl;?dr\b|\brecap\b"
                        r"|\bmain points\b|\bkey points\b", re.I)
_QUESTION = re.compile(r"\?|^\s*(?:question|explain|describe|define|name|list)\b"
                       r"|\b(?:who|what|when|where|which|why|how)\b", re.I | re.M)
_CODE_ASK = re.compile(r"```|\b(?:code|function|program|implement|script|class|method|bug|"
                       r"compile|sql|regex|algorithm|python|java|c\+\+|rust|javascript|html|css|website|"
                       r"api|bash|shell)\b", re.I)
_MATH_SIGN = re.compile(r"\d|[=+\-*/^√∑∫π]|\b(?:equation|solve|integral|probability|prove|"
                        r"one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|"
                        r"twice|half|times|percent|dozen|hundred|thousand)\b", re.I)
_COUNTERFACTUAL = re.compile(r"^\s*(?:what if|what would (?:happen|have happened) if|imagine "
                             r"(?:if|that))\b", re.I)
_HOWTO = re.compile(r"^\s*how (?:do|can|should) i\b|\btroubleshoot|\bmy (?:laptop|computer|"
                    r"phone|printer|router|wifi) (?:is|won'?t|doesn'?t|keeps|isn'?t|can'?t|"
                    r"will not|does not)\b", re.I)
_ROLE = re.compile(r"\b(?:act as|act like|you are|you're|pretend|role|play(?:ing)? (?:the|a)|"
                   r"imagine you|as a|as an|character|persona|in the voice of|speak like|"
                   r"take on|become)\b", re.I)
_WRITE = re.compile(r"\b(?:write|writ(?:ing|ten)|draft|compose|create|rewrite|revise|edit|"
                    r"polish|story|poem|essay|letter|email|e-mail|blog|post|article|speech|"
                    r"script|report|proposal|description|review|summary|copy|slogan|lyrics|"
                    r"outline|plan|paragraph|introduction|content|tweet|caption|describe|imagine|"
                    r"what if|narrat\w*|tell)\b", re.I)
_NOT_WRITING = re.compile(r"\bclassify\b|\bspam\b|\bis (?:this|the following) .{0,40}\bor not\b"
                          r"|^\s*how (?:do|can) i\b.{0,60}\b(?:in|on|with) (?:word|excel|"
                          r"google docs|powerpoint)\b", re.I | re.S)
_ADVICE = re.compile(r"\b(?:advice|recommend(?:ation)?s?|suggest(?:ion)?s?|tips?|should i|"
                     r"help me|can you help|i'?m (?:planning|thinking|trying|feeling|looking)|"
                     r"my (?:boss|wife|husband|friend|partner|girlfriend|boyfriend|kids?|"
                     r"family))\b", re.I)
_STOP = frozenset([
    "the", "a", "an", "of", "to", "in", "on", "for", "and", "or", "is", "are", "was", "were", "be",
    "by", "with", "at", "from", "as", "that", "this", "which", "what", "who", "whom", "whose",
    "when", "where", "why", "how", "does", "did", "do", "it", "its", "into", "than", "then",
    "there", "their", "they", "he", "she", "his", "her", "have", "has", "had", "not", "no"
])


def _words(text: str) -> set[str]:
    return {w for w in re.findall(r"[^\W\d_]{3,}", text.lower()) if w not in _STOP}


def _longest_block(text: str) -> str:
    return max((b for b in re.split(r"\n\s*\n", text)), key=len, default="")


def answerable(question: str, passage: str, min_share: float = 0.5) -> bool:
    """At least half of the question's content words occur in the passage."""
    q = _words(question)
    return bool(q) and len(q & _words(passage)) >= min_share * len(q)


def _question_and_passage(text: str) -> tuple[str, str]:
    """The question (the last block or line holding a question) and the rest (the passage)."""
    blocks = [b for b in re.split(r"\n", text.strip()) if b.strip()]
    for i in range(len(blocks) - 1, -1, -1):
        if _QUESTION.search(blocks[i]) and len(blocks[i]) < 600:
            return blocks[i], "\n".join(blocks[:i] + blocks[i + 1:])
    return "", text


def _summarization(text: str) -> str | None:
    if not _SUMMARIZE.search(text):
        return "no explicit request to summarize"
    if len(_longest_block(text)) < MIN_DOCUMENT and len(text) < 2 * MIN_DOCUMENT:
        return "no included text to summarize"
    return None


def _rag(text: str) -> str | None:
    question, passage = _question_and_passage(text)
    if len(passage) < MIN_DOCUMENT:
        return "no included passage"
    if not question:
        return "no question about the passage"
    if not answerable(question, passage):
        return "the question's words are not in the passage"
    return None


def _multilingual(text: str) -> str | None:
    lang = detect_language(text)
    return "English" if lang in ("en", "und") else None


def _english(text: str) -> str | None:
    lang = detect_language(text)
    return None if lang in ("en", "und") else f"not English ({lang})"


def category_problem(category: str, turns: list[str], system: str | None = None) -> str | None:
    """Why the prompt (its user turns; the system prompt may give a role) does not meet
    ``category``'s definition, or None."""
    text = "\n".join(turns)
    first = turns[0] if turns else ""
    prose = strip_code(text)
    if category == "multilingual":
        return _multilingual(text)
    if category != "coding" and (bad := _english(prose)):
        return bad
    if category == "summarization":
        return _summarization(first)
    if category == "rag":
        return _rag(first)
    if category == "coding":
        return None if _CODE_ASK.search(text) else "asks for no code"
    if category == "math":
        return None if _MATH_SIGN.search(text) else "no quantity or mathematical object"
    if category == "reasoning":
        if _COUNTERFACTUAL.search(first):
            return "a counterfactual ('what if') asks for speculation, not a derivation"
        if _HOWTO.search(first):
            return "a how-to or troubleshooting request"
        return None
    if category == "roleplay":
        return None if _ROLE.search(f"{system or ''}\n{first}") else "gives the model no role"
    if category == "writing":
        if _NOT_WRITING.search(first):
            return "a classification or software how-to, not a writing task"
        return None if _WRITE.search(first) else "asks for no text to be written"
    if category == "qa":
        if not _QUESTION.search(first):
            return "asks no question"
        if _ADVICE.search(first):
            return "asks for advice or recommendations, not knowledge"
        return None
    return None  # humanities, stem: by source subject (the recipe's mapping and require_fit)
