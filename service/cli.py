"""Command line: `groundqa index | ask | serve | eval | keys` (text for people, --json for
machines)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import textwrap
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from service.citations import place
from service.config import Settings
from service.errors import (
    BuildInProgressError,
    DatasetError,
    GroundQAError,
    InvalidInputError,
    KeysFileError,
)

if TYPE_CHECKING:
    from service.api.schemas import AskRequest
    from service.indexing import Builder, BuildReport

EXIT_ERROR = 2
EXIT_BUSY = 3


class UsageError(GroundQAError):
    """A command-line argument the command cannot use."""


class Parser(argparse.ArgumentParser):
    """argparse, with a usage error as one line on stderr and exit 2 (not usage + error)."""

    def error(self, message: str) -> NoReturn:
        """Print `error: message` and exit 2."""
        print(f"error: {message} (see `{self.prog} --help`)", file=sys.stderr)
        sys.exit(EXIT_ERROR)


def _default(settings: Settings, name: str) -> str:
    """`default: VALUE` of a setting for --help, naming its GROUNDQA_ variable when the
    environment (or .env) set it: the help shows what a run would use."""
    value = getattr(settings, name)
    shown = "none" if value is None else str(value)
    where = f", from GROUNDQA_{name.upper()}" if name in settings.model_fields_set else ""
    return f"default: {shown}{where}".replace("%", "%%")  # argparse %-formats help


# The options that override a setting, by the setting they override.
OPTIONS = {
    "seeds_dir": "--seeds",
    "index_dir": "--index",
    "host": "--host",
    "port": "--port",
    "mode": "--mode",
    "ray_address": "--ray-address",
    "watch": "--watch",
}


def settings_of(overrides: dict[str, Any]) -> Settings:
    """Settings from the environment and the options' overrides; UsageError naming the option
    or GROUNDQA_ variable when a value is invalid (a typo must not end in a traceback)."""
    from pydantic import ValidationError

    try:
        return Settings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else ""
        name = OPTIONS[field] if field in overrides else f"GROUNDQA_{field.upper()}"
        raise UsageError(f"{name}: {first['msg']}") from exc


def _settings(args: argparse.Namespace) -> Settings:
    """Settings from the environment, overridden by command-line options."""
    overrides: dict[str, Any] = {}
    for name in OPTIONS:
        value = getattr(args, name, None)
        if value is not None and value is not False:
            overrides[name] = value
    return settings_of(overrides)


def _builder(settings: Settings, engine: str = "local") -> Builder:
    from service.embedding import embedder_for
    from service.indexing import Builder

    if engine == "ray":
        from service.ray_engine import require_ray

        require_ray()  # before the model loads: fail at once when Ray is missing
    embedder = embedder_for(settings)
    if engine == "ray":
        from service.ray_engine import RayEngine

        return Builder(settings, embedder, RayEngine(settings, embedder))
    return Builder(settings, embedder)


# Files named per change in the summary; --json lists every one.
LISTED_FILES = 5


def named(names: Sequence[str]) -> str:
    """The first few names, then how many more."""
    shown = ", ".join(names[:LISTED_FILES])
    more = len(names) - LISTED_FILES
    return f"{shown} and {more} more" if more > 0 else shown


def summary_text(report: BuildReport) -> str:
    """Human summary of a build report."""
    lines = []
    if report.dry_run:
        lines.append("Dry run: nothing written.")
    elif report.published:
        lines.append(f"Published build {report.build_id}.")
    elif report.build_id:
        lines.append(f"Index is up to date (build {report.build_id}); nothing to do.")
    if report.full_rebuild_reason:
        lines.append(f"Full rebuild: {report.full_rebuild_reason}.")
    lines.append(
        f"Files: {len(report.added)} added, {len(report.modified)} modified, "
        f"{len(report.deleted)} deleted, {len(report.unchanged)} unchanged; "
        f"{report.files_indexed} indexed, {len(report.skipped)} skipped."
    )
    for verb, names in (
        ("added", report.added),
        ("modified", report.modified),
        ("deleted", report.deleted),
    ):
        if names:
            lines.append(f"  {verb}: {named(names)}")
    for skip in report.skipped[:LISTED_FILES]:
        lines.append(f"  skipped {skip['source']}: {skip['reason']}")
    if len(report.skipped) > LISTED_FILES:
        lines.append(f"  ... and {len(report.skipped) - LISTED_FILES} more skipped (see --json)")
    if report.files_indexed == 0:
        from service.parsers import SUPPORTED

        lines.append(f"No files indexed: add files of a supported type ({SUPPORTED}).")
    if not report.dry_run:
        lines.append(
            f"Chunks: {report.chunks} total, {report.chunks_embedded} embedded, "
            f"{report.chunks_reused} reused from cache."
        )
    lines.append(f"Took {report.seconds:.2f} s.")
    return "\n".join(lines)


def report_json(report: BuildReport) -> str:
    """One-line JSON of a build report."""
    return json.dumps(report.as_dict(), sort_keys=True)


def cmd_index(args: argparse.Namespace) -> int:
    """Build or update the index from the seeds folder."""
    from service.progress import StageLines, model_label

    settings = _settings(args)
    show = not args.json and sys.stderr.isatty()  # for people: never in logs or with --json
    stages = StageLines(sys.stderr if show else None)
    stages.say(model_label(settings))  # first: an export takes a minute before anything else
    builder = _builder(settings, args.engine)
    try:
        report = builder.build(
            full=args.full, dry_run=args.dry_run, show_progress=show, progress=stages
        )
    finally:
        builder.engine.close()
    print(report_json(report) if args.json else summary_text(report))
    return 0


def _ask_request(args: argparse.Namespace, settings: Settings) -> AskRequest:
    """The question and its options checked as the API checks them, with its messages."""
    from pydantic import ValidationError

    from service.api.schemas import AskRequest

    top_k = settings.top_k if args.top_k is None else args.top_k
    try:
        return AskRequest(question=args.question, top_k=top_k, mode=args.mode)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = {"question": "QUESTION", "top_k": "--top-k"}.get(str(first["loc"][0]), "")
        message = str(first["msg"]).removeprefix("Value error, ")
        raise UsageError(f"{field}: {message}") from exc


def cmd_ask(args: argparse.Namespace) -> int:
    """Answer a question from the published index."""
    from service.answering import ask
    from service.api.routes import to_response
    from service.builds import IndexHolder
    from service.embedding import embedder_for
    from service.search import Searcher

    settings = _settings(args)
    request = _ask_request(args, settings)  # before the model loads: bad input fails at once
    embedder = embedder_for(settings)
    holder = IndexHolder(settings.index_dir, embedder)
    holder.refresh()
    searcher = Searcher(settings, embedder, holder)
    result = ask(searcher, request.question, top_k=request.top_k, mode=request.mode)
    body = to_response(result)
    if args.json:
        print(body.model_dump_json())
        return 0
    print(f"Answer: {body.answer.text}\n")
    for p in body.passages:
        c = p.citation
        where = place(c)  # slide, sheet and rows, or pages, where the format has them
        at = f", {where}" if where else ""
        print(f"[{p.rank}] {c.source}{at}, lines {c.line_start}-{c.line_end} (score {p.score:.4f})")
        print(textwrap.indent(p.text, "    ") + "\n")  # whole, every line under its source
    print(f"build {body.index.build_id}, {body.took_ms:.1f} ms")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    """Check which sentences of a text the indexed documents support."""
    from service.access import EVERYTHING
    from service.api.routes import run_verify
    from service.api.schemas import VerifyRequest
    from service.builds import IndexHolder
    from service.embedding import embedder_for
    from service.search import Searcher

    text = sys.stdin.read() if args.text == "-" else args.text
    if not text.strip():
        raise InvalidInputError("nothing to verify: pass the text, or - to read it from stdin")
    settings = _settings(args)
    embedder = embedder_for(settings)
    holder = IndexHolder(settings.index_dir, embedder)
    holder.refresh()
    searcher = Searcher(settings, embedder, holder)
    try:
        request = VerifyRequest(text=text, sources=args.source or None)
        body = run_verify(searcher, request, EVERYTHING)  # the CLI reads the index itself
    finally:
        searcher.close()
    if args.json:
        print(body.model_dump_json())
    else:
        for s in body.sentences:
            if s.evidence is not None:
                e = s.evidence
                print(f"SUPPORTED      {s.text}\n    {e.source} [{e.char_start}:{e.char_end}]")
            else:
                print(f"NOT SUPPORTED  {s.text}\n    {s.reason}")
        print(f"\n{body.supported} of {body.total} sentences supported.")
    # Exit 1 when a sentence is unsupported, so scripts can gate on it.
    return 0 if body.supported == body.total else 1


def _exit_on_sigterm(signum: int, frame: object) -> None:
    """SIGTERM outside uvicorn's own handling: exit cleanly."""
    raise SystemExit(0)


