"""wsgate route handlers in Python: a thin layer over the bindings componentize-py
generates for the `route-handler` world (wit/world.wit).

How componentize-py maps the world, and so how this module is shaped:

- The world exports the interface `handler`, so the app module defines a class named
  `Handler` whose methods are the interface's functions in snake_case (`on_connect`,
  `on_message`, `on_disconnect`). `handler(...)` below builds that class.
- Imported interfaces are modules under `wit_world.imports` (`connections`, `log`,
  `config`, `types`); records are dataclasses, variant cases are dataclasses named
  `Message_Text` / `Message_Binary`, enums are `Enum`s, `option<T>` is `Optional[T]`, and
  a `result` error is raised as `componentize_py_types.Err(value)`.

A plugin (the app module, e.g. `echo.py`)::

    import wsgate_helpers as wsgate

    def on_message(event: wsgate.MessageEvent) -> wsgate.Reply:
        return event.message

    Handler = wsgate.handler(on_message=on_message)

The `wit_world` bindings are generated at build time (scripts/build-polyglot.sh, into
target/polyglot-py/bindings), never committed. Instances are reused between events but
may be thrown away at any time: keep state that must last in the host (the connection
registry), not in module globals.
"""

from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple, Type, Union

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import config as host_config
from wit_world.imports import connections as host
from wit_world.imports import log as host_log
from wit_world.imports.types import (
    Accept,
    ConnectionInfo,
    ConnectResponse,
    ConnectResponse_Accept,
    ConnectResponse_Reject,
    HostError,
    ListFilter,
    Message,
    Message_Binary,
    Message_Text,
    Reject,
)

__all__ = [
    "ConnectionInfo", "ConnectResponse", "HostError", "HostCallError", "Message",
    "MessageEvent", "DisconnectEvent", "Reply", "text", "binary", "as_text", "as_bytes",
    "accept", "reject", "header", "path_param", "query_param", "connections", "log",
    "config", "handler",
]

# ------------------------------------------------------------------ messages

#: What `on_message` may return: nothing, a message, a str (text) or bytes (binary).
Reply = Union[None, Message, str, bytes]


def text(value: str) -> Message:
    """A text message."""
    return Message_Text(value)


def binary(value: bytes) -> Message:
    """A binary message."""
    return Message_Binary(bytes(value))


def as_text(message: Message) -> Optional[str]:
    """The text of a text message, else None."""
    return message.value if isinstance(message, Message_Text) else None


def as_bytes(message: Message) -> bytes:
    """The payload bytes of a message, text or binary."""
    if isinstance(message, Message_Text):
        return message.value.encode()
    return message.value


