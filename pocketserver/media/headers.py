"""Headers of served media: sandboxing CSP, nosniff, and Content-Disposition.

Spec: client-server API, "Content repository" (CSP, CORP) and "Serving inline
content" (the types that may be ``inline``; everything else is ``attachment``).
"""

from __future__ import annotations

from urllib.parse import quote

CSP = (
    "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; "
    "style-src 'unsafe-inline'; media-src 'self'; object-src 'self';"
)

INLINE_TYPES = frozenset(
    {
        "text/css",
        "text/plain",
        "text/csv",
        "application/json",
        "application/ld+json",
        "image/jpeg",
        "image/gif",
        "image/png",
        "image/apng",
        "image/webp",
        "image/avif",
        "video/mp4",
        "video/webm",
        "video/ogg",
        "video/quicktime",
        "audio/mp4",
        "audio/webm",
        "audio/aac",
        "audio/mpeg",
        "audio/ogg",
        "audio/wave",
        "audio/wav",
        "audio/x-wav",
        "audio/x-pn-wav",
        "audio/flac",
        "audio/x-flac",
    }
)

_TOKEN_CHARS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$&+-.^_`|~"
)


def base_type(content_type: str) -> str:
    """``text/plain; charset=utf-8`` -> ``text/plain`` (lower case)."""
    return content_type.split(";", 1)[0].strip().lower()


def is_inline(content_type: str) -> bool:
    return base_type(content_type) in INLINE_TYPES


def content_disposition(content_type: str, filename: str | None) -> str:
    """``inline`` for the spec's safe types, else ``attachment``; filename per RFC 6266."""
    kind = "inline" if is_inline(content_type) else "attachment"
    if not filename:
        return kind
    if all(c in _TOKEN_CHARS for c in filename):
        return f"{kind}; filename={filename}"
    return f"{kind}; filename*=utf-8''{quote(filename, safe='')}"


def media_headers(content_type: str, filename: str | None, size: int) -> dict[str, str]:
    """Every header of a media response."""
    return {
        "Content-Type": content_type,
        "Content-Length": str(size),
        "Content-Disposition": content_disposition(content_type, filename),
        "Content-Security-Policy": CSP,
        "X-Content-Type-Options": "nosniff",
        "Cross-Origin-Resource-Policy": "cross-origin",
        "Cache-Control": "private, max-age=86400",
    }
