"""Batch jobs, as OpenAI's Batch API and Anthropic's Message Batches serve them.

OpenAI: ``POST /v1/files`` (multipart, ``purpose=batch``; ``files.py``) keeps the JSONL in memory, ``POST
/v1/batches`` starts a job on it, ``GET /v1/batches/{id}`` reports it, ``POST
/v1/batches/{id}/cancel`` cancels it, and ``GET /v1/files/{id}/content`` serves the output and
error files. OpenAI jobs run on ``/v1/chat/completions`` or ``/v1/embeddings`` (every line's ``url`` must
be the job's endpoint; an embeddings job holds at most 50,000 inputs over all its lines, or it
fails validation). Anthropic: ``POST /v1/messages/batches`` with ``{"requests": [{custom_id,
params}]}``, ``GET /v1/messages/batches/{id}``, ``.../results`` (JSONL) and ``.../cancel``.

A job's life is driven by the clock and the ``batch_seconds`` knob, read when it is created:
OpenAI's goes validating (first 10 %), in_progress (its ``request_counts`` climbing), finalizing
(last 10 %), then completed; Anthropic's is in_progress, then ended. ``batch_fail_rate`` turns
that share of the lines into errors (dice seeded by the job and the line, so a job submitted
again gets fresh dice); ``batch_expire`` makes the job expire with that share of its lines (the
last ones) never processed. Answers come from the same deterministic pipeline as the real-time
endpoints (``reply.Replier``: packed requests, with their fault dice seeded per job and line,
and prompt caching, the lines of a job taken in order so the first writes what the rest read) (embeddings: ``embeddings.check`` and ``embeddings.response_object``), so a prompt
gets the same answer, and a text the same vector, either way (structured ones included, and
``fault_invalid_json`` breaks that share of them, on dice of their own). Nothing runs in the background: a job's
state is worked out from the clock whenever it is asked for.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from . import embeddings
from .answers import is_structured
from .anthropic import Messages, check_messages
from .anthropic import error_body as anthropic_error
from .config import SimConfig
from .dialect import ChatCompletions, Dialect
from .files import FileDesk
from .reply import Replier
from .responses import SERVER_ERRORS, error_body
from .validate import Invalid, check_chat

OPENAI_ENDPOINT = "/v1/chat/completions"
EMBEDDINGS_ENDPOINT = "/v1/embeddings"
OPENAI_ENDPOINTS = (OPENAI_ENDPOINT, EMBEDDINGS_ENDPOINT)
MAX_EMBEDDING_INPUTS = 50_000
"""OpenAI: an embeddings batch holds at most 50,000 inputs across all its requests."""
CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
EXPIRED_MESSAGE = "This request could not be executed before the completion window expired."
CANCELLED_MESSAGE = "This request was not executed because the batch was cancelled."
DAY = 86400


@dataclass
class Line:
    custom_id: str
    body: dict[str, Any]
    # "ok", "invalid_json" (succeeds with a broken structured answer), "fail" (a simulated
    # server error) or "invalid: <message>"
    outcome: str


@dataclass
class Job:
    id: str
    api: str  # "openai" or "anthropic"
    lines: list[Line]
    model: str
    seconds: float
    expire: float
    created: float  # monotonic
    created_wall: float
    input_file_id: str | None = None
    endpoint: str = OPENAI_ENDPOINT  # OpenAI: what every line asks
    metadata: dict[str, Any] | None = None
    failure: list[dict[str, Any]] | None = None  # OpenAI: the file failed validation
    cancelled_at: float | None = None
    ended: dict[str, Any] | None = None  # filled once, when the job ends
    results: list[dict[str, Any]] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.lines)


def _wall(seconds: float) -> int:
    return int(seconds)


def _rfc3339(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class BatchDesk(FileDesk):
    """Files (``files.FileDesk``) and batch jobs for both APIs; the server routes requests here."""

    def __init__(self, config: Callable[[], SimConfig], replier: Replier) -> None:
        super().__init__()
        self.config = config
        self.replier = replier
        self.jobs: dict[str, Job] = {}

    def summary(self) -> list[dict[str, Any]]:
        """One row per job: id, api, requests, status (for tests and ``/_sim/batches``)."""
        now = time.monotonic()
        return [{"id": j.id, "api": j.api, "requests": j.n, "model": j.model,
                 "status": self._status(j, now)[0]} for j in self.jobs.values()]

    # -- the clock ------------------------------------------------------------------------

    def _status(self, job: Job, now: float) -> tuple[str, int]:
        """(status, lines processed so far) at ``now``."""
        span = max(job.seconds, 1e-6)
        if job.cancelled_at is not None:
            done = self._processed(job, job.cancelled_at)
            grace = min(0.5, 0.1 * job.seconds)
            if now < job.cancelled_at + grace:
                return ("cancelling" if job.api == "openai" else "canceling"), done
            return ("cancelled" if job.api == "openai" else "ended"), done
        f = (now - job.created) / span
        if job.failure is not None:
            return ("validating", 0) if f < 0.1 else ("failed", 0)
        if f >= 1:
            done = job.n - math.ceil(job.expire * job.n) if job.expire > 0 else job.n
            if job.api == "openai":
                return ("expired" if done < job.n else "completed"), done
            return "ended", done
        done = self._processed(job, now)
        if job.api == "anthropic":
            return "in_progress", done
        if f < 0.1:
            return "validating", 0
        return ("in_progress" if f < 0.9 else "finalizing"), done

    def _processed(self, job: Job, when: float) -> int:
        f = (when - job.created) / max(job.seconds, 1e-6)
        share = min(1.0, max(0.0, (f - 0.1) / 0.8))
        limit = job.n - math.ceil(job.expire * job.n) if job.expire > 0 else job.n
        return min(limit, math.floor(job.n * share))

    def _advance(self, job: Job) -> tuple[str, int]:
        status, done = self._status(job, time.monotonic())
        if job.ended is None and status in ("completed", "expired", "cancelled", "failed", "ended"):
            job.ended = {"status": status, "done": done, "at": time.time()}
            self._finish(job, done)
        return status, done

    def _finish(self, job: Job, done: int) -> None:
        """Answer the processed lines; the rest expired or were cancelled."""
        if job.failure is not None:
            return
        cfg = self.config()
        unprocessed = "canceled" if job.cancelled_at is not None else "expired"
        for i, line in enumerate(job.lines):
            if i >= done:
                job.results.append({"custom_id": line.custom_id, "type": unprocessed})
            elif line.outcome in ("ok", "invalid_json"):
                body = self._answer(job, line, cfg, line.outcome == "invalid_json")
                job.results.append({"custom_id": line.custom_id, "type": "succeeded", "body": body})
            elif line.outcome == "fail":
                job.results.append({"custom_id": line.custom_id, "type": "errored", "status": 500,
                                    "message": SERVER_ERRORS[500]})
            else:
                job.results.append({"custom_id": line.custom_id, "type": "errored", "status": 400,
                                    "message": line.outcome.removeprefix("invalid: ")})
        # Results come in no particular order (both APIs say so): match by custom_id.
        random.Random(job.id).shuffle(job.results)
        if job.api == "openai":
            self._write_openai_files(job)

    def _answer(self, job: Job, line: Line, cfg: SimConfig, invalid: bool) -> dict[str, Any]:
        """A line's answer from the real-time endpoints' own path (``reply.Replier``): packed
        requests and prompt caching included, lines taken in order as one worker would."""
        api, body = job.api, line.body
        if job.endpoint == EMBEDDINGS_ENDPOINT:  # the real-time endpoint's own code
            checked = embeddings.check(body)
            assert not isinstance(checked, Invalid)  # invalid lines were answered with errors
            return embeddings.response_object(*checked)
        dialect = _DIALECTS[api]
        messages = dialect.messages(body)
        now = time.monotonic()
        dice = random.Random(f"pack\n{cfg.seed}\n{job.id}\n{line.custom_id}")
        draft = self.replier.draft(api, body, messages, dialect.response_format(body),
                                   dialect.max_tokens(body), now, invalid=invalid, dice=dice)
        self.replier.deliver(draft, now, batch=job.id, custom_id=line.custom_id)
        return dialect.answer(draft)

    @staticmethod
    def _dice(job_id: str, seed: int, custom_id: str, salt: str = "") -> float:
        digest = hashlib.sha256(f"{salt}{seed}\n{job_id}\n{custom_id}".encode()).hexdigest()
        return int(digest[:13], 16) / 16**13

    # -- OpenAI: batches --------------------------------------------------------------------

    async def openai_create(self, request: web.Request, entry: dict[str, Any]) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            return _oa_error(400, "We could not parse the JSON body of your request.")
        if not isinstance(body, dict):
            return _oa_error(400, "Invalid type for request body: expected an object.")
        for name in ("input_file_id", "endpoint", "completion_window"):
            if not body.get(name):
                return _oa_error(400, f"Missing required parameter: '{name}'.", param=name)
        endpoint = body["endpoint"]
        if endpoint not in OPENAI_ENDPOINTS:
            supported = ", ".join(f"'{e}'" for e in OPENAI_ENDPOINTS)
            return _oa_error(400, f"Invalid value: '{endpoint}'. Supported values are: {supported}.",
                             param="endpoint")
        if body["completion_window"] != "24h":
            return _oa_error(400, f"Invalid value: '{body['completion_window']}'. Supported "
                             "values are: '24h'.", param="completion_window")
        file = self.files.get(body["input_file_id"])
        if file is None:
            return _oa_error(404, f"No such File object: {body['input_file_id']}",
                             param="input_file_id")
        if file["purpose"] != "batch":
            return _oa_error(400, "The input file must be uploaded with purpose 'batch'.",
                             param="input_file_id")
        cfg = self.config()
        job_id = f"batch_{uuid.uuid4().hex[:24]}"
        lines, failure, model, inputs = self._read_jsonl(file["data"], job_id, cfg, endpoint)
        job = Job(job_id, "openai", lines, model, cfg.batch_seconds, cfg.batch_expire,
                  time.monotonic(), time.time(), input_file_id=file["id"], endpoint=endpoint,
                  metadata=body.get("metadata"), failure=failure)
        self.jobs[job_id] = job
        entry.update(model=model or None, batch=job_id, batch_requests=len(lines))
        if endpoint == EMBEDDINGS_ENDPOINT:
            entry["batch_inputs"] = inputs
        return web.json_response(self._openai_object(job))

    def _read_jsonl(self, data: bytes, job_id: str, cfg: SimConfig, endpoint: str = OPENAI_ENDPOINT
                    ) -> tuple[list[Line], list[dict[str, Any]] | None, str, int]:
        """(lines, validation problems or None, model, embedding inputs over all lines)."""
        lines: list[Line] = []
        inputs = 0
        problems: list[dict[str, Any]] = []
        seen: set[str] = set()
        models: set[str] = set()
        for number, raw in enumerate(data.splitlines(), start=1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except ValueError:
                problems.append(_line_error("invalid_json_line", "This line is not parseable as valid JSON.", number))
                continue
            if not isinstance(obj, dict):
                problems.append(_line_error("invalid_request", "Each line must be a JSON object.", number))
                continue
            custom_id, body = obj.get("custom_id"), obj.get("body")
            if not isinstance(custom_id, str) or not custom_id:
                problems.append(_line_error("missing_required_parameter", "Missing required parameter: 'custom_id'.", number))
                continue
            if custom_id in seen:
                problems.append(_line_error("duplicate_custom_id", f"The custom_id for this request is a duplicate of another request: {custom_id}", number))
                continue
            seen.add(custom_id)
            if obj.get("method") != "POST" or obj.get("url") != endpoint:
                problems.append(_line_error("invalid_url", f"The URL provided for this request does not match the batch endpoint {endpoint}.", number))
                continue
            if not isinstance(body, dict):
                problems.append(_line_error("invalid_request", "Missing required parameter: 'body'.", number))
                continue
            if isinstance(body.get("model"), str):
                models.add(body["model"])
            if endpoint == EMBEDDINGS_ENDPOINT:
                checked = embeddings.check(body)
                invalid = checked if isinstance(checked, Invalid) else None
                inputs += _input_count(body)
                response_format = None
            else:
                invalid = check_chat(body)
                response_format = _response_format("openai", body)
            outcome = (f"invalid: {invalid.message}" if invalid
                       else self._outcome(job_id, cfg, custom_id, response_format))
            lines.append(Line(custom_id, body, outcome))
        if len(models) > 1:
            problems.append(_line_error("mismatched_model", "The provided model does not match the model of other requests in this batch.", None))
        if not lines and not problems:
            problems.append(_line_error("empty_file", "The batch input file is empty.", None))
        if inputs > MAX_EMBEDDING_INPUTS:  # our words; OpenAI documents the limit, not the message
            problems.append(_line_error(
                "too_many_embedding_inputs", f"The batch has {inputs} embedding inputs across its "
                f"requests; the limit for {EMBEDDINGS_ENDPOINT} batches is {MAX_EMBEDDING_INPUTS}.", None))
        return lines, (problems or None), (sorted(models)[0] if models else ""), inputs

    def _outcome(self, job_id: str, cfg: SimConfig, custom_id: str,
                 response_format: dict[str, Any] | None) -> str:
        if cfg.batch_fail_rate > 0 and self._dice(job_id, cfg.seed, custom_id) < cfg.batch_fail_rate:
            return "fail"
        if (cfg.fault_invalid_json > 0 and is_structured(response_format)
                and self._dice(job_id, cfg.seed, custom_id, "invalid_json\n") < cfg.fault_invalid_json):
            return "invalid_json"
        return "ok"

    def _openai_object(self, job: Job) -> dict[str, Any]:
        status, done = self._advance(job)
        ok = sum(1 for line in job.lines[:done] if line.outcome in ("ok", "invalid_json"))
        ended = job.ended
        at = int(job.created_wall)
        out: dict[str, Any] = {
            "id": job.id, "object": "batch", "endpoint": job.endpoint, "model": job.model or None,
            "errors": {"object": "list", "data": job.failure} if job.failure else None,
            "input_file_id": job.input_file_id, "completion_window": "24h", "status": status,
            "output_file_id": None, "error_file_id": None, "created_at": at,
            "in_progress_at": None, "expires_at": at + DAY, "finalizing_at": None,
            "completed_at": None, "failed_at": None, "expired_at": None, "cancelling_at": None,
            "cancelled_at": None,
            "request_counts": {"total": job.n, "completed": ok, "failed": done - ok},
            "metadata": job.metadata,
        }
        if status not in ("validating", "failed"):
            out["in_progress_at"] = at + _wall(0.1 * job.seconds)
        if job.cancelled_at is not None:
            out["cancelling_at"] = int(job.created_wall + job.cancelled_at - job.created)
        if ended is not None:
            when = int(ended["at"])
            out[{"completed": "completed_at", "failed": "failed_at", "expired": "expired_at",
                 "cancelled": "cancelled_at"}[status]] = when
            if status in ("completed", "expired"):
                out["finalizing_at"] = when
            out["output_file_id"] = ended.get("output_file_id")
            out["error_file_id"] = ended.get("error_file_id")
        return out

    def _write_openai_files(self, job: Job) -> None:
        output, failed = [], []
        for r in job.results:
            line: dict[str, Any] = {"id": f"batch_req_{uuid.uuid4().hex[:24]}", "custom_id": r["custom_id"],
                                    "response": None, "error": None}
            if r["type"] == "succeeded":
                line["response"] = {"status_code": 200, "request_id": f"req_{uuid.uuid4().hex[:24]}",
                                    "body": r["body"]}
                output.append(line)
                continue
            if r["type"] == "errored":
                line["response"] = {
                    "status_code": r["status"], "request_id": f"req_{uuid.uuid4().hex[:24]}",
                    "body": error_body(r["message"], "server_error" if r["status"] >= 500
                                       else "invalid_request_error"),
                }
            elif r["type"] == "expired":
                line["error"] = {"code": "batch_expired", "message": EXPIRED_MESSAGE}
            else:
                line["error"] = {"code": "batch_cancelled", "message": CANCELLED_MESSAGE}
            failed.append(line)
        assert job.ended is not None
        for key, lines in (("output_file_id", output), ("error_file_id", failed)):
            if lines:
                data = b"".join(json.dumps(x).encode() + b"\n" for x in lines)
                name = "batch_output.jsonl" if key == "output_file_id" else "batch_errors.jsonl"
                job.ended[key] = self._add_file(data, name, "batch_output")["id"]

    async def openai_get(self, request: web.Request, entry: dict[str, Any]) -> web.Response:
        job = self.jobs.get(request.match_info["batch_id"])
        if job is None or job.api != "openai":
            return _oa_error(404, f"No such Batch object: {request.match_info['batch_id']}", param="id")
        return web.json_response(self._openai_object(job))

    async def openai_list(self, request: web.Request, entry: dict[str, Any]) -> web.Response:
        """``GET /v1/batches?limit=&after=``: newest first, as OpenAI pages them."""
        try:
            limit = int(request.query.get("limit", "20"))
        except ValueError:
            return _oa_error(400, "limit must be an integer", param="limit")
        if not 1 <= limit <= 100:
            return _oa_error(400, "limit must be between 1 and 100", param="limit")
        jobs = [j for j in reversed(self.jobs.values()) if j.api == "openai"]
        after = request.query.get("after")
        if after:
            ids = [j.id for j in jobs]
            jobs = jobs[ids.index(after) + 1:] if after in ids else []
        page = [self._openai_object(j) for j in jobs[:limit]]
        return web.json_response({"object": "list", "data": page,
                                  "first_id": page[0]["id"] if page else None,
                                  "last_id": page[-1]["id"] if page else None,
                                  "has_more": len(jobs) > limit})

    async def openai_cancel(self, request: web.Request, entry: dict[str, Any]) -> web.Response:
        job = self.jobs.get(request.match_info["batch_id"])
        if job is None or job.api != "openai":
            return _oa_error(404, f"No such Batch object: {request.match_info['batch_id']}", param="id")
        status, _ = self._advance(job)
        if status in ("completed", "failed", "expired", "cancelled"):
            return _oa_error(409, f"Cannot cancel a batch with status '{status}'.")
        if job.cancelled_at is None:
            job.cancelled_at = time.monotonic()
        return web.json_response(self._openai_object(job))

    # -- Anthropic --------------------------------------------------------------------------

    async def anthropic_create(self, request: web.Request, entry: dict[str, Any]) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            return _an_error(400, "There was an error parsing the body of your request.")
        requests = body.get("requests") if isinstance(body, dict) else None
        if not isinstance(requests, list):
            return _an_error(400, "requests: Field required")
        if not requests:
            return _an_error(400, "requests: List should have at least 1 item after validation, not 0")
        if len(requests) > 100_000:
            return _an_error(400, "requests: List should have at most 100000 items")
        cfg = self.config()
        job_id = f"msgbatch_{uuid.uuid4().hex[:24]}"
        lines: list[Line] = []
        seen: set[str] = set()
        for i, item in enumerate(requests):
            if not isinstance(item, dict):
                return _an_error(400, f"requests.{i}: Input should be a valid dictionary")
            custom_id, params = item.get("custom_id"), item.get("params")
            if not isinstance(custom_id, str) or not CUSTOM_ID.match(custom_id):
                return _an_error(400, f"requests.{i}.custom_id: String should match pattern "
                                 "'^[a-zA-Z0-9_-]{1,64}$'")
            if custom_id in seen:
                return _an_error(400, f"Duplicate custom_id: '{custom_id}'. Each request in a "
                                 "batch must have a unique custom_id.")
            seen.add(custom_id)
            if problem := check_messages(params):
                return _an_error(400, f"requests.{i}.params.{problem}")
            if params.get("stream"):
                return _an_error(400, f"requests.{i}.params.stream: streaming is not supported in batches")
            outcome = self._outcome(job_id, cfg, custom_id, _response_format("anthropic", params))
            lines.append(Line(custom_id, params, outcome))
        model = lines[0].body["model"]
        job = Job(job_id, "anthropic", lines, model, cfg.batch_seconds, cfg.batch_expire,
                  time.monotonic(), time.time())
        self.jobs[job_id] = job
        entry.update(model=model, batch=job_id, batch_requests=len(lines))
        return web.json_response(self._anthropic_object(job, request))

    def _anthropic_object(self, job: Job, request: web.Request) -> dict[str, Any]:
        status, done = self._advance(job)
        counts = {"processing": job.n, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
        ended = job.ended
        if ended is not None:
            counts = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
            for r in job.results:
                counts[r["type"]] += 1
        out: dict[str, Any] = {
            "id": job.id, "type": "message_batch", "processing_status": status,
            "request_counts": counts, "ended_at": None, "created_at": _rfc3339(job.created_wall),
            "expires_at": _rfc3339(job.created_wall + DAY), "archived_at": None,
            "cancel_initiated_at": None, "results_url": None,
        }
        if job.cancelled_at is not None:
            out["cancel_initiated_at"] = _rfc3339(job.created_wall + job.cancelled_at - job.created)
        if ended is not None:
            out["ended_at"] = _rfc3339(ended["at"])
            origin = f"{request.scheme}://{request.host}"
            out["results_url"] = f"{origin}/v1/messages/batches/{job.id}/results"
        return out

    def _anthropic_job(self, request: web.Request) -> Job | None:
        job = self.jobs.get(request.match_info["batch_id"])
        return job if job is not None and job.api == "anthropic" else None

    async def anthropic_get(self, request: web.Request, entry: dict[str, Any]) -> web.Response:
        job = self._anthropic_job(request)
        if job is None:
            return _an_error(404, "Not found", "not_found_error")
        return web.json_response(self._anthropic_object(job, request))

    async def anthropic_cancel(self, request: web.Request, entry: dict[str, Any]) -> web.Response:
        job = self._anthropic_job(request)
        if job is None:
            return _an_error(404, "Not found", "not_found_error")
        status, _ = self._advance(job)
        if status == "ended":
            return _an_error(400, f"Batch {job.id} has already ended and cannot be canceled.")
        if job.cancelled_at is None:
            job.cancelled_at = time.monotonic()
        return web.json_response(self._anthropic_object(job, request))

    async def anthropic_results(self, request: web.Request, entry: dict[str, Any]) -> web.Response:
        job = self._anthropic_job(request)
        if job is None:
            return _an_error(404, "Not found", "not_found_error")
        status, _ = self._advance(job)
        if job.ended is None:
            return _an_error(400, f"Batch {job.id} has not ended: results are available once "
                             f"processing ends (processing_status: {status}).")
        lines = []
        for r in job.results:
            result: dict[str, Any] = {"type": r["type"]}
            if r["type"] == "succeeded":
                result["message"] = r["body"]
            elif r["type"] == "errored":
                kind = "api_error" if r["status"] >= 500 else "invalid_request_error"
                result["error"] = anthropic_error(kind, r["message"]) | {"request_id": None}
            lines.append(json.dumps({"custom_id": r["custom_id"], "result": result}).encode() + b"\n")
        return web.Response(body=b"".join(lines), content_type="application/x-jsonl")


_DIALECTS: dict[str, Dialect] = {"openai": ChatCompletions(), "anthropic": Messages()}


def _response_format(api: str, body: dict[str, Any]) -> dict[str, Any] | None:
    """The answer's required shape, read by the real-time endpoint's own dialect."""
    return _DIALECTS[api].response_format(body)


def _input_count(body: dict[str, Any]) -> int:
    """How many inputs an embeddings body carries (a string or one token array is one)."""
    raw = body.get("input")
    if isinstance(raw, list) and raw and not all(isinstance(t, int) for t in raw):
        return len(raw)
    return 1 if raw else 0


def _line_error(code: str, message: str, line: int | None) -> dict[str, Any]:
    return {"code": code, "message": message, "param": None, "line": line}


def _oa_error(status: int, message: str, type_: str = "invalid_request_error",
              param: str | None = None) -> web.Response:
    return web.json_response(error_body(message, type_, param), status=status)


def _an_error(status: int, message: str, type_: str = "invalid_request_error") -> web.Response:
    return web.json_response(anthropic_error(type_, message), status=status)
