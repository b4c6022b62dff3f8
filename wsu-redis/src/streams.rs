//! [`Streams`] on Redis, as Centrifugo does it: per stream a meta hash (epoch `e`, top offset
//! `s`) and a Redis stream whose entry IDs are the offsets (`<offset>-0`); one Lua script
//! assigns the offset, appends, trims, refreshes the TTLs and publishes the entry on the
//! prefix's entries channel, so that the order of delivery is the order of offsets.
//!
//! Keys (the `{…}` hash tag keeps a stream's two keys on one Redis Cluster slot):
//!
//! - `{<prefix>:s:<stream>}:x`: the stream (field `d`: the payload);
//! - `{<prefix>:s:<stream>}:m`: its meta hash;
//! - `{<prefix>:k:<key>}`: a stored value ([`Streams::put`]);
//! - channel `<prefix>:streams`: every appended entry, framed by [`encode`]'s layout:
//!   `w1 <offset> <prev> <epoch> <stream length>\n<stream><payload>`.

use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use redis::Value;
use wsu::cluster::{
    EngineError, EngineFuture, EngineSink, StreamLimits, StreamPos, StreamRead, Streams,
};

use crate::publisher::{Op, ScriptId};
use crate::subscriber::Route;
use crate::{RedisEngine, joined};

/// KEYS: stream, meta. ARGV: payload, keep, ttl (ms), meta ttl (ms), a new epoch (used if the
/// stream has none), channel, stream name. Returns `{offset, epoch}`.
pub(crate) const APPEND: &str = r"
local epoch = redis.call('HGET', KEYS[2], 'e')
if not epoch then
  epoch = ARGV[5]
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[2], 'e', epoch, 's', 0)
end
local offset = redis.call('HINCRBY', KEYS[2], 's', 1)
local id = string.format('%.0f', offset)
redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[2], id .. '-0', 'd', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
redis.call('PUBLISH', ARGV[6], 'w1 ' .. id .. ' ' .. string.format('%.0f', offset - 1) .. ' '
  .. epoch .. ' ' .. string.len(ARGV[7]) .. '\n' .. ARGV[7] .. ARGV[1])
return {id, epoch}
";

/// KEYS: stream, meta. ARGV: after, limit. Returns `{epoch, top, entries}`, epoch `''` when the
/// stream has no meta.
pub(crate) const READ: &str = r"
local m = redis.call('HMGET', KEYS[2], 'e', 's')
if not m[1] then
  return {'', '0', {}}
end
local r = {}
if tonumber(ARGV[2]) > 0 then
  r = redis.call('XRANGE', KEYS[1], '(' .. ARGV[1] .. '-0', '+', 'COUNT', ARGV[2])
end
return {m[1], m[2] or '0', r}
";

/// The shortest life of a meta hash (it outlives its stream, so that offsets go on after the
/// entries expired).
const META_TTL: Duration = Duration::from_secs(24 * 3600);

/// The names [`Streams::start`] fixed.
pub(crate) struct Names {
    prefix: String,
    channel: String,
}

impl Names {
    fn keys(&self, stream: &str) -> [String; 2] {
        let tag = format!("{{{}:s:{stream}}}", self.prefix);
        [format!("{tag}:x"), format!("{tag}:m")]
    }

    fn value_key(&self, key: &str) -> String {
        format!("{{{}:k:{key}}}", self.prefix)
    }
}

/// A new random epoch: 16 hex digits.
fn new_epoch() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(N.fetch_add(1, Ordering::Relaxed));
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    h.write_u128(nanos);
    format!("{:016x}", h.finish())
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// The frame [`APPEND`] publishes (for tests of [`decode`]).
#[cfg(test)]
fn encode(stream: &str, pos: &StreamPos, payload: &[u8]) -> Vec<u8> {
    let mut v = format!(
        "w1 {} {} {} {}\n{stream}",
        pos.offset,
        pos.prev,
        pos.epoch,
        stream.len()
    )
    .into_bytes();
    v.extend_from_slice(payload);
    v
}

