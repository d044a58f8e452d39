"""Drives wsgate's management API over HTTPS with boto3's apigatewaymanagementapi
client, verifying the gateway's certificate against the CA the test generated
(`verify=`), as a backend would against a gateway with a private CA. Prints one JSON
object with what happened; the Rust test (tests/e2e/tls.rs) checks it and the WebSocket
side.

usage: tls_boto3.py ENDPOINT CONNECTION_ID CA_FILE ACCESS_KEY_ID SECRET_ACCESS_KEY
"""
import json
import sys

import boto3
from botocore.config import Config
from botocore.exceptions import SSLError


def client(endpoint, verify, key, secret):
    return boto3.client(
        "apigatewaymanagementapi",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        verify=verify,
        config=Config(retries={"max_attempts": 1}),
    )


def main():
    endpoint, connection_id, ca_file, key, secret = sys.argv[1:6]
    results = {}
    # With boto3's own CA bundle the test's CA is unknown: the certificate is refused.
    try:
        client(endpoint, True, key, secret).get_connection(ConnectionId=connection_id)
        results["untrusted_refused"] = False
    except SSLError:
        results["untrusted_refused"] = True
    api = client(endpoint, ca_file, key, secret)
    api.post_to_connection(ConnectionId=connection_id, Data=b"from boto3 over https")
    info = api.get_connection(ConnectionId=connection_id)
    results["source_ip"] = info["Identity"]["SourceIp"]
    print(json.dumps(results))


main()
