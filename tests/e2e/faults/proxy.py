"""A TCP proxy that can blackhole: the database unreachable without a reset.

A cut cable, a dropped route or a firewall that drops packets closes nothing: the client's
statements get no answer and no error, and new connections hang in their start-up. The
proxy does the same between taskhub and a throwaway server: ``blackhole()`` stops reading,
forwarding and accepting, keeping every socket open; ``heal()`` resumes, delivering what was
held, as TCP would once the path is back.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from collections.abc import Iterator

from tests.e2e.faults.server import ThrowawayServer

CHUNK = 65536


class BlackholeProxy:
    """127.0.0.1:``port`` forwarded to 127.0.0.1:``target_port``, one thread per direction."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._flowing = threading.Event()
        self._flowing.set()
        self._closed = threading.Event()
        self._sockets: list[socket.socket] = [self._listener]
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True, name="proxy accept").start()

    def url_for(self, server: ThrowawayServer) -> str:
        """``server``'s URL, through the proxy."""
        return server.url.replace(f":{server.port}/", f":{self.port}/")

    def blackhole(self) -> None:
        self._flowing.clear()

    def heal(self) -> None:
        self._flowing.set()

    def close(self) -> None:
        self._closed.set()
        self._flowing.set()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.close()

    def _wait_flowing(self) -> bool:
        """Until the path is open; False once the proxy is closed."""
        while not self._flowing.wait(0.2):
            if self._closed.is_set():
                return False
        return not self._closed.is_set()

    def _accept(self) -> None:
        while self._wait_flowing():
            ready, _, _ = select.select([self._listener], [], [], 0.2)
            if not ready or not self._flowing.is_set():
                continue  # blackholed: connections wait in the backlog, unanswered
            try:
                client, _ = self._listener.accept()
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                continue
            with self._lock:
                self._sockets += [client, upstream]
            for source, target in ((client, upstream), (upstream, client)):
                threading.Thread(
                    target=self._pump, args=(source, target), daemon=True, name="proxy pump"
                ).start()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while self._wait_flowing():
                ready, _, _ = select.select([source], [], [], 0.2)
                if not ready or not self._flowing.is_set():
                    continue  # blackholed: nothing read, so nothing answered
                data = source.recv(CHUNK)
                if not data:
                    break
                if not self._wait_flowing():  # cut while this chunk was in hand: held
                    break
                target.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                target.shutdown(socket.SHUT_WR)


@contextlib.contextmanager
def blackhole_proxy(server: ThrowawayServer) -> Iterator[BlackholeProxy]:
    proxy = BlackholeProxy(server.port)
    try:
        yield proxy
    finally:
        proxy.close()
