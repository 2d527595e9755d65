"""A loopback TCP proxy that delays the server's bytes and records when the client's turns begin.

``connect.py`` runs it in a process of its own (so that it never competes with a client for
the interpreter lock) as ``python _turn_proxy.py TARGET_PORT DELAY_SECONDS``:

* it listens on ``127.0.0.1`` on a free port, which it prints on the first line of stdout;
* for every accepted connection it connects to ``127.0.0.1:TARGET_PORT`` and forwards bytes
  both ways: from the client at once, from the server ``DELAY_SECONDS`` after it read them,
  in order;
* for every line read from stdin it prints one JSON line: for each connection accepted so
  far, in order, the instants (``time.monotonic()``, the system's monotonic clock, which the
  client processes share) at which a *client burst* began, i.e. the proxy read bytes from
  the client while the last thing that had happened on the connection was a delivery to the
  client, or nothing yet;
* at the end of stdin it stops.

The delay keeps a client that does not wait from being split into two bursts by server bytes
that happen to arrive in between (TLS 1.3 session tickets, say): whatever the client writes
without waiting for an answer reaches the proxy well before the server's next bytes reach
the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time

LOOPBACK = "127.0.0.1"


class TurnProxy:
    """The proxy: :meth:`serve` per accepted connection; :attr:`connections` holds the bursts."""

    def __init__(self, target_port: int, delay: float) -> None:
        self.target_port = target_port
        self.delay = delay
        self.connections: list[list[float]] = []

    async def serve(
        self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter
    ) -> None:
        bursts: list[float] = []
        self.connections.append(bursts)
        try:
            server_in, server_out = await asyncio.open_connection(LOOPBACK, self.target_port)
        except OSError:
            client_out.close()
            return
        client_spoke_last = False
        due: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def from_client() -> None:
            nonlocal client_spoke_last
            with contextlib.suppress(OSError):
                while data := await client_in.read(65536):
                    if not client_spoke_last:
                        bursts.append(time.monotonic())
                        client_spoke_last = True
                    server_out.write(data)
                if server_out.can_write_eof():
                    server_out.write_eof()

        async def from_server() -> None:
            with contextlib.suppress(OSError):
                while data := await server_in.read(65536):
                    due.put_nowait((time.monotonic() + self.delay, data))
            due.put_nowait((time.monotonic() + self.delay, b""))

        async def to_client() -> None:
            nonlocal client_spoke_last
            with contextlib.suppress(OSError):
                while True:
                    when, data = await due.get()
                    await asyncio.sleep(max(0.0, when - time.monotonic()))
                    if not data:
                        break
                    client_spoke_last = False
                    client_out.write(data)

        try:
            await asyncio.gather(from_client(), from_server(), to_client())
        except asyncio.CancelledError:
            pass  # the proxy stops with connections still open
        finally:
            client_out.close()
            server_out.close()


async def run(target_port: int, delay: float) -> None:
    proxy = TurnProxy(target_port, delay)
    server = await asyncio.start_server(proxy.serve, LOOPBACK, 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    loop = asyncio.get_running_loop()
    requests = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(requests), sys.stdin)
    while await requests.readline():
        print(json.dumps(proxy.connections), flush=True)
    server.close()


def main() -> None:
    asyncio.run(run(int(sys.argv[1]), float(sys.argv[2])))


if __name__ == "__main__":
    main()
