"""A tiny real SMTP server for the tests (asyncio streams, RFC 5321's happy path): it
records every message it accepts, so a test can count what actually arrived. It can stall:
take a message whole and hold back its "250" for a while, as a slow server does (the
message is recorded, as a server that has it would deliver it)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message


@dataclass
class SmtpServer:
    messages: list[Message] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)
    port: int = 0
    stall_seconds: float = 0.0
    """How long the reply to each message's end of DATA is held back (0: not at all)."""
    stalled: asyncio.Event = field(default_factory=asyncio.Event)
    """Set once a reply is being held back."""
    _server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    async def __aenter__(self) -> SmtpServer:
        self._server = await asyncio.start_server(self._session, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def reply(line: str) -> None:
            writer.write(line.encode() + b"\r\n")
            await writer.drain()

        sender, recipients = "", []
        await reply("220 test.smtp ready")
        try:
            while line := await reader.readline():
                command = line.decode().strip()
                verb = command[:4].upper()
                if verb in ("EHLO", "HELO"):
                    await reply("250 test.smtp")
                elif verb == "MAIL":
                    sender, recipients = command.partition(":")[2].strip(" <>"), []
                    await reply("250 OK")
                elif verb == "RCPT":
                    recipients.append(command.partition(":")[2].strip(" <>"))
                    await reply("250 OK")
                elif verb == "DATA":
                    await reply("354 end with .")
                    lines = []
                    while (data := await reader.readline()) not in (b".\r\n", b""):
                        lines.append(data[1:] if data.startswith(b"..") else data)
                    self.messages.append(message_from_bytes(b"".join(lines)))
                    self.envelopes.append((sender, recipients))
                    if self.stall_seconds:
                        self.stalled.set()
                        await asyncio.sleep(self.stall_seconds)
                    await reply("250 queued")
                elif verb == "QUIT":
                    await reply("221 bye")
                    break
                else:  # RSET, NOOP, ...
                    await reply("250 OK")
        except (ConnectionError, asyncio.CancelledError):  # the client or the test went away
            pass
        finally:
            writer.close()
