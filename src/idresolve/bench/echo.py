"""The bare asyncio msgpack echo server: the floor under any binary-protocol node (docs/architecture.md, "Performance facts").

One ``asyncio.Protocol`` on the nodes' framing (``core.wire.FrameDecoder``): every frame is unpacked with
msgpack (as a node must, to learn the request id) and answered with a fixed, pre-encoded answer (a node's
answer captured earlier in the same run, so the answers are the same size) under the request's id; the
answers to one read go out in one write. No validation, admission, metrics or service: what is left is
the cost of the event loop, the framing and msgpack.

Run it in a process of its own: ``python -m idresolve.bench.echo --answer-file F --tcp 127.0.0.1:0``.
``F`` holds a response's encoding after its request id (``Codec.response_tail``). It prints
``baseline msgpack-echo serving at tcp://127.0.0.1:PORT`` when ready and stops on SIGTERM or Ctrl-C.
"""

from __future__ import annotations

import asyncio
import sys

import msgpack

from ..core.errors import DecodeError
from ..core.wire import Codec, FrameDecoder


class EchoProtocol(asyncio.Protocol):
    def __init__(self, tail: bytes, codec: Codec) -> None:
        self.tail, self.codec = tail, codec
        self.decoder = FrameDecoder()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            payloads = self.decoder.feed(data)
        except DecodeError:
            self.transport.close()  # type: ignore[union-attr]
            return
        out = []
        for p in payloads:
            try:
                msg = msgpack.unpackb(p, raw=False)
                rid = msg[1]
            except (ValueError, TypeError, IndexError, msgpack.UnpackException):
                continue
            if isinstance(rid, int):
                out.append(self.codec.frame_with_tail(rid, self.tail))
        if out and self.transport is not None:
            self.transport.write(b"".join(out))


async def serve_echo(tail: bytes, host: str, port: int, stop: asyncio.Event, reuse_port: bool = False) -> None:
    loop = asyncio.get_running_loop()
    codec = Codec()
    server = await loop.create_server(lambda: EchoProtocol(tail, codec), host, port, reuse_address=True, backlog=1024,
                                      reuse_port=reuse_port or None)
    try:
        bound = server.sockets[0].getsockname()
        print(f"baseline msgpack-echo serving at tcp://{bound[0]}:{bound[1]}", flush=True)
        await stop.wait()
    finally:
        server.close()
        await server.wait_closed()


def main(argv: list[str] | None = None) -> int:
    from .baselines import baseline_main

    return baseline_main(argv, prog="python -m idresolve.bench.echo",
                         description="A bare asyncio msgpack server answering every frame with fixed bytes.",
                         file_flag="--answer-file", file_help="the encoded answer after its request id",
                         addr_flag="--tcp", serve=serve_echo)


if __name__ == "__main__":
    sys.exit(main())
