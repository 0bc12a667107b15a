"""Verifying AWS Signature Version 4 (``--verify-signature``), for the one way botocore
signs ``InvokeEndpoint``: an ``Authorization`` header, the payload's SHA-256 signed.

Written here with ``hmac`` and ``hashlib`` rather than by recomputing with botocore's
``SigV4Auth``: botocore is no dependency of the server, and its signer can only sign with the
current time, not check a request made a minute ago. The tests check this against botocore's
own signatures, made by the real client.

The canonical request is botocore's for services other than S3: the path as sent, with dot
segments and empty segments removed, percent-encoded once more (``/~`` kept); the query
string's pairs encoded and sorted; the signed headers, lower case, values with runs of spaces
made one, in the order ``SignedHeaders`` lists; the payload's SHA-256 (or
``X-Amz-Content-SHA256``). Errors are the ones AWS answers, all 403.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl, quote

from .api import AccessDenied

SERVICE = "sagemaker"
ALGORITHM = "AWS4-HMAC-SHA256"
#: How far a request's time may be from ours, as AWS allows.
MAX_SKEW = timedelta(minutes=15)

MISMATCH = (
    "The request signature we calculated does not match the signature you provided. Check "
    "your AWS Secret Access Key and signing method. Consult the service documentation for "
    "details."
)


def _canonical_path(path: str) -> str:
    segments: list[str] = []
    for segment in path.split("/"):
        if segment == "..":
            if segments:
                segments.pop()
        elif segment and segment != ".":
            segments.append(segment)
    normalized = "/" + "/".join(segments)
    if path.endswith("/") and segments:
        normalized += "/"
    return quote(normalized, safe="/~")


def _canonical_query(query: str) -> str:
    pairs = parse_qsl(query, keep_blank_values=True)
    return "&".join(
        sorted(f"{quote(key, safe='-_.~')}={quote(value, safe='-_.~')}" for key, value in pairs)
    )


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode(), hashlib.sha256).digest()


def _parse_authorization(value: str) -> dict[str, str]:
    algorithm, _, rest = value.partition(" ")
    if algorithm != ALGORITHM:
        raise AccessDenied("IncompleteSignatureException", f"Unsupported algorithm {algorithm!r}")
    parts = {}
    for item in rest.split(","):
        key, _, part = item.strip().partition("=")
        parts[key] = part
    if not {"Credential", "SignedHeaders", "Signature"} <= set(parts):
        raise AccessDenied(
            "IncompleteSignatureException",
            "Authorization header requires 'Credential', 'SignedHeaders' and 'Signature'",
        )
    return parts


def verify(
    method: str,
    target: str,
    headers: Mapping[str, str],
    body: bytes | memoryview,
    access_key_id: str,
    secret_access_key: str,
    now: datetime | None = None,
) -> None:
    """Return if the request is signed with this key; else raise :class:`AccessDenied`.

    ``target`` is the request line's target (path and query, as sent); ``headers`` by
    lower-case name."""
    authorization = headers.get("authorization")
    if authorization is None:
        raise AccessDenied("MissingAuthenticationTokenException", "Missing Authentication Token")
    parts = _parse_authorization(authorization)
    scope = parts["Credential"].split("/")
    if len(scope) != 5 or scope[3] != SERVICE or scope[4] != "aws4_request":
        raise AccessDenied(
            "IncompleteSignatureException",
            f"Credential should be scoped to a valid region and to the service '{SERVICE}'",
        )
    key_id, day, region = scope[0], scope[1], scope[2]
    if not hmac.compare_digest(key_id.encode(), access_key_id.encode()):
        raise AccessDenied(
            "UnrecognizedClientException", "The security token included in the request is invalid."
        )
    stamp = headers.get("x-amz-date", "")
    try:
        signed_at = datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        raise AccessDenied(
            "IncompleteSignatureException", "Authorization requires an X-Amz-Date header"
        ) from None
    now = now or datetime.now(UTC)
    if abs(now - signed_at) > MAX_SKEW:
        raise AccessDenied(
            "InvalidSignatureException",
            f"Signature expired: {stamp} is now earlier than "
            f"{(now - MAX_SKEW):%Y%m%dT%H%M%SZ} ({now:%Y%m%dT%H%M%SZ} - 15 min.)"
            if signed_at < now
            else f"Signature not yet current: {stamp} is still later than "
            f"{(now + MAX_SKEW):%Y%m%dT%H%M%SZ} ({now:%Y%m%dT%H%M%SZ} + 15 min.)",
        )
    if day != stamp[:8]:
        raise AccessDenied("InvalidSignatureException", MISMATCH)
    signed_headers = parts["SignedHeaders"].split(";")
    if "host" not in signed_headers:
        raise AccessDenied("InvalidSignatureException", "'Host' must be a signed header")
    if any(name not in headers for name in signed_headers):
        raise AccessDenied("InvalidSignatureException", MISMATCH)
    path, _, query = target.partition("?")
    payload_hash = hashlib.sha256(body).hexdigest()
    stated_hash = headers.get("x-amz-content-sha256", payload_hash)
    if stated_hash not in (payload_hash, "UNSIGNED-PAYLOAD"):
        raise AccessDenied(
            "InvalidSignatureException",
            "The provided 'x-amz-content-sha256' header does not match what was computed.",
        )
    canonical = "\n".join(
        [
            method.upper(),
            _canonical_path(path),
            _canonical_query(query),
            "".join(f"{name}:{' '.join(headers[name].split())}\n" for name in signed_headers),
            ";".join(signed_headers),
            stated_hash,
        ]
    )
    string_to_sign = "\n".join(
        [
            ALGORITHM,
            stamp,
            f"{day}/{region}/{SERVICE}/aws4_request",
            hashlib.sha256(canonical.encode()).hexdigest(),
        ]
    )
    key = _hmac(f"AWS4{secret_access_key}".encode(), day)
    for part in (region, SERVICE, "aws4_request"):
        key = _hmac(key, part)
    expected = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), parts["Signature"].encode()):
        raise AccessDenied("InvalidSignatureException", MISMATCH)