def cmd_serve(args: argparse.Namespace) -> int:
    """Build the index if missing or stale, then serve HTTP."""
    # As PID 1 in a container, a signal without a handler is ignored: this one stops a model
    # load or build at once. uvicorn replaces it while serving and re-raises the signal after
    # its graceful shutdown, which this handler then turns into exit status 0.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    from service.api import create_app
    from service.api.observability import configure_logging
    from service.api.server import serve
    from service.indexing import seeds_plan
    from service.progress import StageLines, model_label
    from service.store import read_pointer_or_none

    settings = _settings(args)
    if sys.stderr.isatty():
        print(f"{model_label(settings)}...", file=sys.stderr, flush=True)
    builder = _builder(settings)
    has_index = read_pointer_or_none(settings.index_dir) is not None
    if settings.index_dir.is_dir() and not os.access(settings.index_dir, os.W_OK):
        # A replica on a shared index volume mounted read-only: builders publish, it follows.
        print(
            f"Index folder {settings.index_dir} is read-only: serving the builds published "
            "there (503 until the first one).",
            file=sys.stderr,
        )
    elif not settings.seeds_dir.is_dir() and has_index:
        print(
            f"warning: seeds folder {settings.seeds_dir} missing; serving the existing index",
            file=sys.stderr,
        )
    else:
        plan = seeds_plan(settings, builder.embedder.model_id)
        if plan.changed:
            reason = plan.full_reason or "seeds changed since the last build"
            print(f"Building the index ({reason})...", file=sys.stderr)
            show = sys.stderr.isatty()
            report = builder.build(
                show_progress=show, progress=StageLines(sys.stderr if show else None)
            )
            print(summary_text(report), file=sys.stderr)
    configure_logging(settings.log_level)
    app = create_app(settings, embedder=builder.embedder)
    # SIGTERM: stop accepting, serve what clients had sent before it, finish in-flight requests
    # (up to the grace period), then run the lifespan shutdown.
    serve(app, settings.host, settings.port, header_timeout=settings.header_timeout)
    return 0


