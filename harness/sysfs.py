"""Reading the kernel's small text files (/proc, /sys)."""


def read_text(path):
    """The file's text, stripped, or None where it cannot be read."""
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None
