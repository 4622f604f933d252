"""The codecs are imported on first use, not with the package (``trio_msg._content``):
a service that publishes and consumes raw bytes never loads them, nor json."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

#: What a raw-bytes service never loads (tests/integration/test_lazy_codecs.py
#: checks it against the broker).
CODEC_MODULES = ("trio_msg.serialization", "trio_msg.compression", "json")


def run(code: str) -> None:
    """Run *code* in a fresh interpreter (this one has imported everything)."""
    subprocess.run([sys.executable, "-c", textwrap.dedent(code)], check=True, timeout=60)


def test_the_package_does_not_import_the_codecs() -> None:
    run(
        f"""
        import sys
        import trio_msg
        from trio_msg import Consumer, Message, Producer
        assert not [m for m in {CODEC_MODULES!r} if m in sys.modules], sys.modules.keys()
        """
    )


@pytest.mark.parametrize("name", ["serialization", "compression"])
def test_the_codecs_are_attributes_of_the_package_all_the_same(name: str) -> None:
    run(
        f"""
        import sys
        import trio_msg
        module = trio_msg.{name}
        assert module is sys.modules["trio_msg.{name}"]
        assert module.registry is not None
        try:
            trio_msg.no_such_thing
        except AttributeError as exc:
            assert "no_such_thing" in str(exc)
        else:
            raise AssertionError("no AttributeError")
        """
    )
