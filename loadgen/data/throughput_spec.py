"""What the throughput split is made of: the entropy tiers and their kinds, the instructions,
lead-ins and corpora of each kind, and how ``--per-tier`` spreads over the kinds."""

from __future__ import annotations

TIERS = {
    "low_entropy": ("code", "sorting"),
    "mixed": ("needle", "fewshot"),
    "high_entropy": ("creative", "dialogue_summary"),
}

INSTRUCTIONS = {
    "code": [
        "Add a concise docstring to every function and class in the code above that lacks one, "
        "and return the complete updated code.",
        "Add type hints to every function signature in the code above and return the full code, "
        "otherwise unchanged.",
        "Rename the variables in the code above to clearer names and return the whole code.",
        "Reformat the code above to a consistent style and return the complete result.",
    ],
    "sorting": [
        "Sort all the lines above alphabetically and output them, one per line, with no other "
        "text.",
        "Output every line above in reverse alphabetical order, one per line, and nothing else.",
        "Sort the lines above by their length, shortest first, and output them one per line.",
    ],
    "needle": [
        "What is the secret code mentioned in the text above? Answer with the code only.",
        "Somewhere in the text above a secret code is given. Quote the sentence that contains it.",
    ],
    "fewshot": ["Answer the last question in the same format as the examples."],
    "creative": [
        "Continue the story above with an original new chapter of about 800 words that "
        "introduces a new character.",
        "Write what happens next in the text above, in the same style, as a new scene of about "
        "800 words.",
        "Retell the last part of the text above from the point of view of a minor character, in "
        "about 800 words.",
    ],
    "dialogue_summary": [
        "Summarize the meeting transcript above: the main topics, the decisions made, who made "
        "them, and the open questions.",
        "Write minutes for the meeting above, with a list of action items and their owners.",
        "Summarize the discussion above in five paragraphs for someone who missed the meeting.",
    ],
}

LEAD_IN = {
    "code": "Here is some source code.\n\n",
    "sorting": "Here is a list of lines.\n\n",
    "needle": "Read the following text carefully.\n\n",
    "fewshot": "The following are exam questions with their answers.\n\n",
    "creative": "Here is a text.\n\n",
    "dialogue_summary": "Here is a meeting transcript.\n\n",
}

# (corpus, files under the data root, license, origin)
CORPORA: dict[str, list[tuple[str, str, str]]] = {
    "code": [("long/code/*.txt", "Apache-2.0", "lm-sys/FastChat"),
             ("long/bamboo/private_eval_16k.jsonl:prompt", "MIT", "RUCAIBox/BAMBOO")],
    "prose": [("long/canterbury/*.txt", "public-domain", "google/snappy (Canterbury corpus)"),
              ("long/tinyshakespeare.txt", "public-domain", "karpathy/char-rnn")],
    "lines": [("long/tinyshakespeare.txt", "public-domain", "karpathy/char-rnn")],
    "meetings": [("long/qmsum_test.jsonl:transcript", "MIT", "Yale-LILY/QMSum"),
                 ("long/bamboo/meetingqa_4k.jsonl:content", "MIT", "RUCAIBox/BAMBOO")],
}
KIND_CORPUS = {"code": "code", "needle": "prose", "creative": "prose",
               "dialogue_summary": "meetings", "sorting": "lines"}


def tier_counts(per_tier: int) -> dict[str, int]:
    """Prompts per kind: ``per_tier`` in every tier, split evenly over the tier's kinds."""
    if per_tier < 1:
        raise ValueError(f"--per-tier must be at least 1 (got {per_tier})")
    return {k: per_tier // len(ks) + (j < per_tier % len(ks))
            for ks in TIERS.values() for j, k in enumerate(ks)}
