"""Image headers read from a file's first bytes: the size and the mode PIL would open it in.

Indexing a folder reads every file's header; PIL's `Image.open` costs far more per file
than the few bytes it needs (it detects the format plugin by plugin and builds an image
object), so PNG and JPEG, the usual formats, are parsed here and the rest left to PIL.
"""

from __future__ import annotations

HEADER_BYTES = 4096  # one page: a PNG header, and a JPEG's frame header unless large metadata comes first
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# (bit depth, colour type) -> the mode PIL opens a PNG in (PIL's PngImagePlugin._MODES)
PNG_MODES = {(1, 0): "1", (2, 0): "L", (4, 0): "L", (8, 0): "L", (16, 0): "I;16", (8, 2): "RGB", (16, 2): "RGB",
             (1, 3): "P", (2, 3): "P", (4, 3): "P", (8, 3): "P", (8, 4): "LA", (16, 4): "RGBA", (8, 6): "RGBA",
             (16, 6): "RGBA"}
JPEG_MODES = {1: "L", 3: "RGB", 4: "CMYK"}  # by the number of components
JPEG_FRAMES = {*range(0xC0, 0xD0)} - {0xC4, 0xC8, 0xCC}  # start-of-frame markers (not DHT, JPG, DAC)


def png_header(head: bytes) -> tuple[str, tuple[int, int]] | None:
    """(mode, size) from a PNG's IHDR chunk, which follows the signature; None if `head` is not one."""
    if len(head) < 26 or not head.startswith(PNG_SIGNATURE) or head[12:16] != b"IHDR":
        return None
    mode = PNG_MODES.get((head[24], head[25]))
    size = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    return (mode, size) if mode and size[0] and size[1] else None


def jpeg_header(head: bytes) -> tuple[str, tuple[int, int]] | None:
    """(mode, size) from a JPEG's frame header, walking the segments before it; None if `head` is not a
    JPEG or the frame header lies beyond it."""
    if not head.startswith(b"\xff\xd8"):
        return None
    at = 2
    while at + 10 <= len(head):
        if head[at] != 0xFF:
            return None
        marker = head[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker in JPEG_FRAMES:
            mode = JPEG_MODES.get(head[at + 9])
            size = int.from_bytes(head[at + 7:at + 9], "big"), int.from_bytes(head[at + 5:at + 7], "big")
            return (mode, size) if mode and size[0] and size[1] else None
        at += 2 + int.from_bytes(head[at + 2:at + 4], "big")
    return None
