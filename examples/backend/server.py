#!/usr/bin/env python3
"""The example backend behind wsgate's integration plugin: one HTTP server, three shapes.

    client A ──ws──▶ wsgate ──POST /aws, one per event──▶ backend
    client A ◀──ws── wsgate ◀──the HTTP response: the reply──┘   │
    client B ◀──ws── wsgate ◀──POST /demo/@connections/B─────────┘ (boto3; Yandex's API:
                                                                    connections/B:send)

Every connect, message and disconnect of a route becomes one POST here. What the
response carries goes back to the client that sent the message. To reach any other
client the backend calls the gateway's management API, exactly as it would call AWS
or Yandex: boto3's `post_to_connection`, or Yandex's `connections/{id}:send`.

    POST /authorize  AWS REQUEST authorizer: allows ?token=let-me-in
    POST /aws        AWS Lambda event in, Lambda return value out (aws_handler is a Lambda)
    POST /yandex     the frame in, the reply out; X-Yc-Apigateway-Websocket-* headers
    POST /west       West Connectivity websocketInfo in, {"send": [...], "close": {...}} out
    GET  /health     OK

On /aws and /yandex, `{"action":"broadcast","text":"hi"}` sends "hi" to every other
connection of that route and answers "sent to N"; anything else is echoed as
"echo: <message>". On /west, "bye" closes the connection with 1000.

    usage: server.py [--port 7070] [--management-url http://127.0.0.1:9090] [--key demo-key]

The AWS route takes the management endpoint from each event, http://{domainName}/{stage}
(https when --management-url is https), and signs with the usual AWS variables, else
the example's AKIDDEMO / demo-secret. The Yandex route posts to --management-url with
the bearer key --key (WSGATE_KEY, else demo-key). Connection ids are kept in memory:
a real backend keeps them in a table.
"""
import argparse
import base64
import json
import os
import sys
import threading
from urllib.error import HTTPError
from urllib.parse import quote, urlsplit
from urllib.request import Request, urlopen

import boto3
from botocore.config import Config

from lambda_adapter import JsonHandler, lambda_route, serve

DEMO_TOKEN = "let-me-in"
MANAGEMENT_URL = "http://127.0.0.1:9090"  # set from --management-url
BEARER_KEY = "demo-key"  # set from --key


def log(line):
    print(f"backend: {line}", file=sys.stderr, flush=True)


class Connections:
    """The ids of one route's open connections, learnt from CONNECT and DISCONNECT."""

    def __init__(self):
        self._ids = set()
        self._lock = threading.Lock()

    def add(self, connection_id):
        with self._lock:
            self._ids.add(connection_id)

    def forget(self, connection_id):
        with self._lock:
            self._ids.discard(connection_id)

    def others(self, connection_id):
        with self._lock:
            return sorted(self._ids - {connection_id})


def broadcast_text(message):
    """The text of {"action":"broadcast","text":"..."}, else None."""
    try:
        parsed = json.loads(message)
    except ValueError:
        return None
    if isinstance(parsed, dict) and parsed.get("action") == "broadcast":
        text = parsed.get("text")
        return text if isinstance(text, str) else None
    return None


# ------------------------------------------------------------------- AWS: authorizer


def authorize(event, context=None):
    """A Lambda REQUEST authorizer: the query's `token` must be let-me-in."""
    token = (event.get("queryStringParameters") or {}).get("token")
    if not token:
        raise Exception("Unauthorized")  # Lambda's way to answer 401
    allowed = token == DEMO_TOKEN
    log(f"authorize token={'ok' if allowed else 'wrong'}")
    policy = {
        "principalId": "demo-user" if allowed else "unknown",
        "policyDocument": {
            "Version": "2012-10-17",
            "Statement": [{
                "Action": "execute-api:Invoke",
                "Effect": "Allow" if allowed else "Deny",
                "Resource": event["methodArn"],
            }],
        },
    }
    if allowed:
        policy["context"] = {"user": "demo-user", "plan": "free"}
    return policy


# ------------------------------------------------------------ AWS: the Lambda handler

AWS_CONNECTIONS = Connections()
SESSION = boto3.session.Session(
    aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "AKIDDEMO"),
    aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "demo-secret"),
    region_name=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
)
CLIENT_CONFIG = Config(retries={"max_attempts": 2}, connect_timeout=2, read_timeout=5)
_clients = {}
_clients_lock = threading.Lock()  # a boto3 session is not thread-safe; its clients are


def management_api(event):
    """boto3's client for the event's tenant: {scheme}://{domainName}/{stage}."""
    request = event["requestContext"]
    scheme = urlsplit(MANAGEMENT_URL).scheme
    endpoint = f"{scheme}://{request['domainName']}/{request['stage']}"
    with _clients_lock:
        if endpoint not in _clients:
            _clients[endpoint] = SESSION.client(
                "apigatewaymanagementapi", endpoint_url=endpoint, config=CLIENT_CONFIG)
        return _clients[endpoint]


def aws_handler(event, context=None):
    """A Lambda handler for $connect, $disconnect and messages (one route in wsgate)."""
    request = event["requestContext"]
    kind, connection_id = request["eventType"], request["connectionId"]
    principal = (request.get("authorizer") or {}).get("principalId")
    log(f"aws {kind} {connection_id}" + (f" principal={principal}" if principal else ""))
    if kind == "CONNECT":
        return aws_connect(event)
    if kind == "DISCONNECT":
        AWS_CONNECTIONS.forget(connection_id)
        return {"statusCode": 200}
    return aws_message(event)


