"""The Consumer's delivery buffer (``trio_msg._buffer``): without waiting it
behaves exactly as anyio's memory object stream of the same size (a
hypothesis comparison of random operation sequences); waiting, it hands
items over in order, loses nothing to a cancellation, and wakes waiters
when either end closes."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from trio_msg._buffer import delivery_buffer

OPS = st.lists(
    st.one_of(
        st.tuples(st.just("send"), st.integers(0, 99)),
        st.just(("receive",)),
        st.just(("close_sender",)),
        st.just(("close_receiver",)),
    ),
    max_size=60,
)


def outcome(call: Any) -> Any:
    try:
        return ("ok", call())
    except Exception as exc:
        return ("raised", type(exc))


@given(size=st.integers(1, 5), ops=OPS)
def test_without_waiting_it_behaves_as_anyios_memory_stream(size: int, ops: list[Any]) -> None:
    ours = delivery_buffer(size)
    theirs = anyio.create_memory_object_stream[int](size)
    for op in ops:
        results = []
        for send, receive in (ours, theirs):
            if op[0] == "send":
                results.append(outcome(lambda: send.send_nowait(op[1])))  # noqa: B023
            elif op[0] == "receive":
                results.append(outcome(receive.receive_nowait))
            elif op[0] == "close_sender":
                results.append(outcome(send.close))
            else:
                results.append(outcome(receive.close))
        assert results[0] == results[1], op


@pytest.mark.anyio
async def test_a_waiting_receiver_gets_items_in_order() -> None:
    send, receive = delivery_buffer(3)
    got: list[int] = []

    async def consume() -> None:
        for _ in range(5):
            got.append(await receive.wait_receive())

    async with anyio.create_task_group() as tg:
        tg.start_soon(consume)
        for i in range(5):
            await send.send(i)
    assert got == [0, 1, 2, 3, 4]


@pytest.mark.anyio
async def test_cancelled_while_waiting_takes_nothing() -> None:
    send, receive = delivery_buffer(3)
    with anyio.move_on_after(0.01):
        await receive.wait_receive()
    send.send_nowait("kept")
    assert len(receive) == 1
    assert await receive.receive() == "kept"


@pytest.mark.anyio
async def test_a_full_buffer_makes_send_wait_and_a_cancelled_send_queues_nothing() -> None:
    send, receive = delivery_buffer(1)
    send.send_nowait(1)
    with anyio.move_on_after(0.01) as scope:
        await send.send(2)
    assert scope.cancelled_caught and len(receive) == 1
    async with anyio.create_task_group() as tg:
        tg.start_soon(send.send, 3)
        await anyio.wait_all_tasks_blocked()
        assert receive.receive_nowait() == 1  # makes room: the sender goes on
    assert receive.receive_nowait() == 3


@pytest.mark.anyio
async def test_closing_either_end_wakes_the_other() -> None:
    send, receive = delivery_buffer(1)
    ended: list[type[BaseException]] = []

    async def wait() -> None:
        try:
            await receive.wait_receive()
        except anyio.EndOfStream:
            ended.append(anyio.EndOfStream)

    async with anyio.create_task_group() as tg:
        tg.start_soon(wait)
        tg.start_soon(wait)
        await anyio.wait_all_tasks_blocked()
        send.close()
    assert ended == [anyio.EndOfStream, anyio.EndOfStream]

    send, receive = delivery_buffer(1)
    send.send_nowait(1)
    async with anyio.create_task_group() as tg:
        tg.start_soon(close_soon, receive)
        with pytest.raises(anyio.BrokenResourceError):
            await send.send(2)  # waiting for room when the receiver closes


async def close_soon(receive: Any) -> None:
    await anyio.wait_all_tasks_blocked()  # the sender waits for room
    receive.close()


@pytest.mark.anyio
async def test_two_receivers_share_the_items() -> None:
    send, receive = delivery_buffer(4)
    got: list[int] = []

    async def one() -> None:
        got.append(await receive.wait_receive())

    async with anyio.create_task_group() as tg:
        tg.start_soon(one)
        tg.start_soon(one)
        await anyio.wait_all_tasks_blocked()
        send.send_nowait(1)
        send.send_nowait(2)
    assert sorted(got) == [1, 2]


@pytest.mark.trio
async def test_receive_checkpoints_and_wait_receive_does_not_when_an_item_is_there() -> None:
    send, receive = delivery_buffer(2, trio.Event)
    send.send_nowait(1)
    send.send_nowait(2)
    with trio.testing.assert_checkpoints():
        assert await receive.receive() == 1
    with trio.testing.assert_no_checkpoints():
        assert await receive.wait_receive() == 2
