//! The closed sets of label values: each enum is the one list of its names, encoded as
//! a Prometheus label value and written out in the metric's help text.

use prometheus_client::encoding::{EncodeLabelValue, LabelValueEncoder};

/// Declares a label enum with its snake_case names, `ALL`, `as_str` and the encoding.
macro_rules! label_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $text:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &[$name] = &[$($name::$variant),+];

            /// The label value.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }

            /// Every label value, comma-separated, for help texts.
            pub fn names() -> String {
                Self::ALL.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(", ")
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl EncodeLabelValue for $name {
            fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
                std::fmt::Write::write_str(encoder, self.as_str())
            }
        }
    };
}

label_enum! {
    /// A client, tenant or plugin limit that refused, dropped or closed something.
    Limit {
        /// The connection was idle for the tenant's idle timeout.
        Idle => "idle",
        /// The connection reached its maximum age.
        MaxAge => "max_age",
        /// The client did not answer a ping.
        DeadPeer => "dead_peer",
        /// The client read nothing for the write timeout.
        SlowConsumer => "slow_consumer",
        /// The client kept sending past its message rate.
        MessageFlood => "message_flood",
        /// A message over the client's message rate was dropped.
        MessageRate => "message_rate",
        /// A message over the tenant's size limit closed the connection.
        MessageSize => "message_size",
        /// An upgrade was refused at the tenant's connection cap.
        MaxConnections => "max_connections",
        /// An upgrade was refused: its source address has `max_connections_per_source` open.
        SourceConnections => "source_connections",
        /// An upgrade was refused: its source address is past `new_connections_per_source`.
        SourceRate => "source_rate",
        /// An upgrade was refused: the tenant is past `new_connections_per_second`.
        ConnectRate => "connect_rate",
        /// A broadcast skipped a recipient whose queue was full.
        QueueFull => "queue_full",
        /// A plugin's log line past its `max_log_bytes` for one event was dropped.
        LogBytes => "log_bytes",
    }
}

label_enum! {
    /// Why a plugin event failed.
    FailureKind {
        /// The guest trapped (a panic, an unreachable, an out-of-bounds access…).
        Trap => "trap",
        /// The guest ran past its time limit.
        Timeout => "timeout",
        /// The guest hit its memory limit.
        Memory => "memory",
        /// The guest made more host calls than its limit in one event.
        HostCalls => "host_calls",
        /// The guest overflowed its wasm stack.
        Stack => "stack",
        /// The plugin was suspended after repeated expensive failures.
        Suspended => "suspended",
        /// No instance was free under the plugin's or tenant's cap in time.
        Instances => "instances",
        /// The guest's reply was over the tenant's message size limit.
        ReplyTooLarge => "reply_too_large",
    }
}

label_enum! {
    /// A host function a plugin imports.
    Import {
        /// `connections.send`.
        Send => "send",
        /// `connections.get-info`.
        GetInfo => "get_info",
        /// `connections.disconnect`.
        Disconnect => "disconnect",
        /// `connections.list`.
        List => "list",
        /// `connections.broadcast`.
        Broadcast => "broadcast",
        /// `log.log`.
        Log => "log",
        /// `config.get`.
        ConfigGet => "config_get",
        /// `config.get-all`.
        ConfigGetAll => "config_get_all",
        /// `connections.set-context`.
        SetContext => "set_context",
        /// `connections.get-context`.
        GetContext => "get_context",
        /// `http-client.send`.
        HttpSend => "http_send",
    }
}

label_enum! {
    /// How a plugin's outbound HTTP call ended.
    Outcome {
        /// A 1xx or 2xx answer.
        Success => "2xx",
        /// A 3xx answer (the gateway follows no redirect itself).
        Redirect => "3xx",
        /// A 4xx answer.
        ClientError => "4xx",
        /// A 5xx answer.
        ServerError => "5xx",
        /// Refused by the plugin's `allowed_outbound_hosts`; nothing was sent.
        Denied => "denied",
        /// Cut at `outbound_timeout` or `outbound_connect_timeout`.
        Timeout => "timeout",
        /// The backend could not be reached, broke the exchange, or sent a body past
        /// `max_outbound_body_bytes`.
        Error => "error",
    }
}

impl Outcome {
    /// The outcome of an answer with `status`.
    pub fn of_status(status: u16) -> Outcome {
        match status {
            0..=299 => Outcome::Success,
            300..=399 => Outcome::Redirect,
            400..=499 => Outcome::ClientError,
            _ => Outcome::ServerError,
        }
    }
}

label_enum! {
    /// Why the admin API refused a request's credentials. Never the key itself.
    AuthFailure {
        /// No `Authorization` header, or an unsupported scheme.
        Missing => "missing",
        /// An unparsable SigV4 header: scope, signed headers, date format, size.
        Malformed => "malformed",
        /// `x-amz-date` too far from the gateway's clock.
        Expired => "expired",
        /// An unknown bearer key or access key id.
        UnknownKey => "unknown_key",
        /// A SigV4 signature that does not match.
        BadSignature => "bad_signature",
        /// Valid credentials of another tenant than the one in the path.
        WrongTenant => "wrong_tenant",
        /// A SigV4 signature made for a host that is not this gateway's.
        WrongHost => "wrong_host",
        /// A signed write sent again.
        Replay => "replay",
        /// Not checked: the source address is past its failed-authentication limit.
        Throttled => "throttled",
    }
}

impl Import {
    /// The position of this import in [`Import::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_listed_once_in_order() {
        assert_eq!(Import::ALL.len(), 11);
        for (i, import) in Import::ALL.iter().enumerate() {
            assert_eq!(import.index(), i);
        }
        assert!(FailureKind::names().starts_with("trap, timeout, memory"));
        assert_eq!(Limit::MaxAge.to_string(), "max_age");
    }
}
