"""A Lambda function as written for AWS API Gateway WebSockets, unchanged: it answers each
message through the @connections API, with the endpoint built from the event.

Run it behind wsgate's `aws` integration shape with the adapter:

    AWS_ACCESS_KEY_ID=AKIDDEMO AWS_SECRET_ACCESS_KEY=demo-secret \\
      target/py/bin/python examples/backend/lambda_adapter.py --dir examples/backend \\
      /aws=lambda_function.lambda_handler /authorize=server.authorize
"""
import boto3


def lambda_handler(event, context):
    request = event["requestContext"]
    if request["eventType"] != "MESSAGE":  # CONNECT, DISCONNECT
        return {"statusCode": 200}
    api = boto3.client(
        "apigatewaymanagementapi",
        endpoint_url=f"https://{request['domainName']}/{request['stage']}",
    )
    api.post_to_connection(
        ConnectionId=request["connectionId"],
        Data=f"you said: {event['body']}".encode(),
    )
    return {"statusCode": 200}
