"""Transport shared by the SCP and the SCUs: TLS contexts from the ``tls`` settings, Nagle off, and the
association an SCU opens to a configured destination."""

from __future__ import annotations

import contextlib
import socket
import ssl
from collections.abc import Sequence

from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.events import EventHandlerType
from pynetdicom.pdu_primitives import SCP_SCU_RoleSelectionNegotiation

from dicom_node.settings import DestinationConfig, TlsConfig


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


def associate(ae: AE, destination: DestinationConfig, *,
              roles: Sequence[SCP_SCU_RoleSelectionNegotiation] = (),
              handlers: Sequence[EventHandlerType] = ()) -> Association:
    """Request an association with ``destination`` (its called AE title, over TLS when it says so) with the
    contexts, AE title and timeouts ``ae`` was given; Nagle off. The caller looks at the result
    (``is_established``, ``is_rejected``, ``is_aborted``)."""
    tls = client_ssl_context(destination.tls)
    return ae.associate(
        destination.host, destination.port, ae_title=destination.ae_title,
        tls_args=(tls, destination.host) if tls else None,
        ext_neg=list(roles) or None,
        evt_handlers=[(evt.EVT_CONN_OPEN, set_no_delay), *handlers],
    )
