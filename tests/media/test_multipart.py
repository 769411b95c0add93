"""The multipart/mixed answers of federation media: our writer, our incremental reader,
and both against Synapse's own parser and layout."""

from __future__ import annotations

import io
import json
import os

import pytest

from pocketserver.media.multipart import (
    MAX_HEADER_BYTES,
    MAX_JSON_BYTES,
    MultipartError,
    MultipartReader,
    boundary_of,
    multipart_content_type,
    new_boundary,
    write_head,
    write_tail,
)

CRLF = b"\r\n"


def answer(data: bytes, ctype: str = "image/png", disposition: str | None = "inline") -> bytes:
    return write_head("b0undary", ctype, disposition) + data + write_tail("b0undary")


def read_all(body: bytes, chunk: int, boundary: str = "b0undary") -> tuple[MultipartReader, bytes]:
    reader = MultipartReader(boundary)
    out = bytearray()
    for i in range(0, len(body), chunk):
        out += reader.feed(body[i : i + chunk])
    reader.close()
    return reader, bytes(out)


@pytest.mark.parametrize("chunk", [1, 2, 7, 41, 1 << 20])
def test_round_trip_whatever_the_chunking(chunk: int) -> None:
    data = os.urandom(5000) + b"\r\n--b0undar" + CRLF + b"-" + b"\n--b0undary" + os.urandom(99)
    # The data itself holds near-delimiters; a real delimiter cannot be in it (random
    # boundaries make that vanishingly unlikely, as in every multipart body).
    reader, out = read_all(answer(data, disposition='attachment; filename="a b.png"'), chunk)
    assert out == data
    assert reader.file_size == len(data)
    assert reader.json == {}
    assert reader.file_headers is not None
    assert reader.file_headers.get("Content-Type") == "image/png"
    assert reader.file_headers.get("content-disposition") == 'attachment; filename="a b.png"'
    assert reader.location is None


def test_empty_file_and_no_leading_crlf() -> None:
    body = answer(b"")[2:]  # a body may begin with the delimiter itself
    reader, out = read_all(body, 3)
    assert out == b""
    assert reader.done


def test_a_redirect_part_is_reported() -> None:
    body = (
        b"--b\r\nContent-Type: application/json\r\n\r\n{}\r\n--b\r\n"
        b"Location: https://cdn.example/x\r\n\r\n\r\n--b--\r\n"
    )
    reader, out = read_all(body, 5, "b")
    assert out == b""
    assert reader.location == "https://cdn.example/x"


def test_preamble_padding_and_epilogue_are_ignored() -> None:
    body = (
        b'ignored preamble\r\n--b  \t\r\nContent-Type: application/json\r\n\r\n{"a": 1}'
        b"\r\n--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n--b--\r\nepilogue"
    )
    reader, out = read_all(body, 4, "b")
    assert out == b"hello"
    assert reader.json == {"a": 1}


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"", "ended"),
        (b"--b\r\nContent-Type: application/json\r\n\r\n{}\r\n--b--\r\n", "1 part"),
        (
            b"--b\r\nContent-Type: text/plain\r\n\r\n{}\r\n--b\r\n\r\nx\r\n--b--",
            "not application/json",
        ),
        (
            b"--b\r\nContent-Type: application/json\r\n\r\n[1]\r\n--b\r\n\r\nx\r\n--b--",
            "JSON object",
        ),
        (
            b"--b\r\nContent-Type: application/json\r\n\r\nnot json\r\n--b\r\n\r\nx\r\n--b--",
            "not JSON",
        ),
        (
            b"--b\r\nContent-Type: application/json\r\n\r\n{}\r\n--b\r\n\r\nx"
            b"\r\n--b\r\n\r\ny\r\n--b--",
            "more than two",
        ),
        (b"--b\r\nContent-Type: application/json\r\n\r\n{}\r\n--b\r\n\r\ntruncated", "ended"),
        (b"--b\r\nContent-Type: application/json\r\n\r\n{}\r\n--bX\r\n\r\nx\r\n--b--", "CRLF"),
        (b"--b\r\nno colon here\r\n\r\n{}\r\n--b\r\n\r\nx\r\n--b--", "Name: value"),
        (b"--b\r\nContent-Type: application/json\r\n folded\r\n\r\n{}", "folded"),
    ],
)
def test_malformed_answers_are_refused(body: bytes, why: str) -> None:
    reader = MultipartReader("b")

    def read() -> None:
        reader.feed(body)
        reader.close()

    with pytest.raises(MultipartError, match=why):
        read()


