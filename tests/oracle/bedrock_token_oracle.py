#!/usr/bin/env python3
"""The official generator as a test oracle.

Reads JSON lines on stdin, one signing case each:
  {"access_key_id": ..., "secret_access_key": ..., "session_token": null | "...",
   "region": "us-west-2", "expires": 3600, "signed_at": 1795680000}
and prints, for each, the key that aws-bedrock-token-generator's `_generate_token`
makes when botocore's clock is frozen at `signed_at` (Unix seconds, UTC).

Used by tests/it/interop.rs; run by hand to regenerate fixtures:
  echo '{"access_key_id":"AKIDEXAMPLE",...}' | python3 tests/oracle/bedrock_token_oracle.py
"""
import datetime
import json
import sys
from unittest import mock

import botocore.auth
from botocore.credentials import Credentials
from aws_bedrock_token_generator.token_generator import _generate_token


def main() -> None:
    for line in sys.stdin:
        if not line.strip():
            continue
        case = json.loads(line)
        instant = datetime.datetime.fromtimestamp(case["signed_at"], tz=datetime.timezone.utc)
        creds = Credentials(case["access_key_id"], case["secret_access_key"], case.get("session_token"))
        with mock.patch.object(botocore.auth, "get_current_datetime", return_value=instant):
            print(_generate_token(creds, case["region"], int(case["expires"])))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
