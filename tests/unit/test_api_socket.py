"""The API's listening socket: kept-alive connections must not wait for Nagle's algorithm."""

from __future__ import annotations

import asyncio
import socket

from backend.process.runner import bind_api_socket


async def test_accepted_connections_send_without_delay() -> None:
    listening = bind_api_socket("127.0.0.1", 0)
    accepted: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = writer.get_extra_info("socket")
        accepted.set_result(connection.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        writer.close()

    server = await asyncio.start_server(on_connect, sock=listening)
    host, port = listening.getsockname()[:2]
    _, writer = await asyncio.open_connection(host, port)
    try:
        # asyncio turns TCP_NODELAY on only for sockets created as IPPROTO_TCP; without it,
        # each response after the first on a connection waited about 40 ms.
        assert await asyncio.wait_for(accepted, timeout=5) != 0
    finally:
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
