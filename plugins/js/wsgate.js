// wsgate route handlers in JavaScript: a thin layer over the WIT bindings that
// componentize-js generates for the `route-handler` world (wit/world.wit).
//
// How componentize-js maps the world, and so how this file is shaped:
// - The world exports the interface `handler`, so the plugin's module exports an object
//   named `handler` whose methods are the interface's functions in camelCase
//   (`onConnect`, `onMessage`, `onDisconnect`). `handler({...})` below builds it.
// - Imported interfaces are ES modules named by their WIT id
//   (`wsgate:plugin/connections@0.1.1`); functions are camelCase, records are plain
//   objects with camelCase fields, variants are `{ tag, val }`, enums are strings,
//   `option<T>` is `T | undefined`, and a `result` error is thrown.
//
// A plugin:
//
//     import * as wsgate from '../wsgate.js';
//     export const handler = wsgate.handler({
//         onMessage(event) { return event.message; },
//     });
//
// Types: wsgate.d.ts (written against the declarations `jco guest-types` generates from
// wit/ into types/; scripts/build-polyglot.sh regenerates those).
//
// Instances are reused between events but may be thrown away at any time: keep state
// that must last in the host (the connection registry), not in module globals.

import * as host from 'wsgate:plugin/connections@0.1.1';
import { log as hostLog } from 'wsgate:plugin/log@0.1.1';
import * as hostConfig from 'wsgate:plugin/config@0.1.1';

// ------------------------------------------------------------------ messages

/** A text message. */
export function text(value) {
    return { tag: 'text', val: String(value) };
}

/** A binary message (a Uint8Array, an ArrayBuffer or an array of bytes). */
export function binary(bytes) {
    return { tag: 'binary', val: bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes) };
}

/** The text of a text message, else undefined. */
export function asText(message) {
    return message.tag === 'text' ? message.val : undefined;
}

const encoder = new TextEncoder();

/** The payload bytes of a message, text or binary. */
export function asBytes(message) {
    return message.tag === 'text' ? encoder.encode(message.val) : message.val;
}

/** A string becomes a text message, bytes a binary one; a message stays as it is. */
function toMessage(value) {
    if (typeof value === 'string') return text(value);
    if (value instanceof Uint8Array || value instanceof ArrayBuffer) return binary(value);
    if (value && (value.tag === 'text' || value.tag === 'binary')) return value;
    throw new TypeError(`wsgate: not a message: ${String(value)}`);
}

// ------------------------------------------------------------------ connect answers

/** Accept the upgrade (optionally choosing one of the client's subprotocols). */
export function accept(subprotocol, headers = []) {
    return { tag: 'accept', val: { subprotocol, headers } };
}

/** Refuse the upgrade with an HTTP status (300 to 599) and a text body. */
export function reject(status, body = '', headers = []) {
    return { tag: 'reject', val: { status, headers, body } };
}

// ------------------------------------------------------------------ connection info

function find(pairs, name) {
    const pair = pairs.find(([key]) => key === name);
    return pair ? pair[1] : undefined;
}

/** A request header by name (case-insensitive; the gateway lower-cases names). */
export function header(info, name) {
    return find(info.headers, name.toLowerCase());
}

/** A parameter captured by the route template, e.g. `room` in `/chat/{room}`. */
export function pathParam(info, name) {
    return find(info.pathParams, name);
}

/** The first query parameter called `name`, percent-decoded. */
export function queryParam(info, name) {
    return find(info.queryParams, name);
}

// ------------------------------------------------------------------ host calls

/**
 * A host call failed. `code` is the WIT `host-error`: 'gone', 'forbidden',
 * 'payload-too-large', 'limit-exceeded', 'invalid-argument' or 'unavailable'.
 */
export class HostError extends Error {
    constructor(code) {
        super(`wsgate host error: ${code}`);
        this.name = 'HostError';
        this.code = code;
    }
}

// componentize-js throws a `result`'s error value; it may arrive wrapped with a
// `payload` field. Either way the caller gets a HostError with the WIT code.
function call(fn) {
    try {
        return fn();
    } catch (err) {
        if (typeof err === 'string') throw new HostError(err);
        if (err && typeof err.payload === 'string') throw new HostError(err.payload);
        throw err;
    }
}

/** The connections of this plugin's tenant. Failures throw a HostError. */
export const connections = {
    /** Queues a message (a message, a string or bytes) for connection `id`. */
    send(id, message) {
        call(() => host.send(id, toMessage(message)));
    },
    /** Everything the gateway knows about connection `id`. */
    getInfo(id) {
        return call(() => host.getInfo(id));
    },
    /** Closes connection `id` with `code` (1000 or 3000-4999) and `reason`. */
    disconnect(id, code = 1000, reason = '') {
        call(() => host.disconnect(id, code, reason));
    },
    /** Ids of the tenant's open connections matching `filter` ({ route?, path? }). */
    list(filter = {}) {
        return call(() => host.list({ route: filter.route, path: filter.path }));
    },
    /** Ids of the open connections whose request path is exactly `path`. */
    listPath(path) {
        return call(() => host.list({ route: undefined, path }));
    },
    /**
     * Queues a message for every open connection matching `filter` but `except`, in one
     * host call; returns how many it was queued for.
     */
    broadcast(filter, message, except) {
        return call(() => host.broadcast({ route: filter.route, path: filter.path }, toMessage(message), except));
    },
    /** `broadcast` to the connections whose request path is exactly `path` (a room). */
    broadcastPath(path, message, except) {
        return call(() => host.broadcast({ route: undefined, path }, toMessage(message), except));
    },
    /** Keeps `context` with connection `id` for its life (only in `onConnect`). */
    setContext(id, context) {
        call(() => host.setContext(id, context));
    },
    /** The context set for connection `id`, if any. */
    getContext(id) {
        return call(() => host.getContext(id));
    },
};

/** The gateway's log, tagged with tenant, route, plugin and connection. */
export const log = {
    trace: (message) => hostLog('trace', String(message)),
    debug: (message) => hostLog('debug', String(message)),
    info: (message) => hostLog('info', String(message)),
    warn: (message) => hostLog('warn', String(message)),
    error: (message) => hostLog('error', String(message)),
};

/** The string key-values given to this plugin under `config` in the gateway config. */
export const config = {
    get: (key) => hostConfig.get(key),
    all: () => hostConfig.getAll(),
};

// ------------------------------------------------------------------ the handler

/**
 * Builds the object the component exports as the WIT interface `handler`. Every
 * callback is optional, as in the Rust SDK: accept, no reply, nothing.
 *
 * - `onConnect(info)`: return nothing to accept, or `accept(...)` / `reject(...)`.
 * - `onMessage({ connectionId, routeKey, message })`: return nothing for no reply, or a
 *   message, a string (text) or bytes (binary) to send back to the sender.
 * - `onDisconnect({ connectionId, code, reason })`.
 */
export function handler(plugin) {
    return {
        onConnect(info) {
            const answer = plugin.onConnect ? plugin.onConnect(info) : undefined;
            return answer ?? accept();
        },
        onMessage(id, routeKey, message) {
            if (!plugin.onMessage) return undefined;
            const reply = plugin.onMessage({ connectionId: id, routeKey, message });
            return reply == null ? undefined : toMessage(reply);
        },
        onDisconnect(id, code, reason) {
            if (plugin.onDisconnect) plugin.onDisconnect({ connectionId: id, code, reason });
        },
    };
}
