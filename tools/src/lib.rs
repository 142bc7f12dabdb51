//! Operator utilities for Sluice (and any Kafka-protocol broker).
//!
//! [`lag`] reports, per consumer group and partition, the committed offset,
//! the log end offset (high watermark) and the difference: how far the
//! group is behind. It speaks the Kafka protocol over a plain blocking TCP
//! connection: ListGroups, OffsetFetch (v8, all topics of each group) and
//! ListOffsets (latest).
//!
//! [`fuzz`] mutates Kafka requests for the broker's fuzz tests and
//! `sluice-wire-fuzz`.
//!
//! [`history`] checks the operations a workload recorded against a cluster
//! for lost, duplicated and reordered records (`sluice-check`).

pub mod fuzz;
pub mod history;
pub mod secure;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestGroup;
use kafka_protocol::messages::{
    ApiKey, GroupId, ListGroupsRequest, ListGroupsResponse, ListOffsetsRequest, ListOffsetsResponse,
    OffsetFetchRequest, OffsetFetchResponse, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

/// Largest response this tool accepts.
const MAX_RESPONSE_BYTES: usize = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("connecting to {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("talking to the broker: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Protocol(String),
    #[error("the broker answered {api} with error code {code}")]
    Kafka { api: &'static str, code: i16 },
}

/// A blocking Kafka-protocol connection.
#[derive(Debug)]
pub struct Connection {
    stream: secure::Stream,
    correlation: i32,
}

impl Connection {
    pub fn connect(bootstrap: &str) -> Result<Self, Error> {
        Self::connect_secured(bootstrap, &secure::ClientSecurity::default())
    }

    /// Connects with TLS and SASL as `security` says (see [`secure`]).
    pub fn connect_secured(bootstrap: &str, security: &secure::ClientSecurity) -> Result<Self, Error> {
        let tcp = TcpStream::connect(bootstrap).map_err(|e| Error::Connect(bootstrap.to_string(), e))?;
        tcp.set_read_timeout(Some(Duration::from_secs(30)))?;
        tcp.set_nodelay(true)?;
        let host = bootstrap
            .rsplit_once(':')
            .map_or(bootstrap, |(h, _)| h)
            .trim_matches(['[', ']']);
        let mut conn = Self {
            stream: secure::wrap(tcp, host, security)?,
            correlation: 0,
        };
        secure::authenticate(&mut conn, security)?;
        Ok(conn)
    }

    /// How long a call waits for its response (30 s from `connect`).
    pub fn set_timeout(&mut self, timeout: Duration) -> Result<(), Error> {
        self.stream.tcp().set_read_timeout(Some(timeout))?;
        Ok(())
    }

    /// Sends one request and reads its response.
    pub fn call<R: Encodable, T: Decodable>(&mut self, key: ApiKey, version: i16, req: &R) -> Result<T, Error> {
        self.correlation += 1;
        let mut header = RequestHeader::default();
        header.request_api_key = key as i16;
        header.request_api_version = version;
        header.correlation_id = self.correlation;
        header.client_id = Some(StrBytes::from_static_str("sluice-tools"));
        let mut body = BytesMut::new();
        let enc = |e: String| Error::Protocol(format!("encoding {key:?}: {e}"));
        header
            .encode(&mut body, key.request_header_version(version))
            .map_err(|e| enc(e.to_string()))?;
        req.encode(&mut body, version).map_err(|e| enc(e.to_string()))?;
        let mut frame = Vec::with_capacity(body.len() + 4);
        frame.put_i32(body.len() as i32);
        frame.extend_from_slice(&body);
        self.stream.write_all(&frame)?;
        self.stream.flush()?;

        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len)?;
        let n = usize::try_from(i32::from_be_bytes(len))
            .ok()
            .filter(|&n| n <= MAX_RESPONSE_BYTES)
            .ok_or_else(|| Error::Protocol(format!("response length {}", i32::from_be_bytes(len))))?;
        let mut buf = vec![0u8; n];
        self.stream.read_exact(&mut buf)?;
        let mut buf = Bytes::from(buf);
        let dec = |e: String| Error::Protocol(format!("decoding {key:?}: {e}"));
        let h =
            ResponseHeader::decode(&mut buf, key.response_header_version(version)).map_err(|e| dec(e.to_string()))?;
        if h.correlation_id != self.correlation {
            return Err(Error::Protocol("response for another request".into()));
        }
        let resp = T::decode(&mut buf, version).map_err(|e| dec(e.to_string()))?;
        if buf.has_remaining() {
            return Err(Error::Protocol(format!(
                "{key:?}: {} bytes after the response",
                buf.remaining()
            )));
        }
        Ok(resp)
    }
}

/// One partition of one group.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LagRow {
    pub group: String,
    pub topic: String,
    pub partition: i32,
    /// `None` when the group has no commit for this partition.
    pub committed: Option<i64>,
    /// The high watermark; `None` when the broker could not say.
    pub log_end: Option<i64>,
    /// `log_end - committed` when both are known.
    pub lag: Option<i64>,
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// Every group the broker knows.
pub fn list_groups(conn: &mut Connection) -> Result<Vec<String>, Error> {
    let resp: ListGroupsResponse = conn.call(ApiKey::ListGroups, 4, &ListGroupsRequest::default())?;
    if resp.error_code != 0 {
        return Err(Error::Kafka {
            api: "ListGroups",
            code: resp.error_code,
        });
    }
    let mut out: Vec<String> = resp.groups.iter().map(|g| g.group_id.to_string()).collect();
    out.sort();
    Ok(out)
}

/// Lag of `groups` (all groups when empty), sorted by group, topic and
/// partition.
pub fn lag(bootstrap: &str, groups: &[String]) -> Result<Vec<LagRow>, Error> {
    let mut conn = Connection::connect(bootstrap)?;
    let groups = if groups.is_empty() {
        list_groups(&mut conn)?
    } else {
        groups.to_vec()
    };
    let mut committed: BTreeMap<(String, String, i32), Option<i64>> = BTreeMap::new();
    for g in &groups {
        let mut req = OffsetFetchRequest::default();
        let mut rg = OffsetFetchRequestGroup::default();
        rg.group_id = GroupId(s(g));
        rg.topics = None;
        req.groups = vec![rg];
        let resp: OffsetFetchResponse = conn.call(ApiKey::OffsetFetch, 8, &req)?;
        for rg in resp.groups {
            if rg.error_code != 0 {
                return Err(Error::Kafka {
                    api: "OffsetFetch",
                    code: rg.error_code,
                });
            }
            for t in rg.topics {
                for p in t.partitions {
                    let c = (p.error_code == 0 && p.committed_offset >= 0).then_some(p.committed_offset);
                    committed.insert((g.clone(), t.name.to_string(), p.partition_index), c);
                }
            }
        }
    }
    // One ListOffsets for every partition any group has committed.
    let mut wanted: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for (_, topic, p) in committed.keys() {
        let v = wanted.entry(topic.clone()).or_default();
        if !v.contains(p) {
            v.push(*p);
        }
    }
    let mut ends: BTreeMap<(String, i32), i64> = BTreeMap::new();
    if !wanted.is_empty() {
        let mut req = ListOffsetsRequest::default();
        req.replica_id = kafka_protocol::messages::BrokerId(-1);
        req.topics = wanted
            .iter()
            .map(|(t, ps)| {
                let mut lt = ListOffsetsTopic::default();
                lt.name = TopicName(s(t));
                lt.partitions = ps
                    .iter()
                    .map(|&p| {
                        let mut lp = ListOffsetsPartition::default();
                        lp.partition_index = p;
                        lp.timestamp = -1;
                        lp
                    })
                    .collect();
                lt
            })
            .collect();
        let resp: ListOffsetsResponse = conn.call(ApiKey::ListOffsets, 7, &req)?;
        for t in resp.topics {
            for p in t.partitions {
                if p.error_code == 0 {
                    ends.insert((t.name.to_string(), p.partition_index), p.offset);
                }
            }
        }
    }
    Ok(committed
        .into_iter()
        .map(|((group, topic, partition), committed)| {
            let log_end = ends.get(&(topic.clone(), partition)).copied();
            let lag = committed.zip(log_end).map(|(c, e)| (e - c).max(0));
            LagRow {
                group,
                topic,
                partition,
                committed,
                log_end,
                lag,
            }
        })
        .collect())
}

/// The rows as an aligned text table.
pub fn table(rows: &[LagRow]) -> String {
    let head = ["GROUP", "TOPIC", "PARTITION", "COMMITTED", "LOG-END", "LAG"];
    let opt = |v: Option<i64>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
    let cells: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            [
                r.group.clone(),
                r.topic.clone(),
                r.partition.to_string(),
                opt(r.committed),
                opt(r.log_end),
                opt(r.lag),
            ]
        })
        .collect();
    let mut width = head.map(str::len);
    for row in &cells {
        for (w, c) in width.iter_mut().zip(row) {
            *w = (*w).max(c.len());
        }
    }
    let mut out = String::new();
    let mut line = |cols: &[String]| {
        let parts: Vec<String> = cols
            .iter()
            .zip(width)
            .enumerate()
            .map(|(i, (c, w))| if i < 2 { format!("{c:<w$}") } else { format!("{c:>w$}") })
            .collect();
        out.push_str(parts.join("  ").trim_end());
        out.push('\n');
    };
    line(&head.map(String::from));
    for row in &cells {
        line(row);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns_and_marks_unknowns() {
        let rows = vec![
            LagRow {
                group: "g".into(),
                topic: "orders".into(),
                partition: 0,
                committed: Some(5),
                log_end: Some(12),
                lag: Some(7),
            },
            LagRow {
                group: "longer-group".into(),
                topic: "t".into(),
                partition: 11,
                committed: None,
                log_end: Some(3),
                lag: None,
            },
        ];
        let t = table(&rows);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "GROUP         TOPIC   PARTITION  COMMITTED  LOG-END  LAG");
        assert_eq!(lines[1], "g             orders          0          5       12    7");
        assert_eq!(lines[2], "longer-group  t              11          -        3    -");
    }
}
