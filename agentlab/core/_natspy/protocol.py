"""The NATS protocol commands agentlab builds itself, and reading them back.

Callers build each PUB/HPUB command in their own thread so that the event loop only writes
bytes (outbound.py). When a connection cannot take the fast path, the same commands are read
back here and handed to nats-py's public ``publish()``. Nothing here touches nats-py.
"""

from __future__ import annotations

import re

_CRLF = b"\r\n"
# RFC 7230 token characters, as nats-py checks header names (anything else could break the line).
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HEADER_LINE = b"NATS/1.0\r\n"


def encode_headers(headers: dict[str, str]) -> bytes:
    parts = [_HEADER_LINE]
    for key, value in headers.items():
        key = str(key).strip()
        value = str(value)
        if not _HEADER_NAME.fullmatch(key):
            raise ValueError(
                f"Header name {key!r} is invalid: a header name is printable ASCII letters, "
                "digits and !#$%&'*+-.^_`|~ (no ':', spaces or line breaks), e.g. 'X-Trace-Id'.")
        if "\r" in value or "\n" in value:
            raise ValueError(f"Header {key!r} has a line break in its value; remove it.")
        parts.append(f"{key}: {value}\r\n".encode())
    parts.append(_CRLF)
    return b"".join(parts)


def pub_command(subject: str, payload: bytes, reply: str = "", header_block: bytes = b"") -> bytes:
    if header_block:
        size = len(header_block)
        line = f"HPUB {subject} {reply} {size} {size + len(payload)}\r\n".encode()
        return b"".join((line, header_block, payload, _CRLF))
    if reply:
        return b"".join((f"PUB {subject} {reply} {len(payload)}\r\n".encode(), payload, _CRLF))
    return b"".join((f"PUB {subject} {len(payload)}\r\n".encode(), payload, _CRLF))


def parse_pub(command: bytes) -> tuple[str, str, dict[str, str] | None, bytes]:
    """``(subject, reply, headers, payload)`` of a command from ``pub_command``."""
    end = command.index(_CRLF)
    verb, subject, *fields = command[:end].decode().split(" ")
    body = command[end + 2:-2]
    if verb == "HPUB":  # HPUB subject [reply] header-size total-size
        reply = fields[0] if len(fields) == 3 else ""
        size = int(fields[-2])
        headers = {}
        for line in body[len(_HEADER_LINE):size].decode().split("\r\n"):
            if line:
                # A header name has no ':' (encode_headers), so the first ": " ends it.
                key, _, value = line.partition(": ")
                headers[key] = value
        return subject, reply, headers, body[size:]
    return subject, fields[0] if len(fields) == 2 else "", None, body
