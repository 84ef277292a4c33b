"""PDF documents (pypdf): text, page count, title, author, creation date, language, and the PII
the text held, taken out into columns of their own so the spec protects it like any column.

E-mail addresses and phone numbers in the text, title and author are replaced by ``[email]`` and
``[phone]``; the values found go to ``emails`` and ``phones`` (``;``-separated), which the spec's
``security`` must protect (``hmac``, ``mask`` or ``drop``): they are PII in the contract. With
``separator: ";"`` an HMAC protects each value alone, so an erasure matches any one of them.
"""

from __future__ import annotations

import io
import re
from typing import TYPE_CHECKING, Any

from base_platform.pipelines.multimodal_processing.media_kinds import SideWriter, Unreadable

if TYPE_CHECKING:
    from base_platform.pipelines.spec import MediaSource

EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
PHONE = re.compile(r"\+?\d[\d ()/-]{6,}\d")
STOPWORDS = {  # the commonest words: enough to tell these languages apart in a page of text
    "en": {"the", "of", "and", "to", "in", "is", "that", "for", "it", "with", "was", "on", "this", "are"},
    "de": {"der", "die", "und", "in", "den", "von", "zu", "das", "mit", "sich", "des", "auf", "ist", "nicht"},
    "fr": {"le", "la", "les", "de", "des", "et", "en", "un", "une", "du", "est", "que", "pour", "dans"},
    "es": {"el", "la", "de", "que", "y", "en", "los", "del", "se", "las", "por", "un", "para", "con"},
    "nl": {"de", "het", "een", "van", "en", "in", "is", "dat", "op", "te", "zijn", "met", "voor", "niet"},
}


def language(text: str) -> str | None:
    """The language whose common words the text uses most; None for too little text."""
    words = re.findall(r"[a-zäöüßéèàç]+", text.lower())
    if len(words) < 5:
        return None
    scores = {code: sum(word in common for word in words) for code, common in STOPWORDS.items()}
    best = max(scores, key=lambda code: scores[code])
    return best if scores[best] else None


def redact(text: str, found: dict[str, list[str]]) -> str:
    """The text with e-mails and phone numbers replaced; what was found added to ``found``."""
    for kind, pattern in (("emails", EMAIL), ("phones", PHONE)):
        found[kind] += pattern.findall(text)
        text = pattern.sub(f"[{kind[:-1]}]", text)
    return text


def extract(data: bytes, name: str, digest: str, source: MediaSource, side: SideWriter) -> dict[str, Any]:
    import pypdf
    from pypdf.errors import PyPdfError

    try:
        reader = pypdf.PdfReader(io.BytesIO(data), strict=True)
        pages = len(reader.pages)
    except (PyPdfError, ValueError, KeyError, TypeError, OSError) as exc:  # pypdf's ways to say "broken"
        raise Unreadable(f"not a readable PDF: {type(exc).__name__}: {exc}") from exc
    if pages > source.max_pages:
        raise Unreadable(f"{pages} pages, more than max_pages ({source.max_pages})")
    try:
        text = "\n".join(page.extract_text() or "" for page in reader.pages)
        meta = reader.metadata
        created = meta.creation_date if meta is not None else None
        title, author = (meta.title, meta.author) if meta is not None else (None, None)
    except (PyPdfError, ValueError, KeyError, TypeError, OSError) as exc:  # pypdf's ways to say "broken"
        raise Unreadable(f"not a readable PDF: {type(exc).__name__}: {exc}") from exc
    found: dict[str, list[str]] = {"emails": [], "phones": []}
    clean = redact(text, found)
    return {
        "pages": str(pages),
        "title": redact(str(title), found) if title else None,
        "author": redact(str(author), found) if author else None,
        "created": created.strftime("%Y-%m-%dT%H:%M:%SZ") if created else None,
        "language": language(clean),
        "text": clean,
        "emails": ";".join(dict.fromkeys(found["emails"])) or None,
        "phones": ";".join(dict.fromkeys(found["phones"])) or None,
    }
