// Echo: every message, text or binary, goes back to its sender unchanged
// (plugins/echo in JavaScript).
import * as wsgate from '../wsgate.js';

export const handler = wsgate.handler({
    onMessage(event) {
        return event.message;
    },
});
