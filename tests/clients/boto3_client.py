#!/usr/bin/env python3
"""boto3 `bedrock-runtime` as a long-lived client: Converse and ConverseStream in turn.

The key comes from AWS_BEARER_TOKEN_BEDROCK, read once when the client is created (as
botocore does: it freezes the token); the endpoint's CA from --ca / AWS_CA_BUNDLE.
botocore sends a bearer token only over HTTPS.

    AWS_BEARER_TOKEN_BEDROCK=… python3 boto3_client.py --endpoint https://127.0.0.1:PORT --ca cert.pem
"""
import boto3
from botocore.config import Config

import common


def main() -> int:
    args = common.parse_args(__doc__.splitlines()[0])
    common.require_env("AWS_BEARER_TOKEN_BEDROCK")
    client = boto3.client(
        "bedrock-runtime",
        region_name=args.region,
        endpoint_url=args.endpoint,
        verify=args.ca,
        config=Config(retries={"max_attempts": 1}, connect_timeout=5, read_timeout=30),
    )
    messages = [{"role": "user", "content": [{"text": "hello"}]}]

    def converse():
        out = client.converse(modelId=args.model, messages=messages)
        assert out["output"]["message"]["content"][0]["text"], "empty answer"

    def converse_stream():
        out = client.converse_stream(modelId=args.model, messages=messages)
        kinds = [next(iter(ev)) for ev in out["stream"]]
        assert "contentBlockDelta" in kinds and kinds[-1] == "metadata", f"events {kinds}"

    calls = [("converse", converse)]
    if not args.no_stream:
        calls.append(("converse_stream", converse_stream))
    return common.loop(args, calls)


if __name__ == "__main__":
    raise SystemExit(main())