def test_buffers_are_bounded() -> None:
    with pytest.raises(MultipartError, match="no multipart delimiter"):
        MultipartReader("b").feed(b"x" * (MAX_HEADER_BYTES + 100))
    with pytest.raises(MultipartError, match="headers are too long"):
        MultipartReader("b").feed(b"--b\r\nX-A: " + b"a" * (MAX_HEADER_BYTES + 10))
    reader = MultipartReader("b")
    reader.feed(b"--b\r\nContent-Type: application/json\r\n\r\n" + b" " * MAX_JSON_BYTES)
    with pytest.raises(MultipartError, match="metadata part is too long"):
        reader.feed(b" " * 10)


def test_file_bytes_are_handed_on_not_held() -> None:
    reader = MultipartReader("b0undary")
    reader.feed(write_head("b0undary", "application/octet-stream", None))
    held = 0
    for _ in range(100):
        out = reader.feed(b"z" * 10_000)
        held += 10_000 - len(out)
    assert held < 20  # only what could start a delimiter stays behind
    reader.feed(write_tail("b0undary"))
    reader.close()
    assert reader.file_size == 1_000_000


@pytest.mark.parametrize(
    ("header", "boundary"),
    [
        ("multipart/mixed; boundary=abc", "abc"),
        ('Multipart/Mixed;boundary="a b:c"', "a b:c"),
        ("multipart/mixed; charset=x; boundary=q1", "q1"),
    ],
)
def test_boundary_of(header: str, boundary: str) -> None:
    assert boundary_of(header) == boundary


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "application/json",
        "multipart/mixed",
        "multipart/mixed; boundary=",
        "multipart/mixed; boundary=" + "a" * 71,
        "multipart/related; boundary=x",
    ],
)
def test_bad_content_types(header: str | None) -> None:
    with pytest.raises(MultipartError):
        boundary_of(header)


def test_header_injection_is_refused() -> None:
    with pytest.raises(ValueError, match="line break"):
        write_head("b", "text/plain\r\nX-Evil: 1", None)


# --- interop with Synapse -----------------------------------------------------------


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Twisted's, on import
def test_synapse_parses_what_we_write() -> None:
    """Synapse's own reader (synapse/http/client.py, used by federation_get_file)."""
    from synapse.http.client import _MultipartParserProtocol
    from twisted.internet import defer
    from twisted.python.failure import Failure
    from twisted.web.client import ResponseDone

    boundary = new_boundary()
    data = os.urandom(70_000)
    body = (
        write_head(boundary, "image/png", "inline; filename=cat.png") + data + write_tail(boundary)
    )
    ctype = multipart_content_type(boundary)
    synapse_boundary = ctype.split("boundary=")[1]  # exactly how Synapse finds it
    out = io.BytesIO()
    deferred: defer.Deferred[object] = defer.Deferred()
    proto = _MultipartParserProtocol(out, deferred, synapse_boundary, len(body) + 1)
    for i in range(0, len(body), 999):
        proto.dataReceived(body[i : i + 999])
    proto.connectionLost(Failure(ResponseDone()))
    results: list[object] = []
    deferred.addBoth(results.append)
    (result,) = results
    assert not isinstance(result, Failure), result
    assert out.getvalue() == data
    assert result.length == len(data)  # type: ignore[attr-defined]
    assert result.content_type == b"image/png"  # type: ignore[attr-defined]
    assert result.disposition == b"inline; filename=cat.png"  # type: ignore[attr-defined]
    assert json.loads(result.json) == {}  # type: ignore[attr-defined]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_we_read_what_synapse_writes() -> None:
    """The bytes of synapse/media/media_storage.py MultipartFileConsumer, reproduced
    from its Header() framing: CRLF first, JSON part, file part, close delimiter."""
    from synapse.media.media_storage import Header

    b = b"6f1c0ffee"
    data = os.urandom(3000)
    body = (
        CRLF + b"--" + b + CRLF + bytes(Header(b"Content-Type", b"application/json")) + CRLF
        + CRLF + b"{}" + CRLF + b"--" + b + CRLF
        + bytes(Header(b"Content-Type", b"text/plain")) + CRLF
        + bytes(Header(b"Content-Disposition", b"attachment; filename=x.txt")) + CRLF + CRLF
        + data + CRLF + b"--" + b + b"--" + CRLF
    )  # fmt: skip
    reader, out = read_all(body, 333, b.decode())
    assert out == data
    assert reader.file_headers is not None
    assert reader.file_headers.get("content-type") == "text/plain"
    assert reader.file_headers.get("content-disposition") == "attachment; filename=x.txt"
