"""``python -m uoro``: the ``uoro`` command line (see `uoro.cli`)."""

from uoro.cli import main

if __name__ == "__main__":
    main(prog_name="uoro")
