"""SMS text: one message of at most 160 GSM-7 characters saying the day, what failed, the one action.

Characters outside the GSM 03.38 basic set (or in its extension table, which costs two septets)
would switch the whole SMS to UCS-2 (70 characters) or split it, so they are folded to a plain
equivalent before the text is cut.
"""

from __future__ import annotations

import unicodedata

SMS_LIMIT = 160

GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# The extension table (two septets each) and common typography, mapped to basic characters.
_REPLACEMENTS = {
    "[": "(", "]": ")", "{": "(", "}": ")", "|": "/", "\\": "/", "~": "-", "^": "", "€": "EUR",
    "…": "...", "–": "-", "—": "-", "‘": "'", "’": "'", "“": '"', "”": '"', "\t": " ", "\n": " ", "\r": " ",
}  # fmt: skip


def to_gsm7(text: str) -> str:
    """``text`` in GSM-7 basic characters only: accents folded where GSM lacks them, the rest as '?'."""
    out = []
    for char in text:
        if char in _REPLACEMENTS:
            out.append(_REPLACEMENTS[char])
        elif char in GSM7_BASIC:
            out.append(char)
        else:
            folded = "".join(c for c in unicodedata.normalize("NFKD", char) if c in GSM7_BASIC)
            out.append(folded or "?")
    return "".join(out)


def is_gsm7(text: str) -> bool:
    return all(char in GSM7_BASIC for char in text)


def sms_text(day: str | None, what: str, reason: str, action: str) -> str:
    """One SMS: ``DPA <day> <what>: <reason>. <action>``, the reason cut to make the whole fit.

    Args:
        day: the business day concerned (None when the run had no day).
        what: what failed, a few words (``load FAILED``, ``BLOCKED by 30% rule``).
        reason: why, as long as the message allows.
        action: the one thing to do; never cut.

    Returns:
        At most 160 GSM-7 basic characters.
    """
    head = to_gsm7(f"DPA {day} {what}" if day else f"DPA {what}")
    tail = to_gsm7(f". {action}")
    room = SMS_LIMIT - len(head) - len(tail) - 2
    reason = " ".join(to_gsm7(reason).split())
    if len(reason) > room:
        reason = reason[: max(0, room - 3)].rstrip() + "..."
    text = f"{head}: {reason}{tail}" if reason else f"{head}{tail}"
    return text[:SMS_LIMIT]