def eval_split(dataset: Path, requested: str | None) -> str:
    """The qrels split to score: the one asked for, else the only one in qrels/, else test;
    UsageError naming the splits there when the one asked for is missing or none is clear."""
    splits = sorted(p.stem for p in (dataset / "qrels").glob("*.tsv"))
    if not splits:
        return requested or "test"  # beir_files says which file is missing
    listed = ", ".join(splits)
    if requested is not None and requested not in splits:
        raise UsageError(f"--split {requested}: {dataset} has no such split; it has {listed}")
    if requested is not None:
        return requested
    if len(splits) == 1:
        return splits[0]
    if "test" in splits:
        return "test"
    raise UsageError(f"{dataset} has several splits ({listed}): pick one with --split")


def cmd_eval(args: argparse.Namespace) -> int:
    """Index a BEIR-layout dataset and print retrieval metrics per mode, or with
    --conversations score multi-turn conversations against their standalone questions."""
    from service.embedding import embedder_for
    from service.evaluation import MODES, evaluate, table
    from service.metrics import beir_files

    settings = _settings(args)
    if args.conversations is not None:
        return _eval_conversations(args, settings)
    args.split = eval_split(args.dataset, args.split)
    beir_files(args.dataset, args.split)  # a missing file fails before the model loads
    embedder = embedder_for(settings)
    modes = [args.mode] if args.mode else list(MODES)
    result = evaluate(
        args.dataset,
        args.split,
        settings,
        embedder,
        modes=modes,
        cache_dir=args.cache,
        progress=not args.json and sys.stderr.isatty(),
    )
    print(json.dumps(result, sort_keys=True) if args.json else table(result))
    return 0


