"""The ``multipart/mixed`` answers of federation media downloads, written and read.

Spec: server-server-api.md "Content Repository" (``GET /_matrix/federation/v1/media/
download/{mediaId}`` and ``/thumbnail/{mediaId}``): the answer has exactly two parts,
first ``application/json`` metadata (an empty object today), then either the bytes
with their ``Content-Type`` (and ``Content-Disposition``), or a part with a
``Location`` header naming where the bytes can be fetched. Framing per RFC 2046 5.1.

The writer produces the layout Synapse sends (``synapse/media/media_storage.py``
``MultipartFileConsumer``), and Synapse's reader has two quirks that the writer keeps
to: the boundary is read as everything after ``boundary=`` in the Content-Type (so
nothing may follow it, and it is not quoted), and the first header of the first part
must be ``Content-Type: application/json`` exactly.

The reader is sans-I/O (:class:`MultipartReader`: bytes in, file bytes out) so that an
answer is parsed as it streams, with bounded buffering, whatever the file's size.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field

__all__ = [
    "MAX_HEADER_BYTES",
    "MAX_JSON_BYTES",
    "MultipartError",
    "MultipartReader",
    "PartHeaders",
    "boundary_of",
    "multipart_content_type",
    "new_boundary",
    "write_head",
    "write_tail",
]

CRLF = b"\r\n"
MAX_HEADER_BYTES = 8 * 1024
"""The most bytes of one part's header block read before giving up."""
MAX_JSON_BYTES = 64 * 1024
"""The most bytes of the metadata part read."""
MAX_BOUNDARY = 70
"""RFC 2046: a boundary is 1 to 70 characters."""
_BCHARS = frozenset(b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ'()+_,-./:=? ")


class MultipartError(ValueError):
    """The answer is not the two-part ``multipart/mixed`` that the spec describes."""


# --- writing ------------------------------------------------------------------------


def new_boundary() -> str:
    """A random boundary (32 hex digits, as Synapse's uuid4().hex)."""
    return secrets.token_hex(16)


def multipart_content_type(boundary: str) -> str:
    """The answer's Content-Type; ``boundary=`` last and unquoted (see the module doc)."""
    return f"multipart/mixed; boundary={boundary}"


def write_head(boundary: str, content_type: str, disposition: str | None) -> bytes:
    """Everything before the file's bytes: the metadata part and the file part's headers.

    Header values must not hold CR or LF (checked: they come from our own database).
    """
    for value in (content_type, disposition or ""):
        if "\r" in value or "\n" in value:
            raise ValueError("header value with a line break")
    b = boundary.encode("ascii")
    head = CRLF + b"--" + b + CRLF + b"Content-Type: application/json" + CRLF + CRLF + b"{}"
    head += CRLF + b"--" + b + CRLF + b"Content-Type: " + content_type.encode("utf-8") + CRLF
    if disposition:
        head += b"Content-Disposition: " + disposition.encode("utf-8") + CRLF
    return head + CRLF


def write_tail(boundary: str) -> bytes:
    """The close delimiter after the file's bytes."""
    return CRLF + b"--" + boundary.encode("ascii") + b"--" + CRLF


# --- reading ------------------------------------------------------------------------


def boundary_of(content_type: str | None) -> str:
    """The boundary of a ``multipart/mixed`` Content-Type header.

    Raises:
        MultipartError: not multipart/mixed, or no valid boundary.
    """
    if not content_type:
        raise MultipartError("no Content-Type")
    kind, _, params = content_type.partition(";")
    if kind.strip().lower() != "multipart/mixed":
        raise MultipartError(f"Content-Type is {kind.strip()!r}, not multipart/mixed")
    for param in params.split(";"):
        name, eq, value = param.strip().partition("=")
        if eq and name.strip().lower() == "boundary":
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            raw = value.encode("latin-1", "replace")
            valid = 1 <= len(raw) <= MAX_BOUNDARY and all(c in _BCHARS for c in raw)
            if valid and not raw.endswith(b" "):
                return value
            raise MultipartError("the boundary is not valid")
    raise MultipartError("no boundary in the Content-Type")


@dataclass
class PartHeaders:
    """The headers of one part (names lower-cased; the last one of a name wins)."""

    values: dict[str, str] = field(default_factory=dict)

    def get(self, name: str) -> str | None:
        return self.values.get(name.lower())


def _parse_headers(block: bytes) -> PartHeaders:
    headers = PartHeaders()
    for line in block.split(CRLF) if block else []:
        if line[:1] in (b" ", b"\t"):
            raise MultipartError("folded part headers are not accepted")
        name, colon, value = line.partition(b":")
        if not colon or not name or name.strip() != name:
            raise MultipartError("a part header is not 'Name: value'")
        try:
            text = value.strip().decode("utf-8")
        except UnicodeDecodeError:
            raise MultipartError("a part header is not UTF-8") from None
        headers.values[name.decode("ascii", "replace").lower()] = text
    return headers


# States of the reader.
_BEFORE, _HEADERS, _JSON, _FILE, _AFTER_FILE, _DONE = range(6)


class MultipartReader:
    """Reads a federation media answer incrementally.

    ``feed(data)`` returns the bytes of the file part found so far (holding back only
    the few bytes that could begin the next delimiter); :attr:`json` and
    :attr:`file_headers` are set as soon as they have been read; :meth:`close` checks
    that the answer was complete. The preamble, epilogue and buffers are bounded;
    anything else the spec does not allow raises :class:`MultipartError`.
    """

    def __init__(self, boundary: str) -> None:
        self._delimiter = CRLF + b"--" + boundary.encode("latin-1")
        # A body may start with the delimiter itself (no CRLF before it): reading
        # behind a CRLF finds that case as any other.
        self._buf = bytearray(CRLF)
        self._state = _BEFORE
        self._part = 0
        self._skipped = 0
        self.json: dict[str, object] | None = None
        self.file_headers: PartHeaders | None = None
        self.file_size = 0

    @property
    def done(self) -> bool:
        return self._state == _DONE

    @property
    def location(self) -> str | None:
        """The redirect of the second part, if it has a ``Location`` header."""
        return None if self.file_headers is None else self.file_headers.get("location")

    def feed(self, data: bytes) -> bytes:
        """Take the next bytes of the answer; return the file bytes they complete."""
        self._buf += data
        out = bytearray()
        while True:
            before = (self._state, len(self._buf))
            if self._state == _BEFORE:
                self._find_first_delimiter()
            elif self._state == _HEADERS:
                self._read_headers()
            elif self._state == _JSON:
                self._read_json()
            elif self._state == _FILE:
                out += self._read_file()
            elif self._state == _AFTER_FILE:
                self._read_close()
            else:
                self._buf.clear()  # the epilogue is ignored
            if (self._state, len(self._buf)) == before:
                break
        self.file_size += len(out)
        return bytes(out)

    def close(self) -> None:
        """The answer ended: raise unless it was complete.

        Raises:
            MultipartError: the answer stopped before its close delimiter.
        """
        if self._state != _DONE:
            raise MultipartError("the answer ended before the end of the multipart body")

    # -- states ----------------------------------------------------------------------

    def _find_first_delimiter(self) -> None:
        i = self._buf.find(self._delimiter)
        if i < 0:
            keep = len(self._delimiter) - 1
            drop = max(len(self._buf) - keep, 0)
            self._skipped += drop
            if self._skipped > MAX_HEADER_BYTES:
                raise MultipartError("no multipart delimiter in the answer's first bytes")
            del self._buf[:drop]
            return
        del self._buf[: i + len(self._delimiter)]
        self._state = _HEADERS

    def _after_delimiter(self) -> bool | None:
        """After a delimiter: True for a part (its line ended), False for the close
        delimiter, None when more bytes are needed. Consumes the line (keeps its CRLF)."""
        if len(self._buf) < 2:
            return None
        if self._buf[:2] == b"--":
            del self._buf[:2]
            return False
        i = 0
        while i < len(self._buf) and self._buf[i] in b" \t":  # transport padding
            i += 1
        if i > MAX_HEADER_BYTES:
            raise MultipartError("a delimiter line is too long")
        if len(self._buf) - i < 2:
            return None
        if self._buf[i : i + 2] != CRLF:
            raise MultipartError("a delimiter is followed by something else than CRLF")
        del self._buf[:i]
        return True

    def _read_headers(self) -> None:
        more = self._after_delimiter()
        if more is None:
            return
        if more is False:
            raise MultipartError(f"the multipart body ends after {self._part} part(s), not 2")
        # The buffer starts with the delimiter line's CRLF: headers end at CRLF CRLF.
        end = self._buf.find(CRLF + CRLF)
        if end < 0:
            if len(self._buf) > MAX_HEADER_BYTES:
                raise MultipartError("a part's headers are too long")
            return
        headers = _parse_headers(bytes(self._buf[2:end]))
        del self._buf[: end + 4]
        self._part += 1
        if self._part == 1:
            ctype = headers.get("content-type") or ""
            if ctype.split(";", 1)[0].strip().lower() != "application/json":
                raise MultipartError("the first part is not application/json")
            self._state = _JSON
        elif self._part == 2:
            self.file_headers = headers
            self._state = _FILE
        else:
            raise MultipartError("more than two parts")

    def _read_json(self) -> None:
        i = self._buf.find(self._delimiter)
        if i < 0:
            if len(self._buf) > MAX_JSON_BYTES:
                raise MultipartError("the metadata part is too long")
            return
        try:
            value = json.loads(bytes(self._buf[:i]))
        except (ValueError, UnicodeDecodeError):
            raise MultipartError("the metadata part is not JSON") from None
        if not isinstance(value, dict):
            raise MultipartError("the metadata part is not a JSON object")
        self.json = value
        del self._buf[: i + len(self._delimiter)]
        self._state = _HEADERS

    def _read_file(self) -> bytes:
        i = self._buf.find(self._delimiter)
        if i < 0:
            keep = len(self._delimiter) - 1
            cut = max(len(self._buf) - keep, 0)
            chunk = bytes(self._buf[:cut])
            del self._buf[:cut]
            return chunk
        chunk = bytes(self._buf[:i])
        del self._buf[: i + len(self._delimiter)]
        self._state = _AFTER_FILE
        return chunk

    def _read_close(self) -> None:
        more = self._after_delimiter()
        if more is None:
            return
        if more is True:
            raise MultipartError("more than two parts")
        self._state = _DONE
