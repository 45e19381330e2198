"""The official Python generator doing bedrock-keyd's `once` job: credentials from the
default chain, one key, written atomically (temp file, fsync, rename, fsync of the
directory). Usage: python_once.py TARGET"""
import os
import sys
import tempfile

import botocore.session
from aws_bedrock_token_generator import BedrockTokenGenerator

session = botocore.session.get_session()
token = BedrockTokenGenerator().get_token(session.get_credentials(), session.get_config_variable("region"))
target = sys.argv[1]
directory = os.path.dirname(os.path.abspath(target))
fd, tmp = tempfile.mkstemp(dir=directory)
os.write(fd, (token + "\n").encode())
os.fsync(fd)
os.close(fd)
os.replace(tmp, target)
dfd = os.open(directory, os.O_RDONLY)
os.fsync(dfd)
os.close(dfd)
