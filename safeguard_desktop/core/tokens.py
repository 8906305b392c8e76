"""How many tokens a prompt takes, without a tokenizer: enough to size the context window.

Ollama cuts a prompt longer than `num_ctx` from the front, which silently drops the policy
(the system message comes first). So the request's window is sized from an estimate of
policy + content, plus room for the model's reasoning, and the count Ollama reports back
(`prompt_eval_count`) is checked against a floor that no complete prompt goes under.

The rule (gpt-oss uses the o200k BPE vocabulary; no tokenizer ships with the app):

    characters                         estimate (sizing)     floor (truncation check)
    ASCII (English, Markdown, code)    1 token per 4         1 per 6, spaces not counted
    U+0080-U+07FF (accented Latin,     1 token per 2         1 token per 6
      Greek, Cyrillic, Hebrew, Arabic)
    U+0800 and above (CJK, Indic,      1 token each          1 token per 3
      Thai, symbols, emoji)

plus `TEMPLATE_TOKENS` for the chat template around the messages (estimate only). o200k
averages 4-5 characters a token on English prose and about 3 on code, JSON and long numbers,
so the estimate runs a little high on prose and up to a quarter low on code: the window gets
`MARGIN` on top of it. The floor sits below what ordinary text tokenizes to (English: about
70% of the estimate; whitespace is left out since runs of it merge into one token), so a count
under it means a good part of the prompt never reached the model.
"""

from __future__ import annotations

import math
import re

TEMPLATE_TOKENS = 100  # gpt-oss's harmony template: system header, role and channel markers
MARGIN = 1.25  # on the estimate when sizing the window (code and JSON run ~3 chars a token)
# Tokens kept free for the model's reasoning and answer, per effort. gpt-oss-safeguard reasons
# for a few hundred tokens at low and one to three thousand at high on a moderation item; the
# budget is about three times that, since a window too small is cut mid-reasoning.
REASONING_BUDGET = {"low": 2048, "medium": 4096, "high": 8192}
ANSWER_TOKENS = 512  # the verdict itself (a JSON object with a rationale at most)
WINDOW_STEP = 8192  # windows are whole steps: fewer distinct sizes, fewer model reloads

_NARROW = re.compile("[\u0080-\u07ff]")
_SPACE = re.compile("[ \t\r\n\f\v]")
_WIDE = re.compile("[\u0800-\U0010ffff]")


def _classes(text: str) -> tuple[int, int, int]:
    """(ASCII, two-byte, wider) character counts."""
    narrow = len(_NARROW.findall(text))
    wide = len(_WIDE.findall(text))
    return len(text) - narrow - wide, narrow, wide


def estimate_tokens(text: str) -> int:
    """About how many o200k tokens `text` takes (a little high on prose, low on code)."""
    ascii_chars, narrow, wide = _classes(text)
    return math.ceil(ascii_chars / 4) + math.ceil(narrow / 2) + wide


def floor_tokens(text: str) -> int:
    """Fewer tokens than `text` can take: a count under this means part of it was cut."""
    ascii_chars, narrow, wide = _classes(text)
    spaces = len(_SPACE.findall(text))
    return (ascii_chars - spaces + narrow) // 6 + wide // 3


def prompt_estimate(system: str, user: str) -> int:
    """The estimated prompt: both messages plus the chat template around them."""
    return estimate_tokens(system) + estimate_tokens(user) + TEMPLATE_TOKENS


def prompt_floor(system: str, user: str) -> int:
    return floor_tokens(system) + floor_tokens(user)


def reasoning_budget(effort: str) -> int:
    return REASONING_BUDGET.get(effort, REASONING_BUDGET["high"]) + ANSWER_TOKENS


def tokens_needed(prompt_tokens: int, effort: str) -> int:
    """The window that holds the prompt (with `MARGIN`) and the reasoning at this effort."""
    return math.ceil(prompt_tokens * MARGIN) + reasoning_budget(effort)


def window_size(needed: int, minimum: int, limit: int | None = None) -> int:
    """`needed` rounded up to a whole `WINDOW_STEP`, at least `minimum`, at most `limit`.

    The caller refuses a review whose `needed` is over `limit` before asking for a window.
    """
    size = max(minimum, math.ceil(needed / WINDOW_STEP) * WINDOW_STEP)
    return min(size, limit) if limit else size


def truncated(prompt_eval_count: int, *, floor: int, num_ctx: int) -> bool:
    """Whether Ollama's prompt count shows a prompt cut from the front.

    Either it came back under the floor of what was sent, or it fills the whole window
    (Ollama keeps exactly `num_ctx` tokens of a prompt that is longer). 0 means not reported.
    """
    if prompt_eval_count <= 0:
        return False
    return prompt_eval_count < floor or prompt_eval_count >= num_ctx
