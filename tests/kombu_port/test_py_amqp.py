"""kombu's t/integration/test_py_amqp.py, ported to trio_msg (see common.py:
celery/kombu commit 9ee8595b835c77b4f04cfb54b40b5d446f985a35, and the rules).

kombu's fixtures (``connection``, ``failover_connection``,
``invalid_connection``, ``confirm_publish_connection``) are in conftest.py:
the URLs kombu's lazy Connection objects stand for.  kombu's
``@pytest.mark.env('py-amqp')`` and ``@pytest.mark.flaky(reruns=5)`` are
left out: this suite runs against RabbitMQ only, and a test that needs
reruns is a bug here.
"""

from __future__ import annotations

import uuid

import pytest

import trio_msg
from trio_msg.errors import NotFound

from .common import (
    BaseExchangeTypes,
    BaseFailover,
    BaseMessage,
    BasePriority,
    BaseTimeToLive,
    BasicFunctionality,
    Names,
)

pytestmark = [
    pytest.mark.anyio,
    # A settle method called without ``await`` in a plain callback must not
    # be dropped quietly (trio_msg before issue 19 returned a coroutine).
    pytest.mark.filterwarnings("error:coroutine .* was never awaited:RuntimeWarning"),
    pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning"),
]


class TestPyAMQPBasicFunctionality(BasicFunctionality):
    pass


class TestPyAMQPBaseExchangeTypes(BaseExchangeTypes):
    pass


class TestPyAMQPTimeToLive(BaseTimeToLive):
    pass


class TestPyAMQPPriority(BasePriority):
    pass


class TestPyAMQPFailover(BaseFailover):
    pass


class TestPyAMQPMessage(BaseMessage):
    pass


class TestPyAMQPConnectionPool:
    # kombu's ConnectionPool(limit=1) hands the same Connection back on the
    # second acquire, closed by the pool because the first use raised.  A
    # trio_msg connection is closed by the ``async with`` the exception
    # leaves, and acquiring again is connecting again: the port checks the
    # first connection is closed and that a confirmed publish on the next
    # one does not block.
    async def test_publish_confirm_does_not_block(
        self, confirm_publish_connection: str, names: Names
    ) -> None:
        """Tests that the connection pool closes connections in case of an exception.

        In case an exception occurs while the connection is in use, the pool should
        close the exception. In case the connection is not closed before releasing it
        back to the pool, the connection would remain in an unusable state, causing
        causing the next publish call to time out or block forever in case no
        timeout is specified.
        """
        try:
            async with (
                trio_msg.connect(confirm_publish_connection) as connection,
                trio_msg.Producer(connection) as producer,
                connection.channel() as channel,
            ):
                # kombu: channel=connection (its default channel)
                queue = trio_msg.Queue(names(f"test-queue-{uuid.uuid4()}"), channel=channel)
                await queue.declare()
                await producer.publish({"foo": "bar"}, routing_key=str(uuid.uuid4()), retry=False)
                assert connection.is_open  # kombu: connection.connected
                await queue.delete()
                try:
                    await queue.get()
                except NotFound:
                    raise
        except NotFound:
            pass

        assert not connection.is_open  # kombu: not connection.connected
        async with (
            trio_msg.connect(confirm_publish_connection) as connection,
            trio_msg.Producer(connection) as producer,
            connection.channel() as channel,
        ):
            queue = trio_msg.Queue(names(f"test-queue-{uuid.uuid4()}"), channel=channel)
            await queue.declare()
            # In case the connection is broken, we should get a Timeout here
            await producer.publish(
                {"foo": "bar"}, routing_key=str(uuid.uuid4()), retry=False, timeout=3
            )
