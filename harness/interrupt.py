"""Ctrl-C that is never lost.

Python raises KeyboardInterrupt wherever the main thread is when SIGINT arrives. Inside a ctypes
callback the exception is printed as ignored and dropped, and llvmlite calls one each time Numba
compiles or caches a kernel: a Ctrl-C at that moment was lost and the profile ran to its end (on
the Zen 5 VM, a quick profile interrupted 2-6 s in ran on in 21 of at most 40 tries). The handler
installed here also remembers the signal, and check(), called between timed samples, raises it
again.
"""

import contextlib
import signal

_received = False


@contextlib.contextmanager
def handled():
    """Within the block, SIGINT raises KeyboardInterrupt now and again at every check(); the
    previous handler is restored after it (from the main thread only, as signal handlers are)."""
    global _received

    def on_sigint(signum, frame):
        global _received
        _received = True
        raise KeyboardInterrupt

    _received = False
    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        _received = False  # nothing pending outside the block


def check():
    """Raise KeyboardInterrupt if SIGINT has arrived (its first raise may have been swallowed)."""
    if _received:
        raise KeyboardInterrupt