def _to_message(value: Union[Message, str, bytes, bytearray]) -> Message:
    if isinstance(value, (Message_Text, Message_Binary)):
        return value
    if isinstance(value, str):
        return Message_Text(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return Message_Binary(bytes(value))
    raise TypeError(f"wsgate: not a message: {value!r}")


# ------------------------------------------------------------------ connect answers


def accept(subprotocol: Optional[str] = None,
           headers: Optional[List[Tuple[str, str]]] = None) -> ConnectResponse:
    """Accept the upgrade (optionally choosing one of the client's subprotocols)."""
    return ConnectResponse_Accept(Accept(subprotocol, list(headers or [])))


def reject(status: int, body: str = "",
           headers: Optional[List[Tuple[str, str]]] = None) -> ConnectResponse:
    """Refuse the upgrade with an HTTP status (300 to 599) and a text body."""
    return ConnectResponse_Reject(Reject(status, list(headers or []), body))


# ------------------------------------------------------------------ connection info


def _find(pairs: List[Tuple[str, str]], name: str) -> Optional[str]:
    for key, value in pairs:
        if key == name:
            return value
    return None


def header(info: ConnectionInfo, name: str) -> Optional[str]:
    """A request header by name (case-insensitive; the gateway lower-cases names)."""
    return _find(info.headers, name.lower())


def path_param(info: ConnectionInfo, name: str) -> Optional[str]:
    """A parameter captured by the route template, e.g. `room` in `/chat/{room}`."""
    return _find(info.path_params, name)


def query_param(info: ConnectionInfo, name: str) -> Optional[str]:
    """The first query parameter called `name`, percent-decoded."""
    return _find(info.query_params, name)


# ------------------------------------------------------------------ host calls


class HostCallError(Exception):
    """A host call failed; `code` is the WIT `host-error` (a `HostError`)."""

    def __init__(self, code: HostError) -> None:
        super().__init__(code.name.lower().replace("_", "-"))
        self.code = code


def _call(fn: Callable[[], object]) -> object:
    try:
        return fn()
    except Err as err:
        raise HostCallError(err.value) from None


class connections:
    """The connections of this plugin's tenant. Failures raise HostCallError."""

    @staticmethod
    def send(id: str, message: Union[Message, str, bytes]) -> None:
        """Queues a message (a message, a str or bytes) for connection `id`."""
        _call(lambda: host.send(id, _to_message(message)))

    @staticmethod
    def get_info(id: str) -> ConnectionInfo:
        """Everything the gateway knows about connection `id`."""
        return _call(lambda: host.get_info(id))  # type: ignore[return-value]

    @staticmethod
    def disconnect(id: str, code: int = 1000, reason: str = "") -> None:
        """Closes connection `id` with `code` (1000 or 3000-4999) and `reason`."""
        _call(lambda: host.disconnect(id, code, reason))

    @staticmethod
    def list(route: Optional[str] = None, path: Optional[str] = None) -> List[str]:
        """Ids of the tenant's open connections on `route` and/or at `path`."""
        return _call(lambda: host.list(ListFilter(route, path)))  # type: ignore[return-value]

    @staticmethod
    def broadcast(message: Union[Message, str, bytes], *, route: Optional[str] = None,
                  path: Optional[str] = None, except_: Optional[str] = None) -> int:
        """Queues a message for every open connection on `route` and/or at `path` but
        `except_`, in one host call; returns how many it was queued for."""
        return _call(lambda: host.broadcast(  # type: ignore[return-value]
            ListFilter(route, path), _to_message(message), except_))

    @staticmethod
    def broadcast_path(path: str, message: Union[Message, str, bytes],
                       except_: Optional[str] = None) -> int:
        """`broadcast` to the connections whose request path is exactly `path`."""
        return connections.broadcast(message, path=path, except_=except_)

    @staticmethod
    def set_context(id: str, context: str) -> None:
        """Keeps `context` with connection `id` for its life (only in `on_connect`)."""
        _call(lambda: host.set_context(id, context))

    @staticmethod
    def get_context(id: str) -> Optional[str]:
        """The context set for connection `id`, if any."""
        return _call(lambda: host.get_context(id))  # type: ignore[return-value]


class log:
    """The gateway's log, tagged with tenant, route, plugin and connection."""

    @staticmethod
    def trace(message: str) -> None:
        host_log.log(host_log.Level.TRACE, message)

    @staticmethod
    def debug(message: str) -> None:
        host_log.log(host_log.Level.DEBUG, message)

    @staticmethod
    def info(message: str) -> None:
        host_log.log(host_log.Level.INFO, message)

    @staticmethod
    def warn(message: str) -> None:
        host_log.log(host_log.Level.WARN, message)

    @staticmethod
    def error(message: str) -> None:
        host_log.log(host_log.Level.ERROR, message)


class config:
    """The string key-values given to this plugin under `config` in the gateway config."""

    @staticmethod
    def get(key: str) -> Optional[str]:
        return host_config.get(key)

    @staticmethod
    def all() -> List[Tuple[str, str]]:
        return host_config.get_all()


# ------------------------------------------------------------------ the handler


@dataclass
class MessageEvent:
    """A message event: what `$default` or a selected route key receives."""
    connection_id: str
    route_key: str
    message: Message


@dataclass
class DisconnectEvent:
    """The connection closed and can no longer be sent to."""
    connection_id: str
    code: int
    reason: str


def handler(
    on_connect: Optional[Callable[[ConnectionInfo], Optional[ConnectResponse]]] = None,
    on_message: Optional[Callable[[MessageEvent], Reply]] = None,
    on_disconnect: Optional[Callable[[DisconnectEvent], None]] = None,
) -> Type[exports.Handler]:
    """Builds the class the app module exports as `Handler` (the WIT interface
    `handler`). Every callback is optional, as in the Rust SDK: accept, no reply,
    nothing. `on_connect` returns None to accept, or `accept(...)` / `reject(...)`;
    `on_message` returns None for no reply, or a message, a str or bytes for the sender.
    """

    class Handler(exports.Handler):
        def on_connect(self, info: ConnectionInfo) -> ConnectResponse:
            answer = on_connect(info) if on_connect else None
            return answer if answer is not None else accept()

        def on_message(self, id: str, route_key: str, message: Message) -> Optional[Message]:
            if on_message is None:
                return None
            reply = on_message(MessageEvent(id, route_key, message))
            return None if reply is None else _to_message(reply)

        def on_disconnect(self, id: str, code: int, reason: str) -> None:
            if on_disconnect is not None:
                on_disconnect(DisconnectEvent(id, code, reason))

    return Handler
