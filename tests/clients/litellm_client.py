#!/usr/bin/env python3
"""LiteLLM (the Python SDK) as a long-lived Bedrock client reading its key from a file.

A deployment with `api_key: "oidc/file/<path>"` makes LiteLLM re-read the file on every
call and send its content verbatim (no strip) as the bearer token: the way a LiteLLM
deployment picks up a key file that bedrock-keyd rotates (a shared volume under
/run/secrets next to the sidecar). LiteLLM 1.110 resolves such references only in
deployments an admin configured (its Router's model_list, as the LiteLLM proxy's
config.yaml gives them), not in a plain `litellm.completion(api_key=...)`, so this
client calls through a Router, as the proxy does. The directory must be allowed by LITELLM_OIDC_ALLOWED_CREDENTIAL_DIRS (default
/run/secrets, /var/run/secrets). Converse through `bedrock/converse/<model>`, plain and
streamed in turn, with `aws_bedrock_runtime_endpoint` as the base URL.

    LITELLM_OIDC_ALLOWED_CREDENTIAL_DIRS=DIR python3 litellm_client.py --endpoint URL --key-file DIR/bedrock.key --ca cert.pem
"""
import os
import sys

import common


def main() -> int:
    sys.argv, key_file = strip_key_file(sys.argv)
    args = common.parse_args(__doc__.splitlines()[0])
    # LiteLLM's own logging and telemetry stay off: the output is the ok/fail lines.
    os.environ.setdefault("LITELLM_LOG", "ERROR")
    # Offline: its bundled model cost map and tokenizers, no fetch of its own (tests talk
    # to 127.0.0.1 only).
    os.environ.setdefault("LITELLM_OFFLINE_MODE", "true")
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    litellm.telemetry = False
    litellm.suppress_debug_info = True
    if args.ca:
        litellm.ssl_verify = args.ca
    router = litellm.Router(
        model_list=[{
            "model_name": "bedrock-model",
            "litellm_params": {
                "model": f"bedrock/converse/{args.model}",
                "api_key": f"oidc/file/{os.path.abspath(key_file)}",
                "aws_region_name": args.region,
                "aws_bedrock_runtime_endpoint": args.endpoint,
            },
        }],
        num_retries=0,
        timeout=30,
    )
    kwargs = dict(model="bedrock-model", messages=[{"role": "user", "content": "hello"}], max_tokens=64)

    def completion():
        out = router.completion(**kwargs)
        assert out.choices[0].message.content, "empty answer"

    def stream():
        text = "".join((chunk.choices[0].delta.content or "") for chunk in router.completion(stream=True, **kwargs))
        assert text, "empty stream"

    calls = [("completion", completion)]
    if not args.no_stream:
        calls.append(("completion.stream", stream))
    return common.loop(args, calls)


def strip_key_file(argv: list) -> tuple:
    """Takes `--key-file PATH` out of argv (the shared parser does not know it)."""
    if "--key-file" not in argv:
        sys.exit("--key-file is required")
    i = argv.index("--key-file")
    return argv[:i] + argv[i + 2:], argv[i + 1]


if __name__ == "__main__":
    raise SystemExit(main())
