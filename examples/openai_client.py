#!/usr/bin/env python3
"""Talks to `facet serve --http-port` with the official `openai` package.

  pip install openai      # or use ~/.cache/facet/venv-test (scripts/setup-python.sh)
  facet serve --model ~/.cache/facet/gemma3-270m/gemma-3-270m-q4_k_m.gguf --http-port 8080 &
  python3 examples/openai_client.py --url http://127.0.0.1:8080 --prompt "Why is the sky blue?"
"""
import argparse

import openai


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument("--prompt", default="Why is the sky blue?")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--seed", type=int)
    args = ap.parse_args()
    # Facet checks no API key; the client insists on one.
    client = openai.OpenAI(base_url=args.url + "/v1", api_key="unused")
    model = client.models.list().data[0].id
    stream = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": args.prompt}], max_tokens=args.max_tokens,
        temperature=args.temperature, seed=args.seed, stream=True, stream_options={"include_usage": True})
    for chunk in stream:
        for choice in chunk.choices:
            print(choice.delta.content or "", end="", flush=True)
        if chunk.usage:
            print(f"\n[{chunk.usage.prompt_tokens} prompt + {chunk.usage.completion_tokens} completion tokens]")


if __name__ == "__main__":
    main()
