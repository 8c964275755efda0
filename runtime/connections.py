"""The server's listening socket and HTTP connections under uvicorn: bind errors in one line, and
connections that cannot hold the server open by sending their headers slowly.

- `bind_socket` binds the port before uvicorn starts, so a port in use or an unknown host is an
  `AddressUnavailable` error (the CLI prints one line and exits 2) instead of uvicorn's log lines
  and exit code 3.
- `header_timeout_protocol` is uvicorn's h11 HTTP protocol with a deadline on the request line
  and headers: a connection that has not sent a complete request head within `header_timeout_s`
  of opening (or of its previous response) is closed. uvicorn's own keep-alive timeout only starts
  after a first response, so without it a client could hold any number of connections open with
  partial headers. Header size stays bounded by h11 (`h11_max_incomplete_event_size`, 16 KiB);
  request bodies are bounded by the app (runtime.server: size, admission, deadline).
- `uvicorn_server` puts both together for `runtime.server.serve` and the tests.
"""

from __future__ import annotations

import socket

from lbdeploy.errors import LbdeployError


class AddressUnavailable(LbdeployError):
    """The server cannot listen on the host and port asked for (in use, not local, or not permitted)."""


def bind_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to (host, port) and listening, ready for uvicorn.

    Raises:
        AddressUnavailable: the host does not resolve, or the port is in use or not permitted.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as err:
        raise AddressUnavailable(f"cannot listen on {host}:{port}: the host does not resolve ({err.strerror}); "
                                 "pass --host with a local address such as 127.0.0.1") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as err:
        sock.close()
        raise AddressUnavailable(f"cannot listen on {host}:{port}: {err.strerror or err}; "
                                 "stop the other server or pick another --port") from None
    sock.set_inheritable(True)
    return sock


def header_timeout_protocol(header_timeout_s: float):
    """uvicorn's h11 protocol class that closes connections whose request head is late.

    Args:
        header_timeout_s: seconds a connection has to send a complete request line and headers,
            counted from its opening and again from each response.

    Returns:
        A subclass of uvicorn.protocols.http.h11_impl.H11Protocol (pass it as `uvicorn.Config(http=...)`).
    """
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderTimeoutProtocol(H11Protocol):
        """H11Protocol closing the connection when no request head arrives within `header_timeout_s`."""

        _head_timer = None

        def _await_head(self) -> None:
            self._cancel_head_timer()
            waiting_cycle = self.cycle
            self._head_timer = self.loop.call_later(header_timeout_s, self._head_late, waiting_cycle)

        def _cancel_head_timer(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_late(self, waiting_cycle) -> None:
            self._head_timer = None
            idle = self.cycle is None or self.cycle.response_complete
            if self.cycle is waiting_cycle and idle and not self.transport.is_closing():  # no request began since
                self.transport.close()

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._await_head()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._await_head()

        def connection_lost(self, exc) -> None:
            self._cancel_head_timer()
            super().connection_lost(exc)

    return HeaderTimeoutProtocol


def uvicorn_server(app, host: str, port: int, header_timeout_s: float, log_level: str = "info"):
    """A uvicorn server for `app` on a socket already bound to (host, port).

    Returns:
        (uvicorn.Server, [socket]): run it with `server.run(sockets=sockets)`.

    Raises:
        AddressUnavailable: see `bind_socket`.
    """
    import uvicorn

    sock = bind_socket(host, port)
    config = uvicorn.Config(app, host=host, port=sock.getsockname()[1], log_level=log_level, lifespan="on",
                            http=header_timeout_protocol(header_timeout_s))
    return uvicorn.Server(config), [sock]
