// Chat: route `/chat/{room}` (plugins/chat in JavaScript). A text message goes to every
// other connection in the same room (the same request path); joins and leaves are
// announced to the room. All frames the chat sends are JSON, byte for byte the Rust
// plugin's (serde_json writes the keys in sorted order):
//
// - {"connection":"<id>","event":"join","room":"<room>"}
// - {"connection":"<id>","event":"leave","room":"<room>"}
// - {"event":"message","from":"<id>","room":"<room>","text":"<text>"}
//
// Binary messages are relayed to the room unchanged.
import * as wsgate from '../wsgate.js';

const { connections, log } = wsgate;

/** @param {wsgate.ConnectionInfo} info */
function room(info) {
    return wsgate.pathParam(info, 'room') ?? '';
}

/** Sends `message` to everyone on `path` but `except`, in one host call. */
function broadcast(path, except, message) {
    try {
        connections.broadcastPath(path, message, except);
    } catch (err) {
        log.warn(`chat: cannot broadcast to ${path}: ${err.code ?? err}`);
    }
}

function notice(event, info) {
    return JSON.stringify({ connection: info.id, event, room: room(info) });
}

export const handler = wsgate.handler({
    onConnect(info) {
        broadcast(info.path, info.id, notice('join', info));
        return wsgate.accept();
    },

    onMessage(event) {
        let info;
        try {
            info = connections.getInfo(event.connectionId);
        } catch (err) {
            log.warn(`chat: sender has gone: ${err.code ?? err}`);
            return undefined;
        }
        const text = wsgate.asText(event.message);
        const outgoing = text === undefined
            ? event.message
            : JSON.stringify({ event: 'message', from: info.id, room: room(info), text });
        broadcast(info.path, info.id, outgoing);
        return undefined;
    },

    onDisconnect(event) {
        let info;
        try {
            info = connections.getInfo(event.connectionId);
        } catch {
            return;
        }
        broadcast(info.path, info.id, notice('leave', info));
    },
});
