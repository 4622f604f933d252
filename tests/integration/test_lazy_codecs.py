"""Publishing and consuming raw bytes against the broker, in a fresh
interpreter, loads neither the codecs nor json; the first decode does."""

from __future__ import annotations

import subprocess
import sys
import textwrap

CODEC_MODULES = ("trio_msg.serialization", "trio_msg.compression", "json")

SCRIPT = """
import sys
import trio
import trio_msg

URL, QUEUE = sys.argv[1], sys.argv[2]
CODECS = {codecs!r}


def loaded():
    return [m for m in CODECS if m in sys.modules]


async def main():
    queue = trio_msg.Queue(QUEUE, durable=False, expires=60)
    async with (
        trio_msg.connect(URL) as conn,
        trio_msg.Producer(conn) as producer,
        trio_msg.Consumer(conn, queues=[queue]) as consumer,
    ):
        await producer.publish(b"raw", routing_key=QUEUE, content_type="application/data")
        await producer.publish(b'{{"a": 1}}', routing_key=QUEUE, content_type="application/json")
        with trio.fail_after(10):
            first = await consumer.__anext__()
            assert first.body == b"raw"
            await first.ack()
            assert not loaded(), loaded()
            second = await consumer.__anext__()
        assert second.decode() == {{"a": 1}}
        await second.ack()
        assert "trio_msg.serialization" in sys.modules
        async with conn.channel() as ch:
            await ch.queue_delete(QUEUE)


trio.run(main)
"""


def test_raw_bodies_need_no_codecs_and_a_decode_loads_them(
    broker_url: str, unique_name: str
) -> None:
    code = textwrap.dedent(SCRIPT.format(codecs=CODEC_MODULES))
    subprocess.run([sys.executable, "-c", code, broker_url, unique_name], check=True, timeout=60)
