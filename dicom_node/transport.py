"""Transport shared by the SCP and the SCU: TLS contexts from the ``tls`` settings, and Nagle off."""

from __future__ import annotations

import contextlib
import socket
import ssl

from pynetdicom import evt

from dicom_node.settings import TlsConfig


def set_no_delay(event: evt.Event) -> None:
    """Disable Nagle's algorithm on an association's socket. DIMSE messages go out in several small writes
    (PDU header, command, data); with Nagle each waits for the peer's delayed ACK, about 40 ms per message
    on Linux, which caps one association at ~10-25 instances/s."""
    sock = getattr(event.assoc.dul.socket, "socket", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def server_ssl_context(tls: TlsConfig) -> ssl.SSLContext | None:
    if not tls.enabled:
        return None
    assert tls.certificate is not None and tls.private_key is not None  # checked by TlsConfig
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(tls.certificate), str(tls.private_key))
    if tls.ca_certificates is not None:
        context.load_verify_locations(str(tls.ca_certificates))
    context.verify_mode = ssl.CERT_REQUIRED if tls.require_client_certificate else ssl.CERT_OPTIONAL
    if tls.ca_certificates is None:
        context.verify_mode = ssl.CERT_NONE
    return context


def client_ssl_context(tls: TlsConfig) -> ssl.SSLContext | None:
    if not tls.enabled:
        return None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(tls.ca_certificates) if
                                         tls.ca_certificates else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False  # PACS certificates rarely name the host the way we address it
    if tls.certificate is not None and tls.private_key is not None:
        context.load_cert_chain(str(tls.certificate), str(tls.private_key))
    return context
