"""The official Python generator doing `bedrock-keyd token`'s job when no key is held:
credentials from the default chain, one key, printed. Usage: python_token.py"""
import botocore.session
from aws_bedrock_token_generator import BedrockTokenGenerator

session = botocore.session.get_session()
print(BedrockTokenGenerator().get_token(session.get_credentials(), session.get_config_variable("region")))
