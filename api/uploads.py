"""The files of a multipart/form-data upload, found with ``bytes.find`` in time linear in its size.

Not Starlette's ``request.form()``: it runs python-multipart, whose 0.0.5 (Debian's) handles
every CR byte inside a part in Python with a callback; a 2 MiB part of CR bytes held the event
loop, and so every other client, for 77 s. Here the body, which BodyLimit keeps under the
upload limit, is read whole and cut at its boundary by C code; a part's headers are parsed
with a bounded regular expression.
"""
from __future__ import annotations

import re
from typing import List, Optional, Tuple

from fastapi import HTTPException, Request
from starlette.requests import ClientDisconnect

# As many as Starlette's parser takes by default.
MAX_PARTS = 1000
# RFC 2046: a boundary has 1 to 70 characters.
_BOUNDARY = re.compile(r';\s*boundary=(?:"([^"]{1,70})"|([^";\s]{1,70}))\s*(?:;|$)', re.IGNORECASE)
_DISPOSITION = re.compile(rb'^content-disposition:(.*)$', re.IGNORECASE | re.MULTILINE)
_PARAMETER = re.compile(rb';\s*(name|filename)=(?:"([^"]*)"|([^";\s]*))', re.IGNORECASE)


async def read_files(request: Request, field: str) -> List[Tuple[str, bytes]]:
    """(file name, data) of each part named ``field``, in order; a 4xx HTTPException for a body
    that is not multipart/form-data (422), is malformed (400) or has no such part (422).

    Usage: ``[(filename, data)] = await read_files(request, "file")``
    """
    boundary = _boundary(request.headers.get("content-type", ""), field)
    body = bytearray()  # grown in place: request.body() would hold the chunks and their join at once
    try:
        async for chunk in request.stream():
            body += chunk
    except ClientDisconnect:  # the client left, or BodyLimit cut the body off and answers itself
        raise HTTPException(400, "the request body ended early") from None
    files = [(filename or "", data) for name, filename, data in _parts(body, boundary) if name == field]
    if not files:
        raise HTTPException(422, f"the upload has no {field!r} field")
    return files


def _boundary(content_type: str, field: str) -> bytes:
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind != "multipart/form-data":
        raise HTTPException(422, f"expected a multipart/form-data upload with a {field!r} field, "
                                 f"got content type {kind or 'none'!r}")
    match = _BOUNDARY.search(content_type)
    if match is None:
        raise HTTPException(400, "multipart/form-data without a valid boundary (1 to 70 characters)")
    return (match.group(1) or match.group(2)).encode("latin-1")


def _parts(body: bytearray, boundary: bytes) -> List[Tuple[Optional[str], Optional[str], bytes]]:
    """(field name, file name, data) of every part of ``body``; each part's data is its one copy."""
    delimiter = b"\r\n--" + boundary
    if body.startswith(delimiter[2:]):  # no preamble: the first delimiter has no CRLF before it
        at = len(delimiter) - 2
    else:
        at = body.find(delimiter)
        if at < 0:
            raise HTTPException(400, "malformed multipart body: its boundary never occurs")
        at += len(delimiter)
    parts: List[Tuple[Optional[str], Optional[str], bytes]] = []
    while not body.startswith(b"--", at):  # "--" after a delimiter closes the body
        end = body.find(delimiter, at)
        if end < 0:
            raise HTTPException(400, "malformed multipart body: truncated (no closing boundary)")
        head_end = body.find(b"\r\n\r\n", at, end)
        if head_end < 0:
            raise HTTPException(400, "malformed multipart body: a part without a blank line after its headers")
        if len(parts) == MAX_PARTS:
            raise HTTPException(400, f"more than {MAX_PARTS} parts in one upload")
        parts.append((*_disposition(bytes(body[at:head_end])), bytes(memoryview(body)[head_end + 4:end])))
        at = end + len(delimiter)
    return parts


def _disposition(head: bytes) -> Tuple[Optional[str], Optional[str]]:
    """The name and file name a part's Content-Disposition header gives (None where absent)."""
    line = _DISPOSITION.search(head.replace(b"\r\n", b"\n"))
    found = {key.lower(): quoted or bare for key, quoted, bare in _PARAMETER.findall(line.group(1))} if line else {}
    name, filename = found.get(b"name"), found.get(b"filename")
    return (name.decode("utf-8", "replace") if name is not None else None,
            filename.decode("utf-8", "replace") if filename is not None else None)
