"""``python -m server``: the same as ``weft serve``."""

from __future__ import annotations

import gc
import sys

from server.cli import serve_main

if __name__ == "__main__":
    code = serve_main()
    gc.freeze()  # a teardown that walks nothing (see client.cli.run)
    sys.exit(code)
