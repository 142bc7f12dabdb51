//! The loopback floor: what one small request and its answer cost a
//! server that does nothing else, on the same runtime (compio, io_uring)
//! and with the same syscalls as Sluice's: a read of the request frame, a
//! write of the answer, and for a fetch the answer's header written and
//! its one record batch sent from a file with sendfile. The server
//! decodes nothing: it takes the API key and correlation id from the
//! header and answers with a Produce or Fetch response encoded at start,
//! of the sizes Sluice's answers have (one partition, one batch).
//!
//! The driver sends the same requests to either server at a fixed rate
//! over a number of connections and reads the server's CPU time from
//! `/proc`: CPU per request against Sluice, over the same against the
//! floor, is how far Sluice's per-request work is from the floor.

use std::cell::Cell;
use std::os::fd::AsFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use compio::BufResult;
use compio::io::{AsyncReadExt, AsyncWriteExt};
use compio::net::{TcpListener, TcpStream};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{
    ApiKey, BrokerId, FetchRequest, FetchResponse, ProduceResponse, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Encodable, StrBytes};

use crate::wire::{self, Codec, FrameReader, OpenBatch, PartitionBatch};
use crate::workload::Compression;

/// The Produce and Fetch versions both servers are asked with.
pub const PRODUCE_VERSION: i16 = 8;
pub const FETCH_VERSION: i16 = 11;

/// Which request the driver sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    Produce,
    Fetch,
}

/// One Produce request of one 1 KiB record to `topic`-`partition` (acks=1),
/// length-prefixed; its correlation id is at bytes 8..12.
pub fn produce_request(topic: &str, partition: i32, record_bytes: usize) -> Result<BytesMut, String> {
    let mut b = OpenBatch::default();
    b.push(None, 0, &vec![0x5a; record_bytes]);
    let mut out = BytesMut::new();
    wire::produce_request(
        &mut out,
        PRODUCE_VERSION,
        0,
        1,
        30_000,
        topic,
        &[PartitionBatch { partition, batch: &b }],
        1_700_000_000_000,
        Compression::None,
        &mut Codec::default(),
    )
    .map_err(|e| e.to_string())?;
    Ok(out)
}

/// One Fetch request of `topic`-`partition` from offset 0 with room for
/// one batch, not waiting; length-prefixed.
pub fn fetch_request(topic: &str, partition: i32, batch_bytes: usize) -> Result<BytesMut, String> {
    let mut header = RequestHeader::default();
    header.request_api_key = ApiKey::Fetch as i16;
    header.request_api_version = FETCH_VERSION;
    header.client_id = Some(StrBytes::from_static_str("sluice-bench"));
    let mut p = FetchPartition::default();
    p.partition = partition;
    p.fetch_offset = 0;
    p.partition_max_bytes = batch_bytes as i32;
    let mut t = FetchTopic::default();
    t.topic = TopicName(StrBytes::from_string(topic.to_string()));
    t.partitions = vec![p];
    let mut req = FetchRequest::default();
    req.replica_id = BrokerId(-1);
    req.max_wait_ms = 0;
    req.min_bytes = 1;
    req.max_bytes = batch_bytes as i32;
    req.topics = vec![t];
    let mut out = BytesMut::new();
    out.put_i32(0);
    header
        .encode(&mut out, ApiKey::Fetch.request_header_version(FETCH_VERSION))
        .map_err(|e| e.to_string())?;
    req.encode(&mut out, FETCH_VERSION).map_err(|e| e.to_string())?;
    wire::end_frame(&mut out);
    Ok(out)
}

fn set_correlation(frame: &mut [u8], at: usize, correlation: i32) {
    frame[at..at + 4].copy_from_slice(&correlation.to_be_bytes());
}

/// The answers the floor sends: a Produce response, and a Fetch
/// response's part before its records, whose `records_bytes` follow from
/// the file.
struct Answers {
    produce: Vec<u8>,
    fetch_head: Vec<u8>,
    records_bytes: usize,
}

fn answers(topic: &str, records_bytes: usize) -> Result<Answers, String> {
    let frame = |header: &ResponseHeader, hv: i16, body: &dyn Fn(&mut BytesMut) -> Result<(), String>| {
        let mut out = BytesMut::new();
        out.put_i32(0);
        header.encode(&mut out, hv).map_err(|e| e.to_string())?;
        body(&mut out)?;
        Ok::<BytesMut, String>(out)
    };
    let header = ResponseHeader::default();
    let mut pr = PartitionProduceResponse::default();
    pr.index = 0;
    pr.base_offset = 1234;
    pr.log_append_time_ms = -1;
    let mut tr = TopicProduceResponse::default();
    tr.name = TopicName(StrBytes::from_string(topic.to_string()));
    tr.partition_responses = vec![pr];
    let mut produce = ProduceResponse::default();
    produce.responses = vec![tr];
    let mut p = frame(
        &header,
        ApiKey::Produce.response_header_version(PRODUCE_VERSION),
        &|out| produce.encode(out, PRODUCE_VERSION).map_err(|e| e.to_string()),
    )?;
    wire::end_frame(&mut p);
    let mut pd = PartitionData::default();
    pd.partition_index = 0;
    pd.high_watermark = 1;
    pd.last_stable_offset = 1;
    pd.preferred_read_replica = BrokerId(-1);
    pd.records = Some(Bytes::from(vec![0u8; records_bytes]));
    let mut ft = FetchableTopicResponse::default();
    ft.topic = TopicName(StrBytes::from_string(topic.to_string()));
    ft.partitions = vec![pd];
    let mut fetch = FetchResponse::default();
    fetch.responses = vec![ft];
    let mut f = frame(&header, ApiKey::Fetch.response_header_version(FETCH_VERSION), &|out| {
        fetch.encode(out, FETCH_VERSION).map_err(|e| e.to_string())
    })?;
    wire::end_frame(&mut f);
    // The records are the response's last field: the head is the rest.
    f.truncate(f.len() - records_bytes);
    Ok(Answers {
        produce: p.to_vec(),
        fetch_head: f.to_vec(),
        records_bytes,
    })
}

