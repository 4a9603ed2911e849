"""The IPython extension: ``%load_ext llmbatch_pd`` (or ``c.InteractiveShellApp.extensions =
["llmbatch_pd"]`` in the IPython config) registers two magics.

``%%llm FRAME --model M [--output COL] [--budget D] ... [--out NAME]``: the cell's body is the
template, sent for every row of the frame named ``FRAME`` in the user's namespace; the flags
mirror ``df.llm.apply``'s options (``%%llm --help`` lists them). The result is the cell's value
(shown, and ``_``); ``--out NAME`` also keeps it as ``NAME``. ``--estimate`` shows the estimate
only, ``--submit`` runs in the background (a Job). The frame itself is never changed.

``%llm_runs``: this kernel's runs and background jobs (``core.journal``) as a table, with the
kernel's total spend.

The UI layer does not import pandas nor the accessor: the frame is found in the namespace and
used through its ``.llm`` accessor (``apply``, ``estimate``, ``submit``), duck-typed. Bad flags,
a missing frame or template are a ``UsageError`` before anything is sent; so is a bad option
the library refuses (an ``InputError``, which is also raised before any money is spent).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from ..core import journal
from ..core import numbers as fmt
from ..core.errors import InputError
from .style import MUTED, TABLE, TD, TH, TR, card_html, esc

USAGE = "%%llm FRAME --model MODEL [options]; the cell's body is the template (%%llm --help lists the options)"

# flag -> apply's keyword, for the options passed through only when given (the library's own
# defaults apply otherwise)
PASSED = ("output", "budget", "system", "temperature", "max_tokens", "concurrency", "rpm", "tpm",
          "max_retries", "timeout", "missing", "mode", "tier", "base_url", "pilot", "poll_interval",
          "schema_retries")
PROGRESS = {"auto": None, "widget": "widget", "tqdm": "tqdm", "off": False}


def _pack(value: str) -> int | str:
    """``--pack 8`` or ``--pack auto``."""
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise UsageError(f"--pack takes a number of rows per request or 'auto', not {value!r}") from None


def _cache(value: str) -> bool | str:
    """``--cache off`` / ``on`` / ``refresh`` / a file path."""
    return {"on": True, "off": False}.get(value.lower(), value)


def _rewarn(caught: list[warnings.WarningMessage]) -> None:
    """The run's warnings (rows without an answer ...) said as the cell's, not as a line of
    this module's: a library call's warning points at the caller's line, and here that is us."""
    for w in caught:
        warnings.warn_explicit(w.message, w.category, "%%llm", 1)


def models_of(values: list[str] | None) -> str | list[str]:
    """``--model a --model b`` or ``--model a,b``: one name, or the list for ``model=[...]``."""
    names = [n.strip() for v in values or [] for n in v.split(",") if n.strip()]
    if not names:
        raise UsageError(f"name a model: --model openai/gpt-4.1-mini\nusage: {USAGE}")
    return names[0] if len(names) == 1 else names


