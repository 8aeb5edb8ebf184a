//! TypeScript types of the JS API's values, options and events, added to
//! the `.d.ts` that `wasm-bindgen` generates (the methods name them with
//! `unchecked_param_type` / `unchecked_return_type`).

use wasm_bindgen::prelude::wasm_bindgen;

#[wasm_bindgen(typescript_custom_section)]
const TYPES: &str = r#"
/** A value as stored: anything `JSON.stringify` accepts, read back as `JSON.parse` gives it. */
export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };

/** Where the client stands with the server. */
export type ConnectionState = "INITIAL" | "OFFLINE" | "CONNECTING" | "SYNCING" | "ONLINE";

/** Whether this tab holds the server connection for its database. */
export type TabRole = "leader" | "follower";

/** A token, or its absence, as a token provider answers. */
export type TokenAnswer = string | null | undefined;

/** Options of `TopGunClient.open` (all optional). */
export interface ClientOptions {
    /** The server's WebSocket URL; without one the client stays offline. */
    serverUrl?: string;
    /** A token for the server's `AUTH`. */
    token?: string;
    /** Called before each connection for a fresh token. */
    tokenProvider?: () => TokenAnswer | Promise<TokenAnswer>;
    /** The IndexedDB database (default `hz_client_db`); tabs that name the same one share it. */
    databaseName?: string;
    /** Records kept in memory in front of IndexedDB (default 20,000; a map of up to half as many is held whole). */
    workingSet?: number;
    /** Read each map `getMap` opens into memory in the background, if it fits the working set (default true). */
    preload?: boolean;
    /** Maps to sync from the start (others start syncing when opened). */
    maps?: string[];
    /** A storage budget in bytes: past it, synced records are pruned. */
    quotaBytes?: number;
    /** The share of `quotaBytes`, in percent, at which the warning goes (default 80). */
    quotaWarningPercent?: number;
}

/** A predicate tree node: leaf ops compare `attribute` with `value`; `and` / `or` / `not` combine `children`. */
export interface Predicate {
    op: "eq" | "neq" | "gt" | "gte" | "lt" | "lte" | "like" | "regex" | "in" | "between"
        | "isNull" | "isNotNull" | "contains" | "containsAll" | "containsAny"
        | "startsWith" | "endsWith" | "and" | "or" | "not";
    attribute?: string;
    value?: JsonValue;
    children?: Predicate[];
}

/** A query: `where` maps a field to a value (equality) or to operators such as `{ $gt: 18 }`. */
export interface Query {
    where?: { [field: string]: JsonValue };
    predicate?: Predicate;
    sort?: { field: string; direction: "asc" | "desc" }[] | { [field: string]: "asc" | "desc" };
    limit?: number;
    cursor?: string;
}

/** One page of a query's results. */
export interface QueryPage {
    results: { key: string; value: JsonValue }[];
    hasMore: boolean;
    nextCursor: string | null;
}

/** A change to a map, as a subscriber sees it. */
export interface ChangeEvent {
    key: string;
    oldValue: JsonValue | null;
    newValue: JsonValue | null;
    origin: "local" | "remote";
}

/** A change to a live query's result. */
export interface LiveQueryEvent {
    type: "ENTER" | "UPDATE" | "LEAVE";
    key: string;
    value: JsonValue | null;
}

/** A quota event. */
export type QuotaEvent =
    | { type: "warning"; used: number; budget: number }
    | { type: "pruned"; records: number; bytesBefore: number; bytesAfter: number }
    | { type: "exhausted"; used: number; budget: number };

/** The browser's storage estimate for this origin, in bytes. */
export interface StorageEstimate {
    usage: number;
    quota: number;
}

/** The `code` of every error the API throws or rejects with. */
export type ErrorCode = "INVALID_ARGUMENT" | "VALUE_TOO_LARGE" | "QUOTA_EXCEEDED" | "STORAGE"
    | "SCHEMA_TOO_NEW" | "CLOSED" | "UNSUPPORTED" | "LAGGED" | "INTERNAL";

/** An error of the API. */
export interface TopGunError extends Error {
    code: ErrorCode;
}
"#;
