#!/usr/bin/env python3
"""Runs unchanged AWS Lambda handlers behind wsgate's integration plugin (shape "aws").

The plugin POSTs each event as the JSON AWS API Gateway gives a Lambda function; this
adapter calls your `handler(event, context)` with it and answers with the return value as
JSON, which is what the plugin reads back (`{"statusCode", "body", "headers",
"isBase64Encoded"}`, or nothing).

    usage: lambda_adapter.py [--port 7070] [--dir DIR] [--tls] PATH=MODULE.FUNCTION ...

    target/py/bin/python examples/backend/lambda_adapter.py --dir examples/backend \\
        /aws=lambda_function.lambda_handler /authorize=server.authorize

`MODULE.FUNCTION` is Lambda's own handler setting; modules are imported from --dir.
As in Lambda:
- `raise Exception("Unauthorized")` in an authorizer answers 401; any other exception
  answers 500 with Lambda's error JSON, and the plugin treats the event as failed;
- AWS_REGION defaults to us-east-1; credentials come from the usual AWS variables, so set
  AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY to the tenant's key (AKIDDEMO / demo-secret).

AWS's management endpoint is always https, so handlers build
`https://{domainName}/{stage}`. wsgate's admin listener speaks plain http unless the
gateway has [tls]: without --tls, this adapter sends the handler's boto3 calls to the
gateway (the domainName of the events it has seen) over http. Only clients made with
`boto3.client(...)` are covered.
"""
import argparse
import importlib
import json
import os
import sys
import time
import traceback
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit, urlunsplit

MAX_BODY = 1 << 20  # an event carries at most a 128 KiB message, base64 included


class LambdaContext:
    """The parts of Lambda's context object handlers use."""

    def __init__(self, function_name, request_id, timeout_s=29):
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.invoked_function_arn = f"arn:aws:lambda:local:000000000000:function:{function_name}"
        self.memory_limit_in_mb = 128
        self.aws_request_id = request_id
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = "wsgate"
        self.identity = None
        self.client_context = None
        self._deadline = time.monotonic() + timeout_s

    def get_remaining_time_in_millis(self):
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def invoke(handler, event):
    """Calls a Lambda handler with one event. Returns (HTTP status, JSON body bytes)."""
    request_id = (event.get("requestContext") or {}).get("requestId") or str(uuid.uuid4())
    context = LambdaContext(getattr(handler, "__name__", "handler"), request_id)
    try:
        result = handler(event, context)
    except Exception as error:  # Lambda turns an exception into an error, and so do we
        if str(error) == "Unauthorized":
            return 401, b'{"message":"Unauthorized"}'
        traceback.print_exc()
        failure = {"errorMessage": str(error), "errorType": type(error).__name__}
        return 500, json.dumps(failure).encode()
    return 200, b"" if result is None else json.dumps(result).encode()


def read_body(request):
    """The request body, with Content-Length or chunked transfer encoding."""
    if "chunked" in request.headers.get("Transfer-Encoding", "").lower():
        chunks, total = [], 0
        while True:
            size = int(request.rfile.readline(100).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while request.rfile.readline(65536).strip():  # trailers, up to the blank line
                    pass
                return b"".join(chunks)
            total += size
            if total > MAX_BODY:
                raise ValueError("body too large")
            chunks.append(request.rfile.read(size))
            request.rfile.readline()  # the CRLF after the chunk
    length = int(request.headers.get("Content-Length") or 0)
    if length > MAX_BODY:
        raise ValueError("body too large")
    return request.rfile.read(length)


class JsonHandler(BaseHTTPRequestHandler):
    """POST PATH with a JSON body → routes[PATH](body) → (status, content type, bytes)."""

    protocol_version = "HTTP/1.1"  # keep-alive: one connection serves many events
    routes = {}

    def do_GET(self):
        if self.path == "/health":
            self.reply(200, "text/plain", b"OK")
        else:
            self.reply(404, "text/plain", b"not found")

    def do_POST(self):
        route = self.routes.get(urlsplit(self.path).path)
        try:
            body = read_body(self)
        except ValueError:
            self.close_connection = True
            return self.reply(413, "text/plain", b"body too large")
        if route is None:
            return self.reply(404, "text/plain", b"not found")
        try:
            status, content_type, answer = route(self, body)
        except Exception:  # a bug in a route: the plugin sees a failed event
            traceback.print_exc()
            status, content_type, answer = 500, "text/plain", b"backend error"
        self.reply(status, content_type, answer)

    def reply(self, status, content_type, body):
        self.send_response(status)
        if body:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_request(self, code="-", size="-"):
        pass  # the routes log what happened


def serve(handler_class, host, port):
    """Serves until Ctrl-C; prints `listening backend=HOST:PORT` once bound."""
    server = ThreadingHTTPServer((host, port), handler_class)
    bound_host, bound_port = server.server_address[:2]
    print(f"listening backend={bound_host}:{bound_port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


GATEWAY_HOSTS = set()  # domainName of the events seen: the gateway's admin listener


def send_management_calls_over_http():
    """Rewrites https://{a domainName seen}/… to http:// for boto3.client(...) clients."""
    import boto3

    def to_http(request, **_):
        url = urlsplit(request.url)
        if url.scheme == "https" and url.netloc in GATEWAY_HOSTS:
            request.url = urlunsplit(url._replace(scheme="http"))

    boto3.setup_default_session()
    boto3.DEFAULT_SESSION.events.register("before-send.apigatewaymanagementapi", to_http)


def lambda_route(handler):
    def route(_request, body):
        event = json.loads(body)
        domain = (event.get("requestContext") or {}).get("domainName")
        if domain:
            GATEWAY_HOSTS.add(domain)
        status, answer = invoke(handler, event)
        return status, "application/json", answer

    return route


def load(spec):
    """'lambda_function.lambda_handler' → the function, as Lambda's handler setting."""
    module, _, function = spec.rpartition(".")
    return getattr(importlib.import_module(module), function)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("routes", nargs="+", metavar="PATH=MODULE.FUNCTION")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7070, help="0 picks a free port")
    parser.add_argument("--dir", default=".", help="where the handler modules are")
    parser.add_argument("--tls", action="store_true",
                        help="the gateway has [tls]: leave the handlers' https as it is")
    args = parser.parse_args()

    os.environ.setdefault("AWS_REGION", "us-east-1")
    os.environ.setdefault("AWS_DEFAULT_REGION", os.environ["AWS_REGION"])
    if not args.tls:
        send_management_calls_over_http()
    sys.path.insert(0, os.path.abspath(args.dir))

    routes = {}
    for entry in args.routes:
        path, _, spec = entry.partition("=")
        if not path.startswith("/") or not spec:
            parser.error(f"{entry!r}: expected PATH=MODULE.FUNCTION, e.g. /aws=app.handler")
        routes[path] = lambda_route(load(spec))
    JsonHandler.routes = routes
    serve(JsonHandler, args.host, args.port)


if __name__ == "__main__":
    main()
