"""Reading the kernel's small text files (/proc, /sys)."""


def read_text(path):
    """The file's text, stripped, or None where it cannot be read (or is no UTF-8 text)."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    except (OSError, UnicodeDecodeError):
        return None
