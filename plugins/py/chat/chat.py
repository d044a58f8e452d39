"""Chat: route `/chat/{room}` (plugins/chat in Python). A text message goes to every
other connection in the same room (the same request path); joins and leaves are
announced to the room. All frames the chat sends are JSON, byte for byte the Rust
plugin's (serde_json writes the keys in sorted order, compactly, non-ASCII unescaped):

- {"connection":"<id>","event":"join","room":"<room>"}
- {"connection":"<id>","event":"leave","room":"<room>"}
- {"event":"message","from":"<id>","room":"<room>","text":"<text>"}

Binary messages are relayed to the room unchanged.
"""

import json

import wsgate_helpers as wsgate
from wsgate_helpers import connections, log


def room(info: wsgate.ConnectionInfo) -> str:
    return wsgate.path_param(info, "room") or ""


def to_json(value: dict) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def broadcast(path: str, except_: str, message: "wsgate.Message | str") -> None:
    """Sends `message` to everyone on `path` but `except_`, in one host call."""
    try:
        connections.broadcast_path(path, message, except_)
    except wsgate.HostCallError as err:
        log.warn(f"chat: cannot broadcast to {path}: {err}")


def notice(event: str, info: wsgate.ConnectionInfo) -> str:
    return to_json({"event": event, "room": room(info), "connection": info.id})


def on_connect(info: wsgate.ConnectionInfo) -> wsgate.ConnectResponse:
    broadcast(info.path, info.id, notice("join", info))
    return wsgate.accept()


def on_message(event: wsgate.MessageEvent) -> wsgate.Reply:
    try:
        info = connections.get_info(event.connection_id)
    except wsgate.HostCallError as err:
        log.warn(f"chat: sender has gone: {err}")
        return None
    text = wsgate.as_text(event.message)
    if text is None:
        outgoing: "wsgate.Message | str" = event.message
    else:
        outgoing = to_json({"event": "message", "room": room(info), "from": info.id, "text": text})
    broadcast(info.path, info.id, outgoing)
    return None


def on_disconnect(event: wsgate.DisconnectEvent) -> None:
    try:
        info = connections.get_info(event.connection_id)
    except wsgate.HostCallError:
        return
    broadcast(info.path, info.id, notice("leave", info))


Handler = wsgate.handler(on_connect=on_connect, on_message=on_message, on_disconnect=on_disconnect)
