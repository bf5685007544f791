"""Ctrl-C that is never lost.

Python raises KeyboardInterrupt wherever the main thread is when SIGINT arrives. Inside a ctypes
callback the exception is printed as ignored and dropped, and llvmlite calls one each time Numba
compiles or caches a kernel: a Ctrl-C at that moment was lost and the profile ran to its end (on
the Zen 5 VM, a quick profile interrupted 2-6 s in ran on in 21 of at most 40 tries). The handler
installed here also remembers the signal, and check(), called between timed samples, raises it
again.
"""

import signal

_received = False


def install():
    """Handle SIGINT (from the main thread): KeyboardInterrupt now, and again at every check()."""

    def on_sigint(signum, frame):
        global _received
        _received = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_sigint)


def check():
    """Raise KeyboardInterrupt if SIGINT has arrived (its first raise may have been swallowed)."""
    if _received:
        raise KeyboardInterrupt
