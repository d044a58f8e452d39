"""Echo: every message, text or binary, goes back to its sender unchanged
(plugins/echo in Python)."""

import wsgate_helpers as wsgate


def on_message(event: wsgate.MessageEvent) -> wsgate.Reply:
    return event.message


Handler = wsgate.handler(on_message=on_message)
