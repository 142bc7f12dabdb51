//! Kafka error codes and the one place where engine errors become them.

pub use kafka_protocol::ResponseError as ErrorCode;
use sluice_engine::LogError;
use sluice_engine::batch::BatchError;

/// The Kafka error code a client gets for an engine error.
pub fn for_log_error(e: &LogError) -> ErrorCode {
    match e {
        LogError::Batch(b) => match b {
            BatchError::TooLarge { .. } => ErrorCode::MessageTooLarge,
            BatchError::BadMagic(_) => ErrorCode::UnsupportedForMessageFormat,
            BatchError::Truncated { .. }
            | BatchError::LengthMismatch { .. }
            | BatchError::CrcMismatch { .. }
            | BatchError::RecordCountMismatch { .. }
            | BatchError::BadRecord { .. } => ErrorCode::CorruptMessage,
        },
        LogError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
        LogError::Poisoned { .. } | LogError::Io { .. } | LogError::Corrupt { .. } => ErrorCode::KafkaStorageError,
        // A log closes only when its partition is deleted or the broker
        // stops: the client should look up the leader again.
        LogError::Closed => ErrorCode::NotLeaderOrFollower,
        LogError::Config(_) => ErrorCode::InvalidConfig,
        // A leader whose epoch is behind its own log has been replaced.
        LogError::StaleEpoch { .. } => ErrorCode::NotLeaderOrFollower,
        LogError::NotContiguous { .. } => ErrorCode::CorruptMessage,
    }
}

/// The wire value, 0 for success.
pub fn code(e: Option<ErrorCode>) -> i16 {
    e.map_or(0, |e| e.code())
}

/// Kafka's name of an error code (`UNKNOWN_TOPIC_OR_PARTITION`), or
/// `error code N` for a code Kafka does not define.
pub fn kafka_name(code: i16) -> String {
    let e = match kafka_protocol::error::ResponseError::try_from_code(code) {
        Some(kafka_protocol::error::ResponseError::Unknown(_)) | None => return format!("error code {code}"),
        Some(e) => e,
    };
    let camel = format!("{e:?}");
    let mut out = String::with_capacity(camel.len() + 8);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}
