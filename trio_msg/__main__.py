"""``python -m trio_msg``: the command line (see :mod:`trio_msg.cli`)."""

from trio_msg.cli import console

if __name__ == "__main__":
    console()
