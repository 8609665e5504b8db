"""Why a distribution connection over TLS failed, in words a user can act on: OpenSSL's reasons
("TLSV1_ALERT_UNKNOWN_CA", "WRONG_VERSION_NUMBER") say it in its own terms, which side refused
whose certificate not at all."""

from __future__ import annotations

import ssl

_NOT_TLS = frozenset({"WRONG_VERSION_NUMBER", "UNKNOWN_PROTOCOL", "HTTP_REQUEST",
                      "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG", "UNEXPECTED_RECORD",
                      "WRONG_SSL_VERSION"})
_VERSIONS = frozenset({"UNSUPPORTED_PROTOCOL", "NO_PROTOCOLS_AVAILABLE",
                       "TLSV1_ALERT_PROTOCOL_VERSION", "VERSION_TOO_LOW", "VERSION_TOO_HIGH"})
_CERTIFICATE_ALERTS = ("CERTIFICATE", "UNKNOWN_CA", "ACCESS_DENIED", "DECRYPT_ERROR")


def is_tls_record(header: bytes) -> bool:
    """Whether ``header`` (at least 2 bytes) starts a TLS handshake or alert record, as a TLS
    peer's first bytes do (a plain handshake message never starts so: it would be 5 KiB)."""
    return header[0] in (0x15, 0x16) and header[1] == 0x03


def describe(exc: BaseException) -> str:
    """What ``exc``, raised by a TLS handshake or by the first read after it, means."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        why = exc.verify_message or exc.reason or str(exc)
        hint = (" (it is not signed by a CA we trust)"
                if exc.verify_code in (19, 20, 21) else "")  # self-signed, unknown issuer
        return f"we refused the peer's certificate: {why}{hint}"
    if isinstance(exc, ssl.SSLError) and not isinstance(exc, ssl.SSLEOFError):
        reason = exc.reason or ""
        said = f"{reason.lower().replace('_', ' ')}" if reason else str(exc)
        if reason == "PEER_DID_NOT_RETURN_A_CERTIFICATE":
            return "the peer sent no certificate, and we require one"
        if reason in _NOT_TLS:
            return f"the peer does not speak TLS ({said}): a node without TLS distribution?"
        if reason in _VERSIONS:
            return f"no TLS version both sides allow ({said})"
        if "ALERT" in reason and any(part in reason for part in _CERTIFICATE_ALERTS):
            return f"the peer refused our certificate ({said})"
        return f"TLS failed: {said}"
    if isinstance(exc, ConnectionError | EOFError | ssl.SSLEOFError):
        return ("the peer closed the connection in the TLS handshake (it refused it, or it "
                "does not speak TLS)")
    return f"{type(exc).__name__}: {exc}"
