"""Photo replies from the console: only PNG, JPEG, WebP and GIF, recognised by their first bytes
(never by the name or the browser's content type), and no larger than
``console.max_upload_bytes`` (read in chunks: an oversized body is refused before it is all in
memory)."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import BodyPartReader, web

from console.site import ConsoleError

MAX_TEXT_BYTES = 16000 * 4  # a reply's text field (the desk caps the text itself)
_CHUNK = 64 * 1024


@dataclass(frozen=True, slots=True)
class Upload:
    data: bytes
    mime: str
    extension: str

    @property
    def filename(self) -> str:
        return f"photo.{self.extension}"


def sniff_image(data: bytes) -> tuple[str, str] | None:
    """(MIME type, file extension) of a PNG, JPEG, WebP or GIF image, else None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png", "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg", "jpg"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif", "gif"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp", "webp"
    return None


async def _read(part: BodyPartReader, limit: int, too_big: str) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await part.read_chunk(_CHUNK)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            raise ConsoleError(413, too_big)
        chunks.append(chunk)


async def read_reply_form(request: web.Request, *, max_bytes: int) -> tuple[str, Upload | None]:
    """The ``text`` and optional ``image`` fields of a multipart reply."""
    text = ""
    upload: Upload | None = None
    reader = await request.multipart()
    while True:
        part = await reader.next()
        if part is None:
            break
        if not isinstance(part, BodyPartReader):
            raise ConsoleError(400, "nested multipart bodies are not accepted")
        if part.name == "text":
            raw = await _read(part, MAX_TEXT_BYTES, "the reply text is too long")
            text = raw.decode("utf-8", errors="replace")
        elif part.name == "image":
            mb = max_bytes / (1024 * 1024)
            data = await _read(part, max_bytes,
                               f"the photo is too large (at most {mb:.1f} MB)")
            if not data and not part.filename:
                continue  # the file input was left empty
            kind = sniff_image(data)
            if kind is None:
                raise ConsoleError(415, "only PNG, JPEG, WebP or GIF photos can be sent")
            upload = Upload(data, *kind)
        else:
            await part.release()
    return text, upload
