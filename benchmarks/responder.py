"""Echo responder for benchmarks/foundation.py: raw nats-py, answers ``bench.echo`` with the
request's own payload.

    python -m benchmarks.responder nats://127.0.0.1:4222

It runs in its own process so that neither side of the request/reply benchmark pays for a
responder competing for the GIL or the event loop inside the measured process, and so both
sides are answered by exactly the same code. It prints ``ready`` once its subscription is
known to the server, and exits when its stdin closes (the benchmark finished or died).
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading

import nats

SUBJECT = "bench.echo"


def _exit_when_parent_goes() -> None:
    sys.stdin.buffer.read()  # EOF: the parent closed the pipe or is gone
    os._exit(0)


async def main(url: str) -> None:
    from agentlab.core.credentials import login_for  # the server's, from the parent's env

    found = login_for(url)
    nc = await nats.connect(url, name="bench-responder", **(found.kwargs() if found else {}))

    async def echo(msg: nats.aio.msg.Msg) -> None:
        await nc.publish(msg.reply, msg.data)

    await nc.subscribe(SUBJECT, cb=echo)
    await nc.flush()  # the server has our SUB: requests sent from now on get an answer
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    threading.Thread(target=_exit_when_parent_goes, daemon=True).start()
    asyncio.run(main(sys.argv[1]))
