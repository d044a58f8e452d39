"""Drives wsgate's management API with boto3's apigatewaymanagementapi client, exactly as
a backend on AWS would. Prints one JSON object with what happened; the Rust test checks
it and the WebSocket side.

usage: aws_sdk.py ENDPOINT CONNECTION_ID
"""
import json
import sys

import boto3
from botocore.config import Config


def client(endpoint, key, secret):
    return boto3.client(
        "apigatewaymanagementapi",
        endpoint_url=endpoint,
        region_name="eu-central-1",
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        config=Config(retries={"max_attempts": 1}),
    )


def raised(call, exception):
    try:
        call()
    except exception:
        return True
    return False


def main():
    endpoint, connection_id = sys.argv[1], sys.argv[2]
    demo = client(endpoint, "AKIDDEMO", "demo-secret")
    results = {}
    demo.post_to_connection(ConnectionId=connection_id, Data=b"from boto3")
    info = demo.get_connection(ConnectionId=connection_id)
    results["connected_at"] = info["ConnectedAt"].isoformat()
    results["last_active_at"] = info["LastActiveAt"].isoformat()
    results["source_ip"] = info["Identity"]["SourceIp"]
    results["gone"] = raised(
        lambda: demo.post_to_connection(ConnectionId="no-such-connection", Data=b"x"),
        demo.exceptions.GoneException,
    )
    results["too_large"] = raised(
        lambda: demo.post_to_connection(ConnectionId=connection_id, Data=b"x" * 131073),
        demo.exceptions.PayloadTooLargeException,
    )
    wrong = client(endpoint, "AKIDDEMO", "not-the-secret")
    results["wrong_secret_forbidden"] = raised(
        lambda: wrong.post_to_connection(ConnectionId=connection_id, Data=b"x"),
        wrong.exceptions.ForbiddenException,
    )
    acme = client(endpoint, "AKIDACME", "acme-secret")
    results["other_tenant_forbidden"] = raised(
        lambda: acme.post_to_connection(ConnectionId=connection_id, Data=b"x"),
        acme.exceptions.ForbiddenException,
    )
    demo.delete_connection(ConnectionId=connection_id)
    results["gone_after_delete"] = raised(
        lambda: demo.get_connection(ConnectionId=connection_id),
        demo.exceptions.GoneException,
    )
    print(json.dumps(results))


main()