def _eval_conversations(args: argparse.Namespace, settings: Settings) -> int:
    """The conversational mode of `groundqa eval`."""
    from service.embedding import embedder_for
    from service.evaluation import (
        conversation_json,
        conversation_table,
        evaluate_conversations,
        is_beir,
        load_conversations,
    )
    from service.metrics import beir_files

    # Before the model loads: a wrong file or folder fails at once.
    conversations = load_conversations(args.conversations)
    if is_beir(args.dataset):
        args.split = eval_split(args.dataset, args.split)
        beir_files(args.dataset, args.split)
    elif not args.dataset.is_dir():
        raise DatasetError(f"{args.dataset} is neither a BEIR dataset nor a folder of seeds")
    report = evaluate_conversations(
        args.dataset,
        conversations,
        settings,
        embedder_for(settings),
        split=args.split or "test",  # used only by BEIR datasets
        conversations_file=str(args.conversations),
        mode=args.mode,
        cache_dir=args.cache,
        progress=not args.json and sys.stderr.isatty(),
    )
    if args.json:
        print(json.dumps(conversation_json(report), sort_keys=True))
    else:
        print(conversation_table(report))
    return 0


def _keys_file(args: argparse.Namespace) -> Path:
    """The keys file: --file, else GROUNDQA_KEYS_FILE."""
    path: Path | None = args.file or settings_of({}).keys_file
    if path is None:
        raise KeysFileError("no keys file: set GROUNDQA_KEYS_FILE or pass --file PATH")
    return path


def _expiry(value: str) -> date:
    """A --expires date (YYYY-MM-DD)."""
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {value!r}") from None