@magics_class
class LLMMagics(Magics):
    """``%%llm`` and ``%llm_runs``."""

    @magic_arguments()
    @argument("frame", nargs="?", help="the DataFrame (or Series) in your namespace whose rows are sent")
    @argument("-m", "--model", action="append", metavar="MODEL",
              help="provider/model, e.g. openai/gpt-4.1-mini; repeat it (or separate names with "
                   "commas) to run several models side by side")
    @argument("-o", "--output", help="the answer column's name (default llm_output)")
    @argument("--budget", type=float, metavar="DOLLARS",
              help="never spend more than this; refused before sending if the estimate is above it")
    @argument("--system", help="a system prompt")
    @argument("--temperature", type=float)
    @argument("--max-tokens", type=int, dest="max_tokens", metavar="N", help="output tokens per answer at most")
    @argument("--concurrency", type=int, metavar="N", help="requests in flight at most")
    @argument("--rpm", type=float, help="requests per minute at most")
    @argument("--tpm", type=float, help="tokens per minute at most")
    @argument("--max-retries", type=int, dest="max_retries", metavar="N")
    @argument("--timeout", type=float, metavar="SECONDS", help="per request")
    @argument("--missing", help="rows with a missing value: skip (default) or empty (send them with an empty field)")
    @argument("--mode", help="realtime (default) or batch (the provider's batch API: half price, up to 24 h)")
    @argument("--poll-interval", type=float, dest="poll_interval", metavar="SECONDS", help="mode batch: status polls")
    @argument("--pack", metavar="K", help="rows per request (a number or auto)")
    @argument("--tier", help="standard or flex (OpenAI's flex processing)")
    @argument("--cache", metavar="on|off|refresh|PATH", help="the answer cache (default on)")
    @argument("--base-url", dest="base_url", metavar="URL", help="an OpenAI-compatible endpoint")
    @argument("--schema", metavar="NAME", help="a pydantic model (or dict of name to type) in your namespace: "
                                               "one typed column per field")
    @argument("--schema-retries", type=int, dest="schema_retries", metavar="N")
    @argument("--pilot", type=int, metavar="N", help="run N rows first and estimate from them (with --estimate: "
                                                                 "those N rows are sent and paid for)")
    @argument("--usage", action="store_true", help="add token and cost columns")
    @argument("--progress", choices=sorted(PROGRESS), help="the display: auto (default), widget, tqdm or off")
    @argument("--options", metavar="NAME", help="a dict in your namespace with more keyword options for "
                                                "apply (e.g. base_url and api_key: keeps a key out of the cell)")
    @argument("--out", metavar="NAME", help="also keep the result (a Job with --submit) as NAME")
    @argument("--estimate", action="store_true", help="show the estimate only: nothing is sent, "
                                                               "except N rows with --pilot N")
    @argument("--submit", action="store_true", help="run in the background (df.llm.submit): returns a Job")
    @argument("--confirm", action="store_true", help="with --submit: send nothing until job.start()")
    @argument("-h", "--help", action="store_true", help="show this help (as %%%%llm? does)")
    @cell_magic
    def llm(self, line: str, cell: str) -> Any:
        """Send every row of FRAME through an LLM, with the cell's body as the template
        (``{column}`` fields are the row's values). Returns the result: FRAME with the answer
        columns added (FRAME itself is not changed); with --estimate the estimate, with --submit
        a Job. The figures of every run are in ``%llm_runs``."""
        args = parse_argstring(self.llm, line)
        if args.help:
            print((self.llm.__doc__ or "").removeprefix("::").strip("\n"))
            return None
        frame, template, model, options = self._call(args, cell)
        caught: list[warnings.WarningMessage] = []
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                if args.estimate:
                    options.pop("progress", None)
                    result = frame.llm.estimate(template, model=model, **options)
                elif args.submit:
                    result = frame.llm.submit(template, model=model, confirm=args.confirm, **options)
                else:
                    result = frame.llm.apply(template, model=model, **options)
        except InputError as exc:  # refused before anything was sent: say it as a usage error
            raise UsageError(f"%%llm: {exc}") from None
        finally:
            _rewarn(caught)  # outside catch_warnings: shown, not caught again
        if args.out:
            self.shell.user_ns[args.out] = result
        return result

    def _call(self, args: Any, cell: str | None) -> tuple[Any, str, Any, dict[str, Any]]:
        """(frame, template, model, options), every part checked; nothing is sent."""
        if not args.frame:
            raise UsageError(f"name the frame whose rows are sent: {USAGE}")
        frame = self._frame(args.frame)
        template = (cell or "").strip()
        if not template:
            raise UsageError("the cell's body is the template, and it is empty: write the prompt below the "
                             "%%llm line, with {column} where a row's value goes")
        model = models_of(args.model)
        if args.estimate and args.submit:
            raise UsageError("--estimate and --submit exclude each other: an estimate sends nothing")
        if args.submit and not hasattr(frame.llm, "submit"):
            raise UsageError(f"--submit runs a DataFrame's rows in the background; {args.frame} is a "
                             f"{type(frame).__name__} (use a frame: {args.frame}.to_frame())")
        if args.confirm and not args.submit:
            raise UsageError("--confirm goes with --submit (a background job that waits for job.start())")
        if args.out is not None and not args.out.isidentifier():
            raise UsageError(f"--out takes a variable name, not {args.out!r}")
        options: dict[str, Any] = {}
        if args.options:
            extra = self._lookup(args.options, "--options")
            if not isinstance(extra, dict):
                raise UsageError(f"--options {args.options} must name a dict of keyword options, "
                                 f"not a {type(extra).__name__}")
            options.update(extra)
        options.update({name: getattr(args, name) for name in PASSED if getattr(args, name) is not None})
        if args.pack is not None:
            options["pack"] = _pack(args.pack)
        if args.cache is not None:
            options["cache"] = _cache(args.cache)
        if args.schema is not None:
            options["schema"] = self._lookup(args.schema, "--schema")
        if args.usage:
            options["usage"] = True
        if args.progress is not None:
            options["progress"] = PROGRESS[args.progress]
        return frame, template, model, options

    def _lookup(self, name: str, flag: str) -> Any:
        try:
            return self.shell.user_ns[name]
        except KeyError:
            raise UsageError(f"{flag} {name}: there is no variable {name!r} in the namespace") from None

    def _frame(self, name: str) -> Any:
        """The frame named (or the expression given: ``reviews.head(20)``)."""
        if name in self.shell.user_ns:
            frame = self.shell.user_ns[name]
        else:
            try:
                frame = self.shell.ev(name)
            except Exception as exc:
                raise UsageError(f"no frame {name!r} in the namespace ({type(exc).__name__}: {exc}); "
                                 f"usage: {USAGE}") from None
        llm = getattr(frame, "llm", None)
        if llm is None or not hasattr(llm, "apply"):
            raise UsageError(f"{name} is a {type(frame).__name__}, not a pandas DataFrame or Series "
                             "(import llmbatch_pd registers their .llm)")
        return frame

    @magic_arguments()
    @argument("--clear", action="store_true", help="forget the runs listed so far")
    @line_magic
    def llm_runs(self, line: str = "") -> RunsTable | None:
        """This kernel's runs and background jobs: model, rows answered and failed, dollars,
        wall time, status; and the kernel's total spend."""
        args = parse_argstring(self.llm_runs, line)
        if args.clear:
            journal.clear()
            return None
        return RunsTable(journal.entries())


