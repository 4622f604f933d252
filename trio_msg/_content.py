"""The two facts about message content that the publish and consume paths
need without the codecs themselves.

:mod:`trio_msg.serialization` (and :mod:`json` with it) and
:mod:`trio_msg.compression` are imported the first time a body is encoded
or decoded, not with the package: a service that publishes and consumes
raw bytes never loads them.  They re-export these names, which is where
they are documented.

The first body encoded or decoded pays for that import instead (about
8 ms on the development machine); a program that minds the latency of its
first message can ``import trio_msg.serialization`` at start-up.
"""

from __future__ import annotations

#: Content types accepted when the consumer does not say otherwise: JSON,
#: plain text and raw bytes.
DEFAULT_ACCEPT: frozenset[str] = frozenset({"application/json", "text/plain", "application/data"})

#: The message header naming a body's compression (the header kombu uses).
COMPRESSION_HEADER = "compression"
