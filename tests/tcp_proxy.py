"""A TCP proxy the tests put in front of a Redis to break connections on purpose.

Two faults, each deterministic:

- :meth:`TcpProxy.drop_next_reply`: the next command (optionally: the next
  one containing some bytes) is forwarded, then the connection is cut when its
  reply arrives, before the client sees it: the command ran, the client cannot
  know.
- :meth:`TcpProxy.refuse`: the listening socket is closed and open connections
  cut, so a client's next command fails to connect (refused) and is never sent;
  :meth:`TcpProxy.accept` listens again on the same port.

Threads and blocking sockets: one thread accepts, two pump each connection.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time

_CHUNK = 65536


class _Link:
    """One client connection and the proxy's connection to the server for it."""

    def __init__(self, client: socket.socket, server: socket.socket) -> None:
        self.client = client
        self.server = server
        self.drop_reply = False
        self.closed = False

    def close(self) -> None:
        self.closed = True
        for sock in (self.client, self.server):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()


class TcpProxy:
    """Forwards 127.0.0.1:``port`` to ``target_host``:``target_port``."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.dropped = 0
        self._listener: socket.socket | None = None
        self._links: list[_Link] = []
        self._lock = threading.Lock()
        self._armed = False
        self._armed_on: bytes | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> TcpProxy:
        self.accept()
        return self

    def accept(self) -> None:
        """Listen (again, on the same port once it has one) and forward new connections."""
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept_loop, args=(listener,), daemon=True).start()

    def refuse(self) -> None:
        """Stop listening and cut every open connection: new connections are refused."""
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        self.cut_all()

    def cut_all(self) -> None:
        with self._lock:
            links, self._links = self._links, []
        for link in links:
            link.close()

    def drop_next_reply(self, containing: bytes | None = None) -> None:
        """Arm the fault: the next command sent (containing ``containing``, when
        given) reaches the server, its reply does not reach the client."""
        with self._lock:
            self._armed = True
            self._armed_on = containing

    @property
    def armed(self) -> bool:
        return self._armed

    def stop(self) -> None:
        self.refuse()

    def _accept_loop(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed by refuse()
            try:
                server = socket.create_connection(self.target, timeout=20)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            link = _Link(client, server)
            with self._lock:
                self._links.append(link)
            threading.Thread(target=self._upstream, args=(link,), daemon=True).start()
            threading.Thread(target=self._downstream, args=(link,), daemon=True).start()

    def _upstream(self, link: _Link) -> None:
        """Client to server; marks the link whose reply is to be dropped."""
        while True:
            try:
                data = link.client.recv(_CHUNK)
            except OSError:
                data = b""
            if not data:
                if not link.drop_reply:  # else the other thread cuts it, after the reply
                    link.close()
                return
            with self._lock:
                if self._armed and (self._armed_on is None or self._armed_on in data):
                    self._armed = False
                    link.drop_reply = True
            try:
                link.server.sendall(data)
            except OSError:
                link.close()
                return

    def _downstream(self, link: _Link) -> None:
        """Server to client; cuts the client off instead of forwarding a dropped reply."""
        while True:
            try:
                data = link.server.recv(_CHUNK)
            except OSError:
                data = b""
            if not data:
                link.close()
                return
            if link.drop_reply:
                self.dropped += 1
                # The client goes first; the server side stays open a moment so
                # every command already sent (a whole pipeline) finishes running.
                with contextlib.suppress(OSError):
                    link.client.shutdown(socket.SHUT_RDWR)
                link.client.close()
                link.server.settimeout(0.5)
                with contextlib.suppress(OSError):
                    while link.server.recv(_CHUNK):
                        time.sleep(0)
                link.close()
                return
            try:
                link.client.sendall(data)
            except OSError:
                link.close()
                return
