// Types of wsgate.js. The WIT types come from the declarations `jco guest-types`
// generates from wit/ (world `route-handler`) into types/: scripts/build-polyglot.sh
// writes them (node tools/guest-types.mjs); they are not committed.
/// <reference path="./types/route-handler.d.ts" />

import type {
    ConnectionInfo,
    ConnectResponse,
    HostError as HostErrorCode,
    ListFilter,
    Message,
} from 'wsgate:plugin/types@0.1.1';
import type { Level } from 'wsgate:plugin/log@0.1.1';

export type { ConnectionInfo, ConnectResponse, HostErrorCode, ListFilter, Message, Level };

/** What `onMessage` may return: nothing, a message, a string (text) or bytes (binary). */
export type Reply = Message | string | Uint8Array | ArrayBuffer | undefined | null | void;

/** Anything `send` and `broadcast` take: a message, a string (text) or bytes (binary). */
export type Outgoing = Message | string | Uint8Array | ArrayBuffer;

/** A message event: what `$default` or a selected route key receives. */
export interface MessageEvent {
    /** The sender. */
    connectionId: string;
    /** The route key that selected this plugin (`$default` when none matched). */
    routeKey: string;
    /** The message as the client sent it. */
    message: Message;
}

/** The connection closed and can no longer be sent to (`getInfo` still answers). */
export interface DisconnectEvent {
    connectionId: string;
    /** The close code (1005 when the peer sent none, 1006 when the socket dropped). */
    code: number;
    reason: string;
}

/** The callbacks of a plugin; every one is optional. */
export interface Plugin {
    /** `$connect`: return nothing to accept, or `accept(...)` / `reject(...)`. */
    onConnect?(info: ConnectionInfo): ConnectResponse | undefined | void;
    /** A message: return nothing for no reply, or what goes back to the sender. */
    onMessage?(event: MessageEvent): Reply;
    /** `$disconnect`. */
    onDisconnect?(event: DisconnectEvent): void;
}

/** The object the component exports as the WIT interface `handler`. */
export interface Handler {
    onConnect(info: ConnectionInfo): ConnectResponse;
    onMessage(id: string, routeKey: string, message: Message): Message | undefined;
    onDisconnect(id: string, code: number, reason: string): void;
}

/** Builds the `handler` export from a plugin's callbacks. */
export function handler(plugin: Plugin): Handler;

export function text(value: string): Message;
export function binary(bytes: Uint8Array | ArrayBuffer | ArrayLike<number>): Message;
/** The text of a text message, else undefined. */
export function asText(message: Message): string | undefined;
/** The payload bytes of a message, text or binary. */
export function asBytes(message: Message): Uint8Array;

export function accept(subprotocol?: string, headers?: Array<[string, string]>): ConnectResponse;
export function reject(status: number, body?: string, headers?: Array<[string, string]>): ConnectResponse;

export function header(info: ConnectionInfo, name: string): string | undefined;
export function pathParam(info: ConnectionInfo, name: string): string | undefined;
export function queryParam(info: ConnectionInfo, name: string): string | undefined;

/** A host call failed; `code` is the WIT `host-error`. */
export class HostError extends Error {
    constructor(code: HostErrorCode);
    code: HostErrorCode;
}

/** The connections of this plugin's tenant. Failures throw a HostError. */
export const connections: {
    send(id: string, message: Outgoing): void;
    getInfo(id: string): ConnectionInfo;
    disconnect(id: string, code?: number, reason?: string): void;
    list(filter?: ListFilter): string[];
    listPath(path: string): string[];
    broadcast(filter: ListFilter, message: Outgoing, except?: string): number;
    broadcastPath(path: string, message: Outgoing, except?: string): number;
    setContext(id: string, context: string): void;
    getContext(id: string): string | undefined;
};

/** The gateway's log, tagged with tenant, route, plugin and connection. */
export const log: Record<Level, (message: unknown) => void>;

/** The string key-values given to this plugin under `config` in the gateway config. */
export const config: {
    get(key: string): string | undefined;
    all(): Array<[string, string]>;
};
