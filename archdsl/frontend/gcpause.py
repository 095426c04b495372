"""Python's cyclic garbage collector, paused while the front end builds a large network.

The parse tree, the AST and the IR of a 100k-node network are a few million objects, all alive
until the stage ends; the collector's full passes walk all of them each time, again and again,
which made parsing and elaboration quadratic (10k lines: 9 s with the collector, 3.4 s without).
The objects made here hold no garbage cycles worth collecting early, so the collector waits until
the stage is done (then it runs as usual).
"""

from __future__ import annotations

import contextlib
import gc


@contextlib.contextmanager
def paused_gc():
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
