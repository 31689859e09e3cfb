#!/usr/bin/env python3
"""Streams a completion from a `facet serve` over gRPC (facet.v1.Facet).

Needs `pip install grpcio grpcio-tools`. The Python stubs are generated from
proto/facet/v1/facet.proto into a temporary folder at start-up, so nothing
generated is checked in; see examples/README.md for generating them once.

    python3 examples/python_client.py --addr 127.0.0.1:50051 --prompt "Why is the sky blue?" --chat
    python3 examples/python_client.py --prompt-ids 2,40,41,42 --max-tokens 8
    python3 examples/python_client.py --health
"""
import argparse
import importlib
import os
import sys
import tempfile

import grpc
from grpc_tools import protoc

PROTO_ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "proto")


def load_stubs():
    """Compiles facet/v1/facet.proto and imports (facet_pb2, facet_pb2_grpc)."""
    out = tempfile.mkdtemp(prefix="facet_stubs_")
    # grpc_tools ships the well-known protos; facet.proto imports none, but
    # keep its include path so it would work if it did.
    well_known = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    rc = protoc.main([
        "protoc",
        f"--proto_path={PROTO_ROOT}",
        f"--proto_path={well_known}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        os.path.join(PROTO_ROOT, "facet", "v1", "facet.proto"),
    ])
    if rc != 0:
        sys.exit(f"protoc failed on {PROTO_ROOT}/facet/v1/facet.proto (exit {rc})")
    sys.path.insert(0, out)
    return (importlib.import_module("facet.v1.facet_pb2"),
            importlib.import_module("facet.v1.facet_pb2_grpc"))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--addr", default="127.0.0.1:50051", help="server HOST:PORT")
    ap.add_argument("--model", default="", help="model name (default: the server's only model)")
    ap.add_argument("--prompt", default="", help="prompt text (the user message with --chat)")
    ap.add_argument("--prompt-ids", default="", help="prompt as comma-separated token ids")
    ap.add_argument("--chat", action="store_true", help="send the prompt as a user message (Chat RPC)")
    ap.add_argument("--max-tokens", type=int, default=0, help="0: the server's default")
    ap.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--timeout", type=float, default=None, help="deadline in seconds")
    ap.add_argument("--health", action="store_true", help="print the server's health and exit")
    args = ap.parse_args()

    pb, pb_grpc = load_stubs()
    stub = pb_grpc.FacetStub(grpc.insecure_channel(args.addr))

    try:
        if args.health:
            h = stub.Health(pb.HealthRequest(model=args.model), timeout=args.timeout or 30)
            print(f"{pb.HealthResponse.ServingStatus.Name(h.status)}: {h.message}")
            return 0 if h.status == pb.HealthResponse.SERVING else 1

        sampling = pb.SamplingParams(temperature=args.temperature)
        if args.max_tokens:
            sampling.max_tokens = args.max_tokens
        if args.seed is not None:
            sampling.seed = args.seed
        if args.chat:
            request = pb.ChatRequest(model=args.model, sampling=sampling,
                                     messages=[pb.ChatMessage(role="user", content=args.prompt)])
            stream = stub.Chat(request, timeout=args.timeout)
        else:
            ids = [int(x) for x in args.prompt_ids.split(",") if x]
            request = pb.GenerateRequest(model=args.model, prompt=args.prompt,
                                         prompt_token_ids=ids, sampling=sampling)
            stream = stub.Generate(request, timeout=args.timeout)

        ids, text, last = [], "", None
        for chunk in stream:  # one chunk per engine step, as tokens are produced
            ids.extend(chunk.token_ids)
            text += chunk.text
            print(chunk.text, end="", flush=True)
            last = chunk
        if not text:
            print(" ".join(map(str, ids)), end="")  # a model served without a tokenizer
        print()
        print(f"[{last.usage.prompt_tokens} prompt tokens, {last.usage.completion_tokens} generated, "
              f"{pb.FinishReason.Name(last.finish_reason)}]", file=sys.stderr)
        return 0
    except grpc.RpcError as e:
        print(f"python_client: {e.code().name}: {e.details()}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