/// The bytes of the floor's Fetch answer before its records.
pub fn fetch_head_bytes(topic: &str) -> Result<usize, String> {
    Ok(answers(topic, 0)?.fetch_head.len())
}

/// Serves the floor on `addr` on this thread until the process ends.
pub fn serve(addr: &str, topic: &str, records_bytes: usize, core: Option<usize>) -> Result<(), String> {
    if let Some(id) = core {
        core_affinity::set_for_current(core_affinity::CoreId { id });
    }
    let answers = Rc::new(answers(topic, records_bytes)?);
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let path = dir.path().join("records");
    std::fs::write(&path, vec![0x42u8; records_bytes]).map_err(|e| e.to_string())?;
    let file = Rc::new(std::fs::File::open(&path).map_err(|e| e.to_string())?);
    let rt = compio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let listener = TcpListener::bind(addr).await.map_err(|e| e.to_string())?;
        loop {
            let (stream, _) = listener.accept().await.map_err(|e| e.to_string())?;
            let _ = stream.set_nodelay(true);
            let (answers, file) = (answers.clone(), file.clone());
            compio::runtime::spawn(async move {
                let _ = connection(stream, &answers, &file).await;
            })
            .detach();
        }
    })
}

async fn connection(mut stream: TcpStream, a: &Answers, file: &std::fs::File) -> std::io::Result<()> {
    let mut produce = a.produce.clone();
    let mut fetch_head = a.fetch_head.clone();
    loop {
        let BufResult(r, len) = stream.read_exact([0u8; 4]).await;
        r?;
        let len = i32::from_be_bytes(len).max(0) as usize;
        // read_exact fills the buffer's capacity: exactly the frame.
        let BufResult(r, body) = stream.read_exact(Vec::with_capacity(len)).await;
        r?;
        if body.len() < 8 {
            return Ok(());
        }
        let key = i16::from_be_bytes([body[0], body[1]]);
        let correlation = i32::from_be_bytes([body[4], body[5], body[6], body[7]]);
        if key == ApiKey::Fetch as i16 {
            set_correlation(&mut fetch_head, 4, correlation);
            let BufResult(r, back) = stream.write_all(fetch_head).await;
            fetch_head = back;
            r?;
            send_file(&stream, file, a.records_bytes)?;
        } else {
            set_correlation(&mut produce, 4, correlation);
            let BufResult(r, back) = stream.write_all(produce).await;
            produce = back;
            r?;
        }
    }
}