/// A published entry: (stream, position, payload); `None` if it is not one.
pub(crate) fn decode(frame: Vec<u8>) -> Option<(Arc<str>, StreamPos, Bytes)> {
    let nl = frame.iter().position(|&b| b == b'\n')?;
    let header = std::str::from_utf8(&frame[..nl]).ok()?;
    let mut f = header.split(' ');
    if f.next()? != "w1" {
        return None;
    }
    let offset = f.next()?.parse().ok()?;
    let prev = f.next()?.parse().ok()?;
    let epoch = f.next()?;
    let len: usize = f.next()?.parse().ok()?;
    if f.next().is_some() {
        return None;
    }
    let start = nl + 1;
    let end = start.checked_add(len).filter(|&e| e <= frame.len())?;
    let stream = Arc::from(std::str::from_utf8(&frame[start..end]).ok()?);
    let pos = StreamPos::new(offset, prev, epoch);
    let mut payload = Bytes::from(frame);
    Some((stream, pos, payload.split_off(end)))
}

fn bad_reply(what: &str, v: &Value) -> EngineError {
    EngineError::Other(format!("unexpected redis reply to {what}: {v:?}"))
}

fn string(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

fn number(v: &Value) -> Option<u64> {
    string(v)?.parse().ok()
}

/// The position [`APPEND`] replied.
fn appended(v: Value) -> Result<StreamPos, EngineError> {
    if let Value::Array(a) = &v {
        if let [offset, epoch] = &a[..] {
            if let (Some(offset), Some(epoch)) = (number(offset), string(epoch)) {
                return Ok(StreamPos::new(offset, offset.saturating_sub(1), epoch));
            }
        }
    }
    Err(bad_reply("the append script", &v))
}

/// What [`READ`] replied. Offsets are contiguous in a Redis stream: an entry's `prev` is its
/// offset minus one (so the first kept after a trim shows the gap).
fn read_reply(v: Value) -> Result<StreamRead, EngineError> {
    let bad = |v: &Value| bad_reply("the read script", v);
    let Value::Array(a) = &v else {
        return Err(bad(&v));
    };
    let [epoch, top, entries] = &a[..] else {
        return Err(bad(&v));
    };
    let epoch = string(epoch).ok_or_else(|| bad(&v))?;
    let top = number(top).ok_or_else(|| bad(&v))?;
    if epoch.is_empty() {
        return Ok(StreamRead::new(new_epoch(), 0, Vec::new()));
    }
    let Value::Array(entries) = entries else {
        return Err(bad(&v));
    };
    let mut out = Vec::with_capacity(entries.len());
    for e in entries {
        let Value::Array(e) = e else {
            return Err(bad(&v));
        };
        let [id, fields] = &e[..] else {
            return Err(bad(&v));
        };
        let offset = string(id)
            .and_then(|id| id.strip_suffix("-0")?.parse::<u64>().ok())
            .ok_or_else(|| bad(&v))?;
        let payload = match fields {
            Value::Array(f) => match &f[..] {
                [_, Value::BulkString(p)] => Bytes::from(p.clone()),
                _ => return Err(bad(&v)),
            },
            Value::Map(m) => match &m[..] {
                [(_, Value::BulkString(p))] => Bytes::from(p.clone()),
                _ => return Err(bad(&v)),
            },
            _ => return Err(bad(&v)),
        };
        out.push((
            StreamPos::new(offset, offset.saturating_sub(1), epoch.clone()),
            payload,
        ));
    }
    Ok(StreamRead::new(epoch, top, out))
}

impl RedisEngine {
    fn names(&self) -> Result<&Names, EngineError> {
        self.streams
            .get()
            .ok_or_else(|| EngineError::Other("Streams::start was not called".into()))
    }

    fn failed<T: Send + 'static>(e: EngineError) -> EngineFuture<'static, Result<T, EngineError>> {
        Box::pin(std::future::ready(Err(e)))
    }
}

impl Streams for RedisEngine {
    fn start(&self, prefix: &str, sink: EngineSink) -> EngineFuture<'_, Result<(), EngineError>> {
        let names = Names {
            prefix: prefix.to_owned(),
            channel: format!("{prefix}:streams"),
        };
        let channel = names.channel.clone();
        if self.streams.set(names).is_err() {
            return Self::failed(EngineError::Other(
                "RedisEngine: Streams::start may only be called once".into(),
            ));
        }
        let route = Route::Entries { sink: sink.clone() };
        Box::pin(joined(self.join(vec![(channel, route)], sink)))
    }

    fn append(
        &self,
        stream: &str,
        payload: Bytes,
        limits: StreamLimits,
    ) -> EngineFuture<'static, Result<StreamPos, EngineError>> {
        let names = match self.names() {
            Ok(n) => n,
            Err(e) => return Self::failed(e),
        };
        let len = payload.len();
        let ttl = millis(limits.ttl);
        let op = Op::Script {
            script: ScriptId::Append,
            keys: names.keys(stream),
            args: vec![
                payload,
                Bytes::from(limits.keep.to_string()),
                Bytes::from(ttl.to_string()),
                Bytes::from(ttl.max(millis(META_TTL)).to_string()),
                Bytes::from(new_epoch()),
                Bytes::from(names.channel.clone()),
                Bytes::copy_from_slice(stream.as_bytes()),
            ],
        };
        self.request(op, len, appended)
    }

    fn read(
        &self,
        stream: &str,
        after: u64,
        limit: usize,
    ) -> EngineFuture<'static, Result<StreamRead, EngineError>> {
        let names = match self.names() {
            Ok(n) => n,
            Err(e) => return Self::failed(e),
        };
        let op = Op::Script {
            script: ScriptId::Read,
            keys: names.keys(stream),
            args: vec![
                Bytes::from(after.to_string()),
                Bytes::from(limit.to_string()),
            ],
        };
        self.request(op, 0, read_reply)
    }

    fn put(
        &self,
        key: &str,
        value: Bytes,
        ttl: Duration,
    ) -> EngineFuture<'static, Result<(), EngineError>> {
        let names = match self.names() {
            Ok(n) => n,
            Err(e) => return Self::failed(e),
        };
        let len = value.len();
        let op = Op::Put {
            key: names.value_key(key),
            value,
            ttl_ms: millis(ttl),
        };
        self.request(op, len, |_| Ok(()))
    }

    fn take(&self, key: &str) -> EngineFuture<'static, Result<Option<Bytes>, EngineError>> {
        let names = match self.names() {
            Ok(n) => n,
            Err(e) => return Self::failed(e),
        };
        let op = Op::Take {
            key: names.value_key(key),
        };
        self.request(op, 0, |v| match v {
            Value::Nil => Ok(None),
            Value::BulkString(b) => Ok(Some(Bytes::from(b))),
            v => Err(bad_reply("GETDEL", &v)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        for (stream, payload) in [
            ("/x", &b"x3\n{}"[..]),
            ("/chat room:\u{fc}", b""),
            ("a\nb 7 8", b"\n\n w1 1 2 3 4\n"),
            ("", b"p"),
        ] {
            let pos = StreamPos::new(u64::MAX, u64::MAX - 1, "0123abcd");
            let (s, p, b) = decode(encode(stream, &pos, payload)).expect("decodes");
            assert_eq!((&*s, p, &b[..]), (stream, pos, payload));
        }
        assert!(decode(b"w1 1 0 e 5\nabc".to_vec()).is_none(), "short");
        assert!(decode(b"w2 1 0 e 1\na".to_vec()).is_none(), "version");
        assert!(decode(b"no header".to_vec()).is_none());
    }

    #[test]
    fn keys_share_a_hash_tag() {
        let n = Names {
            prefix: "p".into(),
            channel: "p:streams".into(),
        };
        assert_eq!(
            n.keys("/a b"),
            ["{p:s:/a b}:x".to_owned(), "{p:s:/a b}:m".to_owned()]
        );
        assert_eq!(n.value_key("k"), "{p:k:k}");
        assert_ne!(new_epoch(), new_epoch());
    }
}
