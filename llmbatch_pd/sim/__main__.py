"""``python -m llmbatch_pd.sim``: serve the simulator; the first stdout line is its base URL.

Every ``SimConfig`` knob is a flag (``fault_429`` -> ``--fault-429``; ``none`` clears an
optional limit; a switch has a ``--no-`` form: ``--no-rate-limit-headers``,
``--no-retry-after-on-429`` for a server that, like vLLM, says nothing about its limits; a
tuple is comma-separated, ``--answer-tokens-after 100,400``, ``--flex-models o3,gpt-5``; a
dict is ``name=value`` pairs, ``--anthropic-cache-min-tokens claude-haiku-4-5=4096``).
A JSON config in ``$LLMBATCH_SIM_CONFIG`` is the base the flags override;
``Simulator(process=True)`` uses it so an api_key never shows in the process list.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import signal
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any

from .config import SimConfig
from .server import serve
from .simulator import CONFIG_ENV

_ALIASES = {"ttft_ms": ["--latency-ms"]}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m llmbatch_pd.sim",
        description="Loopback OpenAI- and Anthropic-compatible provider simulator.",
        argument_default=argparse.SUPPRESS,  # only flags actually given override the config
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    hints = typing.get_type_hints(SimConfig)
    defaults = SimConfig()
    for f in dataclasses.fields(SimConfig):
        flags = [f"--{f.name.replace('_', '-')}", *_ALIASES.get(f.name, [])]
        hint = hints[f.name]
        if hint is bool:
            parser.add_argument(*flags, dest=f.name, action=argparse.BooleanOptionalAction)
        else:
            parser.add_argument(
                *flags, dest=f.name, type=_parser_for(hint), help=f"default: {getattr(defaults, f.name)!r}"
            )
    return parser


def _parser_for(hint: Any) -> Callable[[str], Any]:
    """A string -> value converter for one annotation (``none`` for optional ones)."""
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) and type(None) in args:
        (inner,) = (a for a in args if a is not type(None))
        convert = _parser_for(inner)
        return lambda text: None if text.lower() == "none" else convert(text)
    if typing.get_origin(hint) is tuple:
        item = typing.get_args(hint)[0]
        return lambda text: tuple(item(s.strip()) for s in text.split(",") if s.strip())
    if typing.get_origin(hint) is dict:  # "claude-haiku-4-5=4096,claude-sonnet-4-5=1024"
        return lambda text: {k.strip(): int(v) for k, _, v in
                             (p.partition("=") for p in text.split(",") if p.strip())}
    return typing.cast(Callable[[str], Any], hint)


def config_from(args: argparse.Namespace) -> SimConfig:
    base = json.loads(os.environ.get(CONFIG_ENV) or "{}")
    knobs = {k: v for k, v in vars(args).items() if k not in ("host", "port")}
    return SimConfig.from_dict(base | knobs)


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from(args)
    except (ValueError, TypeError) as exc:
        parser.error(str(exc))

    async def run() -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        try:
            await serve(config, host=args.host, port=args.port, on_ready=_announce)
        except asyncio.CancelledError:
            pass

    asyncio.run(run())


def _announce(base_url: str) -> None:
    print(base_url, flush=True)


if __name__ == "__main__":
    main()