# magic_arguments writes the usage line of a line magic; this one is a cell magic
LLMMagics.llm.__doc__ = (LLMMagics.llm.__doc__ or "").replace("%llm [", "%%llm [", 1)

COLUMNS = ("#", "Model", "Kind", "Rows", "Answered", "Failed", "Skipped", "Not sent", "Cost", "Wall time",
           "Status", "Started")
LEFT = (1, 2, 10, 11)  # the text columns


@dataclass(frozen=True)
class RunsTable:
    """``%llm_runs``' table (HTML in a notebook, text in a terminal); ``entries`` are the
    journal's."""

    entries: list[journal.Entry]

    @property
    def total(self) -> float:
        return sum(e.dollars for e in self.entries)

    def rows(self) -> list[tuple[str, ...]]:
        return [(str(i), e.model, e.kind, fmt.count(e.rows), fmt.count(e.answered), fmt.count(e.failed),
                 fmt.count(e.skipped), fmt.count(e.not_sent), fmt.money(e.dollars), fmt.duration(e.wall_s), e.status,
                 time.strftime("%H:%M:%S", time.localtime(e.started)))
                for i, e in enumerate(self.entries, 1)]

    def footer(self) -> str:
        runs = fmt.plural(len(self.entries), "run")
        return f"Total spend in this kernel: {fmt.money(self.total)} ({runs})"

    def __repr__(self) -> str:
        if not self.entries:
            return "No runs in this kernel yet."
        table = [COLUMNS, *self.rows()]
        widths = [max(len(r[i]) for r in table) for i in range(len(COLUMNS))]
        lines = ["  ".join(c.ljust(w) if i in LEFT else c.rjust(w)
                           for i, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip() for r in table]
        return "\n".join([*lines, self.footer()])

    def _repr_html_(self) -> str:
        if not self.entries:
            return card_html(f'<span style="color:{MUTED}">No runs in this kernel yet.</span>')
        th = TH.replace("padding:1px 18px 1px 0", "padding:1px 14px 1px 0") + "white-space:nowrap;"
        head = "".join(f'<th style="{th}">{esc(c)}</th>' for c in COLUMNS)
        body = "".join(
            f'<tr style="{TR}">' + "".join(
                f'<td style="{TD}padding-right:14px;white-space:nowrap;{"" if i in LEFT else "text-align:right;"}">'
                f"{esc(c)}</td>" for i, c in enumerate(row)) + "</tr>"
            for row in self.rows())
        return card_html(f'<div style="font-weight:600">Runs in this kernel</div>'
                         f'<div style="overflow-x:auto;max-width:100%">'  # a long list scrolls, not spills
                         f'<table class="llmbatch-runs" style="{TABLE}"><thead><tr style="{TR}">{head}</tr>'
                         f"</thead><tbody>{body}</tbody></table></div>"
                         f'<div style="margin-top:6px">{esc(self.footer())}</div>', wide=True)


def column_matcher(shell: Any) -> Any:
    """Tab completion of the frame's column names after ``{`` in a ``%%llm`` cell's body."""
    from IPython.core.completer import SimpleCompletion, context_matcher

    @context_matcher()
    def llm_columns(context: Any) -> dict[str, Any]:
        lines, token = context.full_text.split("\n"), context.token
        if not lines[0].startswith("%%llm") or not 0 < context.cursor_line < len(lines):
            return {"completions": []}
        line = lines[context.cursor_line]
        at = line.rfind("{")  # inside a field: after "{", no "}" since, the token at its end
        if at < 0 or "}" in line[at:] or not line[at + 1:].endswith(token):
            return {"completions": []}
        words = lines[0].split()
        frame = shell.user_ns.get(words[1]) if len(words) > 1 else None
        names = [str(c) for c in getattr(frame, "columns", [])]
        return {"completions": [SimpleCompletion(n, type="column") for n in names if n.startswith(token)],
                "suppress": True}

    return llm_columns


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext llmbatch_pd``: register ``%%llm`` and ``%llm_runs``, and the completion
    of column names in a ``%%llm`` cell."""
    ipython.register_magics(LLMMagics)
    completer = getattr(ipython, "Completer", None)
    if completer is not None and not any(getattr(m, "__name__", "") == "llm_columns"
                                         for m in completer.custom_matchers):
        completer.custom_matchers.append(column_matcher(ipython))


__all__ = ["LLMMagics", "RunsTable", "load_ipython_extension", "models_of"]