def cmd_keys_add(args: argparse.Namespace) -> int:
    """Create a key, store its hash, print the key once."""
    from service.keys import add_key

    path = _keys_file(args)
    key = add_key(
        path,
        args.name,
        args.collections.split(","),
        sources=[s for s in (args.sources or "").split(",") if s],
        admin=args.admin,
        expires=args.expires,
    )
    if args.json:
        print(json.dumps({"name": args.name, "key": key}))
    else:
        print(key)
        print(
            f"Key {args.name!r} added to {path}. It is shown only now: only its hash is stored.",
            file=sys.stderr,
        )
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    """The keys of the file (names and scopes, never keys or hashes)."""
    from service.keys import read_keys

    entries = read_keys(_keys_file(args)).values()
    rows = [
        {
            "name": e.name,
            "collections": list(e.collections),
            "sources": list(e.sources),
            "admin": e.admin,
            "expires": e.expires.isoformat() if e.expires else None,
            "created": e.created or None,
        }
        for e in entries
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("No keys.")
    for e in entries:
        extras = [f"sources {','.join(e.sources)}"] if e.sources else []
        extras += ["admin"] if e.admin else []
        extras += [f"expires {e.expires}"] if e.expires else []
        tail = f" ({'; '.join(extras)})" if extras else ""
        print(f"{e.name}: {','.join(e.collections)}{tail}")
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    """Remove a key; a running server refuses it once it reloads the file."""
    from service.keys import revoke_key

    path = _keys_file(args)
    revoke_key(path, args.name)
    print(f"Key {args.name!r} revoked in {path}.", file=sys.stderr)
    return 0


def build_parser(settings: Settings | None = None) -> argparse.ArgumentParser:
    """The argument parser of the groundqa command; its help shows the defaults of settings
    (the environment's, when the caller built them from it)."""
    settings = settings or Settings.model_construct()  # built-in defaults, no environment
    parser = Parser(prog="groundqa", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def default(name: str) -> str:
        return _default(settings, name)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--seeds",
            dest="seeds_dir",
            type=Path,
            metavar="FOLDER",
            help=f"seeds folder ({default('seeds_dir')})",
        )
        p.add_argument(
            "--index",
            dest="index_dir",
            type=Path,
            metavar="FOLDER",
            help=f"index folder ({default('index_dir')})",
        )

    p = sub.add_parser("index", help="build or update the index from the seeds folder")
    common(p)
    p.add_argument("--full", action="store_true", help="re-embed everything, ignoring the cache")
    p.add_argument("--dry-run", action="store_true", help="print the plan without writing")
    p.add_argument(
        "--json", action="store_true", help="print the summary as one JSON object (no progress)"
    )
    p.add_argument(
        "--engine",
        choices=["local", "ray"],
        default="local",
        help="where files are chunked and embedded: this process, or a Ray cluster "
        "(needs groundqa[ray]; default: local)",
    )
    p.add_argument(
        "--ray-address",
        dest="ray_address",
        metavar="ADDRESS",
        help=f"Ray cluster to join ({default('ray_address')}; none: a local cluster)",
    )
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("ask", help="answer a question from the index")
    common(p)
    p.add_argument("question", help="the question (1-2000 characters)")
    p.add_argument("--top-k", type=int, metavar="N", help=f"passages, 1-50 ({default('top_k')})")
    p.add_argument(
        "--mode",
        choices=["hybrid", "dense", "keyword"],
        help=f"retrieval ({default('mode')})",
    )
    p.add_argument("--json", action="store_true", help="print the API's JSON body")
    p.set_defaults(func=cmd_ask)

    p = sub.add_parser("verify", help="check which sentences of a text the documents support")
    common(p)
    p.add_argument("text", help="the text to check, or - to read it from stdin")
    p.add_argument(
        "--source", action="append", metavar="GLOB", help="search only these sources (repeatable)"
    )
    p.add_argument("--json", action="store_true", help="print the API's JSON body")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("serve", help="serve HTTP, building the index first if missing or stale")
    common(p)
    p.add_argument("--host", help=f"address to bind ({default('host')})")
    p.add_argument("--port", type=int, help=f"port to bind ({default('port')})")
    p.add_argument(
        "--watch",
        action="store_true",
        help=f"rebuild when the seeds folder changes ({default('watch')})",
    )
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("eval", help="score retrieval on a BEIR-layout dataset")
    p.add_argument(
        "dataset",
        type=Path,
        help="folder with corpus.jsonl, queries.jsonl, qrels/ (with --conversations also a "
        "seeds folder)",
    )
    p.add_argument(
        "--split",
        help="qrels/<split>.tsv to use (default: the only split in qrels/, else test)",
    )
    p.add_argument(
        "--mode",
        choices=["hybrid", "dense", "keyword"],
        help=f"default: all three (with --conversations: {settings.mode})",
    )
    p.add_argument(
        "--conversations",
        type=Path,
        metavar="FILE",
        help="score the multi-turn conversations of FILE (see bench/conversations/README.md) "
        "by turn position, next to their standalone questions",
    )
    p.add_argument(
        "--cache",
        type=Path,
        metavar="FOLDER",
        help=f"folder for the dataset's index (default: {settings.cache_dir / 'eval'})",
    )
    p.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    p.set_defaults(func=cmd_eval)

    keys = sub.add_parser("keys", help="named, scoped API keys in GROUNDQA_KEYS_FILE")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)

    def keys_file(p: argparse.ArgumentParser) -> None:
        p.add_argument("--file", type=Path, help=f"keys file ({default('keys_file')})")

    p = keys_sub.add_parser("add", help="create a key and print it once")
    keys_file(p)
    p.add_argument("name", help="the key's name (A-Z a-z 0-9 _ -), shown in the audit log")
    p.add_argument(
        "--collections", required=True, help="comma-separated collections it sees, or '*'"
    )
    p.add_argument("--sources", help="comma-separated globs over sources, within them")
    p.add_argument("--admin", action="store_true", help="may rebuild the index, read /metrics")
    p.add_argument("--expires", type=_expiry, metavar="YYYY-MM-DD", help="last valid day (UTC)")
    p.add_argument("--json", action="store_true", help='print {"name": ..., "key": ...}')
    p.set_defaults(func=cmd_keys_add)

    p = keys_sub.add_parser("list", help="the keys' names and scopes")
    keys_file(p)
    p.add_argument("--json", action="store_true", help="print a JSON list")
    p.set_defaults(func=cmd_keys_list)

    p = keys_sub.add_parser("revoke", help="remove a key (a running server refuses it at once)")
    keys_file(p)
    p.add_argument("name", help="the name of the key to remove")
    p.set_defaults(func=cmd_keys_revoke)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; domain errors become one line on stderr and a non-zero exit code."""
    try:
        environment = settings_of({})  # for --help's defaults; the commands add the options
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    args = build_parser(environment).parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("groundqa").setLevel(logging.INFO)
    try:
        code: int = args.func(args)
    except BuildInProgressError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BUSY
    except GroundQAError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as exc:  # the system refused something no domain error anticipated
        where = f": {exc.filename}" if exc.filename else ""
        print(f"error: {exc.strerror or exc}{where}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