def aws_connect(event):
    query = event.get("queryStringParameters") or {}
    if query.get("refuse") == "1":
        return {"statusCode": 403, "body": "refused by the backend (refuse=1)"}
    AWS_CONNECTIONS.add(event["requestContext"]["connectionId"])
    response = {"statusCode": 200}
    if "chat.v1" in offered_subprotocols(event):
        response["headers"] = {"Sec-WebSocket-Protocol": "chat.v1"}
    return response


def offered_subprotocols(event):
    offered = []
    for name, values in (event.get("multiValueHeaders") or {}).items():
        if name.lower() == "sec-websocket-protocol":
            offered += values
    for name, value in (event.get("headers") or {}).items():
        if name.lower() == "sec-websocket-protocol":
            offered.append(value)
    return {p.strip() for value in offered for p in value.split(",")}


def aws_message(event):
    body = event.get("body") or ""
    if event.get("isBase64Encoded"):  # a binary message: back as it came
        return {"statusCode": 200, "body": body, "isBase64Encoded": True}
    text = broadcast_text(body)
    if text is None:
        return {"statusCode": 200, "body": f"echo: {body}"}
    api = management_api(event)
    sent = 0
    for other in AWS_CONNECTIONS.others(event["requestContext"]["connectionId"]):
        try:
            api.post_to_connection(ConnectionId=other, Data=text.encode())
            sent += 1
        except api.exceptions.GoneException:  # closed before its DISCONNECT reached us
            AWS_CONNECTIONS.forget(other)
    return {"statusCode": 200, "body": f"sent to {sent}"}


# --------------------------------------------------------------------------- Yandex

YANDEX_CONNECTIONS = Connections()


def yandex_handler(headers, body):
    """One event of Yandex's HTTP integration. Returns (status, content type, body)."""
    kind = headers.get("X-Yc-Apigateway-Websocket-Event-Type", "")
    connection_id = headers.get("X-Yc-Apigateway-Websocket-Connection-Id", "")
    log(f"yandex {kind} {connection_id}")
    if kind == "CONNECT":
        YANDEX_CONNECTIONS.add(connection_id)
        return 200, "text/plain", b""
    if kind == "DISCONNECT":
        YANDEX_CONNECTIONS.forget(connection_id)
        return 200, "text/plain", b""
    if headers.get("Content-Type", "").startswith("application/octet-stream"):
        return 200, "application/octet-stream", body  # a binary message: back as it came
    message = body.decode("utf-8")
    text = broadcast_text(message)
    if text is None:
        return 200, "text/plain; charset=utf-8", f"echo: {message}".encode()
    sent = 0
    for other in YANDEX_CONNECTIONS.others(connection_id):
        if yandex_send(other, text):
            sent += 1
        else:
            YANDEX_CONNECTIONS.forget(other)
    return 200, "text/plain; charset=utf-8", f"sent to {sent}".encode()


def yandex_send(connection_id, text):
    """POST …/connections/{id}:send, as Yandex's REST API. False when the id is gone."""
    url = f"{MANAGEMENT_URL}/apigateways/websocket/v1/connections/{quote(connection_id, safe='')}:send"
    data = json.dumps({"data": base64.b64encode(text.encode()).decode(), "type": "TEXT"})
    request = Request(url, data=data.encode(), method="POST", headers={
        "Authorization": f"Bearer {BEARER_KEY}", "Content-Type": "application/json"})
    try:
        with urlopen(request, timeout=5):
            return True
    except HTTPError as error:
        if error.code == 404:  # gRPC code 5, NOT_FOUND: the connection is gone
            return False
        raise


# ----------------------------------------------------------------------------- West


def west_handler(info):
    """One websocketInfo event. The answer does what websocketInfo.send/close would."""
    log(f"west {info.get('type')} {info.get('socket_id')}")
    if info.get("type") != "data":
        return {}  # open, close
    message = info.get("message", "")
    if info.get("message_type") == "data-binary":  # base64 both ways
        return {"send": [{"type": "binary", "data": message}]}
    if message == "bye":
        return {"close": {"code": 1000, "reason": "bye"}}
    return {"send": [{"type": "text", "data": f"echo: {message}"}]}


# ------------------------------------------------------------------------------ HTTP


def yandex_route(request, body):
    return yandex_handler(request.headers, body)


def west_route(_request, body):
    return 200, "application/json", json.dumps(west_handler(json.loads(body))).encode()


class Backend(JsonHandler):
    routes = {
        "/authorize": lambda_route(authorize),
        "/aws": lambda_route(aws_handler),
        "/yandex": yandex_route,
        "/west": west_route,
    }


def main():
    global MANAGEMENT_URL, BEARER_KEY
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("BACKEND_PORT") or 7070),
                        help="0 picks a free port (default: BACKEND_PORT, else 7070)")
    parser.add_argument("--management-url",
                        default=os.environ.get("WSGATE_MANAGEMENT_URL", MANAGEMENT_URL),
                        help="the gateway's admin listener (default: WSGATE_MANAGEMENT_URL, else %(default)s)")
    parser.add_argument("--key", default=os.environ.get("WSGATE_KEY") or BEARER_KEY,
                        help="bearer key for the Yandex API (default: WSGATE_KEY, else demo-key)")
    args = parser.parse_args()
    MANAGEMENT_URL, BEARER_KEY = args.management_url.rstrip("/"), args.key
    # Load boto3's service model now, so the first broadcast does not pay for it.
    SESSION.client("apigatewaymanagementapi", endpoint_url=MANAGEMENT_URL)
    serve(Backend, args.host, args.port)


if __name__ == "__main__":
    main()