/// sendfile of the whole record file; the socket has room for a batch
/// this small, and waits briefly when it has not.
fn send_file(stream: &TcpStream, file: &std::fs::File, len: usize) -> std::io::Result<()> {
    let mut offset = 0u64;
    while (offset as usize) < len {
        let left = len - offset as usize;
        match rustix::fs::sendfile(stream.as_fd(), file, Some(&mut offset), left) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(_) => {}
            Err(rustix::io::Errno::AGAIN) => std::thread::yield_now(),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// What one drive measured.
#[derive(Debug, Clone)]
pub struct Driven {
    pub requests: u64,
    pub seconds: f64,
    /// The server's CPU seconds over the measured window.
    pub server_cpu_s: f64,
    /// Bytes of the last answer (length prefix included).
    pub answer_bytes: usize,
}

impl Driven {
    pub fn cpu_us_per_request(&self) -> f64 {
        self.server_cpu_s * 1e6 / self.requests.max(1) as f64
    }
}

fn cpu_seconds(pid: u32) -> f64 {
    crate::run::proc_cpu_seconds(pid).unwrap_or(0.0)
}

/// Sends `frames` (round-robin, one per request) to `addr` at `rate`
/// requests a second over `conns` connections, one request in flight per
/// connection, for `warmup` then `secs`; measures `pid`'s CPU over the
/// second part.
#[allow(clippy::too_many_arguments)]
pub fn drive(
    addr: &str,
    frames: Vec<BytesMut>,
    rate: f64,
    conns: usize,
    warmup: Duration,
    secs: Duration,
    pid: u32,
    core: Option<usize>,
) -> Result<Driven, String> {
    if let Some(id) = core {
        core_affinity::set_for_current(core_affinity::CoreId { id });
    }
    let rt = compio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let count = Rc::new(Cell::new(0u64));
        let answer = Rc::new(Cell::new(0usize));
        let start = Instant::now();
        let end = start + warmup + secs;
        let per_conn = rate / conns as f64;
        let frames = Rc::new(frames);
        let mut tasks = Vec::new();
        for c in 0..conns {
            let (count, answer, frames) = (count.clone(), answer.clone(), frames.clone());
            let addr = addr.to_string();
            tasks.push(compio::runtime::spawn(async move {
                let mut stream = TcpStream::connect(&addr).await.map_err(|e| e.to_string())?;
                stream.set_nodelay(true).map_err(|e| e.to_string())?;
                let mut reader = FrameReader::new(16 << 20);
                let interval = Duration::from_secs_f64(1.0 / per_conn);
                // Connections start spread over one interval.
                let mut due = start + interval.mul_f64(c as f64 / conns as f64);
                let mut n: usize = c;
                while due < end {
                    let now = Instant::now();
                    if due > now {
                        compio::runtime::time::sleep(due - now).await;
                    }
                    let mut frame = frames[n % frames.len()].clone();
                    n += 1;
                    let correlation = n as i32;
                    set_correlation(&mut frame, 8, correlation);
                    let BufResult(r, _) = stream.write_all(frame).await;
                    r.map_err(|e| e.to_string())?;
                    let got = reader
                        .next(&mut stream)
                        .await
                        .map_err(|e| e.to_string())?
                        .ok_or("the server closed the connection")?;
                    let back = i32::from_be_bytes([got[0], got[1], got[2], got[3]]);
                    if back != correlation {
                        return Err(format!("answer to {back} while waiting for {correlation}"));
                    }
                    answer.set(got.len() + 4);
                    if Instant::now() >= start + warmup {
                        count.set(count.get() + 1);
                    }
                    due += interval;
                }
                Ok::<(), String>(())
            }));
        }
        compio::runtime::time::sleep(warmup).await;
        let cpu0 = cpu_seconds(pid);
        let counted0 = count.get();
        let t0 = Instant::now();
        compio::runtime::time::sleep(secs).await;
        let cpu1 = cpu_seconds(pid);
        let counted = count.get() - counted0;
        let seconds = t0.elapsed().as_secs_f64();
        for t in tasks {
            match t.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err("a driver task panicked".into()),
            }
        }
        Ok(Driven {
            requests: counted,
            seconds,
            server_cpu_s: cpu1 - cpu0,
            answer_bytes: answer.get(),
        })
    })
}

#[cfg(test)]
mod tests {
    use bytes::Buf;
    use kafka_protocol::protocol::Decodable;

    use super::*;

    #[test]
    fn the_floors_answers_are_kafka_responses_of_the_asked_sizes() {
        let a = answers("floor-topic", 100).unwrap();
        let mut p = Bytes::from(a.produce.clone());
        assert_eq!(p.get_i32() as usize, p.len());
        let h = ResponseHeader::decode(&mut p, ApiKey::Produce.response_header_version(PRODUCE_VERSION)).unwrap();
        assert_eq!(h.correlation_id, 0);
        let r = ProduceResponse::decode(&mut p, PRODUCE_VERSION).unwrap();
        assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
        // The head, then the records from the file, make one answer.
        let mut whole = BytesMut::from(&a.fetch_head[..]);
        whole.extend_from_slice(&[0x42; 100]);
        set_correlation(&mut whole, 4, 77);
        let mut f = whole.freeze();
        assert_eq!(f.get_i32() as usize, f.len());
        let h = ResponseHeader::decode(&mut f, ApiKey::Fetch.response_header_version(FETCH_VERSION)).unwrap();
        assert_eq!(h.correlation_id, 77);
        let r = FetchResponse::decode(&mut f, FETCH_VERSION).unwrap();
        assert_eq!(r.responses[0].partitions[0].records.as_ref().map(Bytes::len), Some(100));
        assert_eq!(fetch_head_bytes("floor-topic").unwrap(), a.fetch_head.len());
    }

    #[test]
    fn requests_carry_their_correlation_where_the_driver_writes_it() {
        let mut p = produce_request("t", 3, 1024).unwrap();
        set_correlation(&mut p, 8, 99);
        let mut b = p.freeze();
        assert_eq!(b.get_i32() as usize, b.len());
        let h = RequestHeader::decode(&mut b, 1).unwrap();
        assert_eq!((h.request_api_key, h.correlation_id), (ApiKey::Produce as i16, 99));
        let mut f = fetch_request("t", 3, 2048).unwrap().freeze();
        assert_eq!(f.get_i32() as usize, f.len());
        let h = RequestHeader::decode(&mut f, ApiKey::Fetch.request_header_version(FETCH_VERSION)).unwrap();
        assert_eq!(h.request_api_key, ApiKey::Fetch as i16);
        let r = FetchRequest::decode(&mut f, FETCH_VERSION).unwrap();
        assert_eq!(r.topics[0].partitions[0].partition, 3);
    }
}
