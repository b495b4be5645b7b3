"""`a2tgpo serve-retriever`: a Search-R1-compatible retrieval server over a jsonl corpus
(BM25; see a2tgpo/envs/retrieval_server.py for the API)."""

from __future__ import annotations

from pathlib import Path

import typer

from a2tgpo.cli_common import app


@app.command("serve-retriever")
def serve_retriever(
    corpus: Path = typer.Option(
        ...,
        exists=True,
        dir_okay=False,
        readable=True,
        help='jsonl of passages: {"id"?, "contents": "Title\\ntext"} or {"id"?, "title", "text"}.',
    ),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (0.0.0.0 in a pod)."),
    port: int = typer.Option(8000, min=1, max=65535, help="Port to listen on."),
    cache_dir: Path = typer.Option(
        None, help="bm25 index cache (default $A2TGPO_CACHE, else ~/.cache/a2tgpo)."
    ),
    topk_default: int = typer.Option(3, min=1, help="topk when a request gives none."),
    topk_max: int = typer.Option(100, min=1, help="Largest topk a request may ask for."),
    max_queries: int = typer.Option(4096, min=1, help="Most queries in one request."),
    max_query_chars: int = typer.Option(4096, min=1, help="Longest query, in characters."),
    max_body_bytes: int = typer.Option(8 << 20, min=1, help="Largest request body."),
    max_connections: int = typer.Option(
        256, min=1, help="Concurrent connections; more are answered 503."
    ),
) -> None:
    """Serve POST /retrieve (Search-R1's API) and GET /health from a bm25s index."""
    from a2tgpo.data.directories import local_cache_dir
    from a2tgpo.envs.retrieval_server import Limits, load_corpus, serve

    if topk_default > topk_max:
        raise typer.BadParameter(f"--topk-default {topk_default} is over --topk-max {topk_max}")
    limits = Limits(topk_default, topk_max, max_queries, max_query_chars, max_body_bytes)
    try:
        passages = load_corpus(corpus)
    except ValueError as error:  # a bad line or an empty file: say where, no traceback
        raise typer.BadParameter(str(error), param_hint="--corpus") from None
    serve(passages, host, port, cache_dir or local_cache_dir(), limits, max_connections)
