#!/usr/bin/env python3
"""The Anthropic Python SDK's AnthropicBedrock as a long-lived client: messages.create,
plain and streamed, in turn.

The key comes from AWS_BEARER_TOKEN_BEDROCK, read once and passed as `api_key` (the SDK
sends it as `Authorization: Bearer`); the endpoint is `base_url`, its CA --ca.

    AWS_BEARER_TOKEN_BEDROCK=… python3 anthropic_client.py --endpoint https://127.0.0.1:PORT --ca cert.pem
"""
import anthropic

import common


def main() -> int:
    args = common.parse_args(__doc__.splitlines()[0])
    http_client = anthropic.DefaultHttpxClient(verify=args.ca) if args.ca else None
    client = anthropic.AnthropicBedrock(
        base_url=args.endpoint,
        api_key=common.require_env("AWS_BEARER_TOKEN_BEDROCK"),
        aws_region=args.region,
        http_client=http_client,
        max_retries=0,
        timeout=30,
    )
    messages = [{"role": "user", "content": "hello"}]

    def create():
        out = client.messages.create(model=args.model, max_tokens=64, messages=messages)
        assert out.content[0].text, "empty answer"

    def stream():
        with client.messages.stream(model=args.model, max_tokens=64, messages=messages) as s:
            text = "".join(s.text_stream)
        assert text, "empty stream"

    calls = [("messages.create", create)]
    if not args.no_stream:
        calls.append(("messages.stream", stream))
    return common.loop(args, calls)


if __name__ == "__main__":
    raise SystemExit(main())
