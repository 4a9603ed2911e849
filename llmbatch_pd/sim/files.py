"""OpenAI's Files API as the batch jobs need it: ``POST /v1/files`` (multipart, kept in
memory), ``GET /v1/files/{id}`` and ``GET /v1/files/{id}/content`` (input, output and error
files alike)."""

from __future__ import annotations

import email.policy
import time
import uuid
from email.parser import BytesParser
from typing import Any

from aiohttp import web

from .responses import error_body

FILE_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")


class FileDesk:
    """The files uploaded or written so far, by id."""

    def __init__(self) -> None:
        self.files: dict[str, dict[str, Any]] = {}

    async def upload(self, request: web.Request, entry: dict[str, Any]) -> web.Response:
        # Parsed from the raw bytes (which aiohttp keeps), so request capture, which reads
        # the body first, does not leave the form empty.
        fields, files = parse_form(request.headers.get("Content-Type", ""), await request.read())
        purpose = fields.get("purpose")
        if purpose not in FILE_PURPOSES:
            return _oa_error(400, f"'{purpose}' is not one of {list(FILE_PURPOSES)} - 'purpose'",
                             param="purpose")
        if "file" not in files:
            return _oa_error(400, "Missing required parameter: 'file'.", param="file")
        filename, data = files["file"]
        file = self._add_file(data, filename, purpose)
        return web.json_response(self._file_object(file))

    def _add_file(self, data: bytes, filename: str, purpose: str) -> dict[str, Any]:
        file_id = f"file-{uuid.uuid4().hex[:24]}"
        self.files[file_id] = {"id": file_id, "data": data, "filename": filename,
                               "purpose": purpose, "created_at": int(time.time())}
        return self.files[file_id]

    @staticmethod
    def _file_object(file: dict[str, Any]) -> dict[str, Any]:
        return {"id": file["id"], "object": "file", "bytes": len(file["data"]),
                "created_at": file["created_at"], "filename": file["filename"],
                "purpose": file["purpose"], "status": "processed", "expires_at": None,
                "status_details": None}

    async def file(self, request: web.Request, entry: dict[str, Any]) -> web.Response:
        file = self.files.get(request.match_info["file_id"])
        if file is None:
            return _oa_error(404, f"No such File object: {request.match_info['file_id']}",
                             param="id")
        return web.json_response(self._file_object(file))

    async def file_content(self, request: web.Request, entry: dict[str, Any]) -> web.Response:
        file = self.files.get(request.match_info["file_id"])
        if file is None:
            return _oa_error(404, f"No such File object: {request.match_info['file_id']}",
                             param="id")
        return web.Response(body=file["data"], content_type="application/octet-stream")


def parse_form(content_type: str, body: bytes) -> tuple[dict[str, str], dict[str, tuple[str, bytes]]]:
    """A multipart/form-data body -> ({field: text}, {field: (filename, bytes)})."""
    fields: dict[str, str] = {}
    files: dict[str, tuple[str, bytes]] = {}
    if not content_type.lower().startswith("multipart/form-data"):
        return fields, files
    message = BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body)
    if not message.is_multipart():
        return fields, files
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        data = part.get_payload(decode=True) or b""
        filename = part.get_filename()
        if filename is not None:
            files[name] = (filename, data)
        else:
            fields[name] = data.decode("utf-8", "replace")
    return fields, files


def _oa_error(status: int, message: str, param: str | None = None) -> web.Response:
    return web.json_response(error_body(message, "invalid_request_error", param), status=status)
