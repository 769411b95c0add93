"""OpenGraph data out of an HTML page, with the standard library's ``html.parser``.

Reads ``<meta property="og:*">``, ``<title>``, ``<meta name="description">`` and
the first ``<img>``; stops at ``</head>`` once it has a title, and bounds how much
text it keeps, so a hostile page cannot make it hold much.
"""

from __future__ import annotations

from html.parser import HTMLParser

MAX_VALUE = 1000
MAX_KEYS = 50


class _OgParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.og: dict[str, str] = {}
        self.title: str | None = None
        self.description: str | None = None
        self.first_image: str | None = None
        self._in_title = False
        self._title_parts: list[str] = []
        self._title_len = 0
        self.done = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k.lower(): v for k, v in attrs if v is not None}
        if tag == "meta":
            key = a.get("property") or a.get("name") or ""
            content = a.get("content")
            if content is None:
                return
            key = key.strip().lower()
            if key.startswith("og:") and len(self.og) < MAX_KEYS and key not in self.og:
                self.og[key] = content.strip()[:MAX_VALUE]
            elif key == "description" and self.description is None:
                self.description = content.strip()[:MAX_VALUE]
        elif tag == "title" and self.title is None:
            self._in_title = True
        elif tag == "img" and self.first_image is None and a.get("src"):
            self.first_image = a["src"][:MAX_VALUE]

    def handle_data(self, data: str) -> None:
        if self._in_title and self._title_len < MAX_VALUE:
            self._title_parts.append(data)
            self._title_len += len(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "title" and self._in_title:
            self._in_title = False
            self.title = " ".join("".join(self._title_parts).split())[:MAX_VALUE]
        elif tag == "body":
            self.done = True


def _decode(body: bytes, content_type: str) -> str:
    charset = "utf-8"
    for part in content_type.split(";")[1:]:
        name, _, value = part.partition("=")
        if name.strip().lower() == "charset" and value.strip():
            charset = value.strip().strip('"')
    try:
        return body.decode(charset, errors="replace")
    except LookupError:
        return body.decode("utf-8", errors="replace")


def parse_opengraph(body: bytes, content_type: str = "text/html") -> dict[str, str]:
    """The ``og:*`` keys of the page, with ``og:title`` and ``og:description`` filled
    from ``<title>`` and the description meta when the page has no OpenGraph ones.
    ``og:image`` may be relative (the caller resolves it)."""
    parser = _OgParser()
    text = _decode(body, content_type)
    step = 64 * 1024
    for start in range(0, len(text), step):
        parser.feed(text[start : start + step])
        if parser.done:
            break
    og = dict(parser.og)
    if "og:title" not in og and parser.title:
        og["og:title"] = parser.title
    if "og:description" not in og and parser.description:
        og["og:description"] = parser.description
    if "og:image" not in og and parser.first_image:
        og["og:image"] = parser.first_image
    return og
