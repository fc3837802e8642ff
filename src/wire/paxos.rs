//! The `POST /paxos` bodies between a gateway (the proposer) and a key's owners
//! (the acceptors), and the acceptor state a node keeps in its log; the protocol
//! itself is [`crate::paxos`].
//!
//! # Layout (format version 1), integers little-endian
//!
//! ```text
//! request   8 bytes  magic "YDHTPXQ" + format version byte (1)
//!           4 bytes  message count N (u32), 1..=MAX_MESSAGES, then N messages:
//!           1 byte   message: 1 prepare, 2 accept, 3 commit, 4 accept after (a fast round)
//!           2+K      key length (u16), key (UTF-8, the node's storage key)
//!           16       ballot: time (u64), proposer (u64)
//!           16       accept after only: the ballot of the chosen proposal it builds on
//!           2+8A     prepare only: A versions (u16 count, u64 each) the promise says whether
//!                    the owner stored (the versions a retrying proposer proposed before)
//!           frame    accept, commit and accept after: the proposed record (a WAL record frame, same key)
//!
//! answer    8 bytes  magic "YDHTPXA" + format version byte (1)
//!           4 bytes  reply count (u32), equal to the request's N, then one reply per message, in order:
//!           1 byte   reply: 1 promised, 2 refused, 3 accepted, 4 committed
//!           promised: proposal?  (flag byte; ballot, record frame) the accepted, uncommitted proposal
//!                     record?    (flag byte; record frame) the key's record in the store
//!                     ballot?    (flag byte; ballot) the latest commit applied
//!                     2+8N       versions recently stored (u16 count N, then N u64)
//!           refused:  ballot     the promise that outranks the request
//!
//! state     flags (u8: 1 promised, 2 last commit, 4 accepted), then the
//!           ballots flagged, then the accepted proposal (ballot, record frame)
//! ```
//!
//! Nothing may follow the last field.

use bytes::Bytes;

use crate::paxos::{Acceptance, Acceptor, Ballot, Message, Promise, Proposal, Reply};
use crate::wal::Record;
use crate::wal::codec::{DecodeError, Reader};
use crate::wal::frame::{FrameError, HeaderError};
use crate::wal::record::{self, Decoded, EncodeError, FILE_HEADER_BYTES, check_file_header, file_header};

impl crate::paxos::Versioned for Record {
    fn version(&self) -> u64 {
        self.version
    }
}

/// Magic of a request body.
const REQUEST_MAGIC: &[u8; 7] = b"YDHTPXQ";
/// Magic of an answer body.
const ANSWER_MAGIC: &[u8; 7] = b"YDHTPXA";
/// Bytes a request adds to its record's value: header, key, ballot, record framing.
pub const MAX_OVERHEAD_BYTES: usize = 8 + 1 + 2 + 65_535 * 2 + 16 + 64;
/// Most messages one request carries (a gateway batches the messages of concurrent rounds per node).
pub const MAX_MESSAGES: usize = 256;
/// Content type of both bodies.
pub const PAXOS_CONTENT_TYPE: &str = "application/x-ydht-paxos";

/// Why a Paxos body or a logged acceptor state was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PaxosBodyError {
    /// Another kind of body, or another format version.
    #[error("not a ydht Paxos {body}: {source}")]
    Header {
        /// `request` / `answer`.
        body: &'static str,
        /// What the header holds instead.
        source: HeaderError,
    },
    /// A field is cut short or out of range.
    #[error("bad Paxos {body}: {source}")]
    Field {
        /// `request`, `answer`, `acceptor state`.
        body: &'static str,
        /// What failed.
        source: DecodeError,
    },
    /// An embedded record frame is cut short or damaged.
    #[error("bad Paxos {body}: its record {reason}")]
    Record {
        /// `request`, `answer`, `acceptor state`.
        body: &'static str,
        /// What failed.
        reason: String,
    },
    /// A request with no messages, or more than [`MAX_MESSAGES`].
    #[error("a Paxos request holds {count} messages; it must hold 1 to {MAX_MESSAGES}")]
    Count {
        /// How many it claims.
        count: usize,
    },
    /// An answer with another number of replies than messages asked.
    #[error("the Paxos answer holds {count} replies for {asked} messages")]
    Replies {
        /// Replies in the answer.
        count: usize,
        /// Messages asked.
        asked: usize,
    },
    /// A proposed record for another key than the request's.
    #[error("the proposed record is for key {record:?}, not {key:?}")]
    OtherKey {
        /// The request's key.
        key: String,
        /// The record's.
        record: String,
    },
}

/// One request: a message about one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The node's storage key.
    pub key: String,
    /// What the proposer asks.
    pub message: Message<Record>,
    /// For a prepare: the versions the promise says whether the owner stored (`held`); only a
    /// proposer retrying after it proposed asks for any.
    pub held: Vec<u64>,
}

const PREPARE: u8 = 1;
const ACCEPT: u8 = 2;
const COMMIT: u8 = 3;
const ACCEPT_AFTER: u8 = 4;
/// Most versions a prepare asks about.
pub const MAX_ASKED: usize = 1024;

const PROMISED: u8 = 1;
const REFUSED: u8 = 2;
const ACCEPTED: u8 = 3;
const COMMITTED: u8 = 4;

fn put_ballot(out: &mut Vec<u8>, ballot: Ballot) {
    out.extend_from_slice(&ballot.time.to_le_bytes());
    out.extend_from_slice(&ballot.proposer.to_le_bytes());
}

fn put_key(out: &mut Vec<u8>, key: &str) -> Result<(), EncodeError> {
    let len = u16::try_from(key.len()).map_err(|_| EncodeError::KeyTooLong(key.len()))?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(key.as_bytes());
    Ok(())
}

/// Encodes a request body of `requests` (1..=[`MAX_MESSAGES`]).
pub fn encode_requests(requests: &[Request]) -> Result<Vec<u8>, EncodeError> {
    let mut out = file_header(REQUEST_MAGIC).to_vec();
    out.extend_from_slice(&(requests.len() as u32).to_le_bytes());
    for request in requests {
        encode_request(request, &mut out)?;
    }
    Ok(out)
}

fn encode_request(request: &Request, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let (kind, ballot, record, after) = match &request.message {
        Message::Prepare(ballot) => (PREPARE, *ballot, None, None),
        Message::Accept(proposal) => (ACCEPT, proposal.ballot, Some(&proposal.value), None),
        Message::Commit(proposal) => (COMMIT, proposal.ballot, Some(&proposal.value), None),
        Message::AcceptAfter { proposal, after } => {
            (ACCEPT_AFTER, proposal.ballot, Some(&proposal.value), Some(*after))
        }
    };
    out.push(kind);
    put_key(out, &request.key)?;
    put_ballot(out, ballot);
    if let Some(after) = after {
        put_ballot(out, after);
    }
    if let Some(record) = record {
        record::encode(record, out)?;
    } else {
        let asked = &request.held[..request.held.len().min(MAX_ASKED)];
        out.extend_from_slice(&(asked.len() as u16).to_le_bytes());
        for version in asked {
            out.extend_from_slice(&version.to_le_bytes());
        }
    }
    Ok(())
}

/// Decodes a request body; each proposed record must be for its message's key.
pub fn decode_requests(body: &[u8]) -> Result<Vec<Request>, PaxosBodyError> {
    const BODY: &str = "request";
    check_file_header(body, REQUEST_MAGIC).map_err(|source| PaxosBodyError::Header { body: BODY, source })?;
    let mut reader = Fields { reader: Reader::new(body, FILE_HEADER_BYTES), body: BODY };
    let count = reader.u32()? as usize;
    if !(1..=MAX_MESSAGES).contains(&count) {
        return Err(PaxosBodyError::Count { count });
    }
    let requests = (0..count).map(|_| decode_request(&mut reader)).collect::<Result<Vec<_>, _>>()?;
    reader.finish()?;
    Ok(requests)
}

fn decode_request(reader: &mut Fields<'_>) -> Result<Request, PaxosBodyError> {
    let kind = reader.u8()?;
    let key = reader.text16()?;
    let ballot = reader.ballot()?;
    let mut held = Vec::new();
    let message = match kind {
        PREPARE => {
            let count = usize::from(reader.u16()?);
            if count > MAX_ASKED {
                return Err(reader.error(DecodeError::Inconsistent("a prepare asks about too many versions")));
            }
            for _ in 0..count {
                held.push(reader.u64()?);
            }
            Message::Prepare(ballot)
        }
        ACCEPT | COMMIT | ACCEPT_AFTER => {
            let after = if kind == ACCEPT_AFTER { Some(reader.ballot()?) } else { None };
            let value = reader.record()?;
            if value.key != key {
                return Err(PaxosBodyError::OtherKey { key, record: value.key });
            }
            let proposal = Proposal { ballot, value };
            match (kind, after) {
                (ACCEPT, _) => Message::Accept(proposal),
                (_, Some(after)) => Message::AcceptAfter { proposal, after },
                _ => Message::Commit(proposal),
            }
        }
        value => return Err(reader.error(DecodeError::Unknown { what: "Paxos message", value })),
    };
    Ok(Request { key, message, held })
}

/// Encodes an answer body: one reply per message, in order ([`Reply::Failed`] is never sent;
/// it stands for the absence of an answer).
pub fn encode_replies(replies: &[Reply<Record>]) -> Result<Vec<u8>, EncodeError> {
    let mut out = file_header(ANSWER_MAGIC).to_vec();
    out.extend_from_slice(&(replies.len() as u32).to_le_bytes());
    for reply in replies {
        encode_reply(reply, &mut out)?;
    }
    Ok(out)
}

fn encode_reply(reply: &Reply<Record>, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    match reply {
        Reply::Promise(Promise::Promised { accepted, committed, last_commit, held }) => {
            out.push(PROMISED);
            put_proposal(out, accepted.as_ref())?;
            match committed {
                Some(record) => {
                    out.push(1);
                    record::encode(record, out)?;
                }
                None => out.push(0),
            }
            put_optional_ballot(out, *last_commit);
            let count = held.len().min(usize::from(u16::MAX));
            out.extend_from_slice(&(count as u16).to_le_bytes());
            for version in &held[held.len() - count..] {
                out.extend_from_slice(&version.to_le_bytes());
            }
        }
        Reply::Promise(Promise::Refused { promised }) | Reply::Acceptance(Acceptance::Refused { promised }) => {
            out.push(REFUSED);
            put_ballot(out, *promised);
        }
        Reply::Acceptance(Acceptance::Accepted) => out.push(ACCEPTED),
        Reply::Committed | Reply::Failed => out.push(COMMITTED),
    }
    Ok(())
}

/// Decodes an answer body to the `asked` messages, one reply each (a refusal
/// is a refused promise or a refused acceptance, by what was asked).
pub fn decode_replies(body: &[u8], asked: &[&Message<Record>]) -> Result<Vec<Reply<Record>>, PaxosBodyError> {
    const BODY: &str = "answer";
    check_file_header(body, ANSWER_MAGIC).map_err(|source| PaxosBodyError::Header { body: BODY, source })?;
    let mut reader = Fields { reader: Reader::new(body, FILE_HEADER_BYTES), body: BODY };
    let count = reader.u32()? as usize;
    if count != asked.len() {
        return Err(PaxosBodyError::Replies { count, asked: asked.len() });
    }
    let replies = asked.iter().map(|asked| decode_reply(&mut reader, asked)).collect::<Result<Vec<_>, _>>()?;
    reader.finish()?;
    Ok(replies)
}

fn decode_reply(reader: &mut Fields<'_>, asked: &Message<Record>) -> Result<Reply<Record>, PaxosBodyError> {
    let reply = match (reader.u8()?, asked) {
        (PROMISED, Message::Prepare(_)) => {
            let accepted = reader.proposal()?;
            let committed = if reader.u8()? == 1 { Some(reader.record()?) } else { None };
            let last_commit = reader.optional_ballot()?;
            let count = reader.u16()?;
            let held = (0..count).map(|_| reader.u64()).collect::<Result<Vec<_>, _>>()?;
            Reply::Promise(Promise::Promised { accepted, committed, last_commit, held })
        }
        (REFUSED, Message::Prepare(_)) => Reply::Promise(Promise::Refused { promised: reader.ballot()? }),
        (REFUSED, Message::Accept(_) | Message::AcceptAfter { .. }) => {
            Reply::Acceptance(Acceptance::Refused { promised: reader.ballot()? })
        }
        (ACCEPTED, Message::Accept(_) | Message::AcceptAfter { .. }) => Reply::Acceptance(Acceptance::Accepted),
        (COMMITTED, Message::Commit(_)) => Reply::Committed,
        (value, _) => return Err(reader.error(DecodeError::Unknown { what: "Paxos reply to this message", value })),
    };
    Ok(reply)
}

fn put_optional_ballot(out: &mut Vec<u8>, ballot: Option<Ballot>) {
    match ballot {
        Some(ballot) => {
            out.push(1);
            put_ballot(out, ballot);
        }
        None => out.push(0),
    }
}

fn put_proposal(out: &mut Vec<u8>, proposal: Option<&Proposal<Record>>) -> Result<(), EncodeError> {
    match proposal {
        Some(proposal) => {
            out.push(1);
            put_ballot(out, proposal.ballot);
            record::encode(&proposal.value, out)
        }
        None => {
            out.push(0);
            Ok(())
        }
    }
}

/// Versions of `held` a logged state keeps (the newest).
pub const LOGGED_HELD: usize = 32;

/// Encodes an acceptor's durable state; with `held`, also its newest [`LOGGED_HELD`] stored
/// versions (a commit logs them, so a restarted node still knows what it stored lately).
pub fn encode_state(acceptor: &Acceptor<Record>, held: bool) -> Result<Bytes, EncodeError> {
    let mut out = Vec::new();
    let held = if held { &acceptor.held[acceptor.held.len().saturating_sub(LOGGED_HELD)..] } else { &[] };
    let flags = u8::from(acceptor.promised.is_some())
        | u8::from(acceptor.last_commit.is_some()) << 1
        | u8::from(acceptor.accepted.is_some()) << 2
        | u8::from(!held.is_empty()) << 3;
    out.push(flags);
    for ballot in [acceptor.promised, acceptor.last_commit].into_iter().flatten() {
        put_ballot(&mut out, ballot);
    }
    if let Some(proposal) = &acceptor.accepted {
        put_ballot(&mut out, proposal.ballot);
        record::encode(&proposal.value, &mut out)?;
    }
    if !held.is_empty() {
        out.push(held.len() as u8);
        for version in held {
            out.extend_from_slice(&version.to_le_bytes());
        }
    }
    Ok(out.into())
}

/// Decodes a logged acceptor state.
pub fn decode_state(bytes: &[u8]) -> Result<Acceptor<Record>, PaxosBodyError> {
    let mut reader = Fields { reader: Reader::new(bytes, 0), body: "acceptor state" };
    let flags = reader.u8()?;
    let promised = if flags & 1 != 0 { Some(reader.ballot()?) } else { None };
    let last_commit = if flags & 2 != 0 { Some(reader.ballot()?) } else { None };
    let accepted =
        if flags & 4 != 0 { Some(Proposal { ballot: reader.ballot()?, value: reader.record()? }) } else { None };
    let mut held = Vec::new();
    if flags & 8 != 0 {
        let count = reader.u8()?;
        for _ in 0..count {
            held.push(reader.u64()?);
        }
    }
    reader.finish()?;
    Ok(Acceptor { promised, accepted, last_commit, held })
}

/// A [`Reader`] that names its body in errors and reads ballots and records.
struct Fields<'a> {
    reader: Reader<'a>,
    body: &'static str,
}

impl Fields<'_> {
    fn error(&self, source: DecodeError) -> PaxosBodyError {
        PaxosBodyError::Field { body: self.body, source }
    }

    fn u8(&mut self) -> Result<u8, PaxosBodyError> {
        self.reader.u8().map_err(|source| self.error(source))
    }

    fn u32(&mut self) -> Result<u32, PaxosBodyError> {
        self.reader.u32().map_err(|source| self.error(source))
    }

    fn u16(&mut self) -> Result<u16, PaxosBodyError> {
        self.reader.u16().map_err(|source| self.error(source))
    }

    fn u64(&mut self) -> Result<u64, PaxosBodyError> {
        self.reader.u64().map_err(|source| self.error(source))
    }

    fn text16(&mut self) -> Result<String, PaxosBodyError> {
        self.reader.text16().map(str::to_string).map_err(|source| self.error(source))
    }

    fn ballot(&mut self) -> Result<Ballot, PaxosBodyError> {
        Ok(Ballot { time: self.u64()?, proposer: self.u64()? })
    }

    fn optional_ballot(&mut self) -> Result<Option<Ballot>, PaxosBodyError> {
        if self.u8()? == 1 { self.ballot().map(Some) } else { Ok(None) }
    }

    fn proposal(&mut self) -> Result<Option<Proposal<Record>>, PaxosBodyError> {
        if self.u8()? != 1 {
            return Ok(None);
        }
        Ok(Some(Proposal { ballot: self.ballot()?, value: self.record()? }))
    }

    fn record(&mut self) -> Result<Record, PaxosBodyError> {
        let body = self.body;
        match record::decode(self.reader.rest()) {
            Decoded::Record(found, used) => {
                self.reader.take(used).map_err(|source| self.error(source))?;
                Ok(found)
            }
            Decoded::Incomplete => Err(PaxosBodyError::Record { body, reason: "is cut short".into() }),
            Decoded::Corrupt(reason) => Err(PaxosBodyError::Record { body, reason: describe(&reason) }),
        }
    }

    fn finish(&self) -> Result<(), PaxosBodyError> {
        self.reader.finish().map_err(|source| self.error(source))
    }
}

fn describe(reason: &FrameError) -> String {
    format!("is damaged ({reason})")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn record(version: u64) -> Record {
        Record::put("7/k", version, &b"v"[..], "text/plain").with_expiry(Some(99))
    }

    #[test]
    fn requests_round_trip() {
        let ballot = Ballot { time: 5, proposer: 9 };
        for message in [
            Message::Prepare(ballot),
            Message::Accept(Proposal { ballot, value: record(5) }),
            Message::Commit(Proposal { ballot, value: Record::delete("7/k", 5) }),
            Message::AcceptAfter {
                proposal: Proposal { ballot: Ballot::covering(5), value: record(7) },
                after: ballot,
            },
        ] {
            let held = if matches!(message, Message::Prepare(_)) { vec![3, 4] } else { Vec::new() };
            let request = Request { key: "7/k".into(), held, message };
            assert_eq!(decode_requests(&encode_requests(std::slice::from_ref(&request)).unwrap()), Ok(vec![request]));
        }
        let many: Vec<Request> = (0..3)
            .map(|n| Request {
                key: format!("7/k{n}"),
                message: Message::Prepare(Ballot { time: n, proposer: 1 }),
                held: vec![n],
            })
            .collect();
        assert_eq!(decode_requests(&encode_requests(&many).unwrap()), Ok(many));
        assert_eq!(decode_requests(&encode_requests(&[]).unwrap()), Err(PaxosBodyError::Count { count: 0 }));
    }

    #[test]
    fn a_proposal_for_another_key_is_refused() {
        let request = Request {
            key: "7/other".into(),
            message: Message::Accept(Proposal { ballot: Ballot::default(), value: record(1) }),
            held: Vec::new(),
        };
        let error = decode_requests(&encode_requests(&[request]).unwrap()).unwrap_err();
        assert!(error.to_string().contains("not \"7/other\""), "{error}");
    }

    #[test]
    fn replies_round_trip() {
        let ballot = Ballot { time: 5, proposer: 9 };
        let prepare = Message::Prepare(ballot);
        let accept = Message::Accept(Proposal { ballot, value: record(5) });
        let cases = [
            (
                Reply::Promise(Promise::Promised {
                    accepted: Some(Proposal { ballot, value: record(4) }),
                    committed: Some(record(3)),
                    last_commit: Some(Ballot { time: 3, proposer: 1 }),
                    held: vec![1, 2, 3],
                }),
                &prepare,
            ),
            (
                Reply::Promise(Promise::Promised { accepted: None, committed: None, last_commit: None, held: vec![] }),
                &prepare,
            ),
            (Reply::Promise(Promise::Refused { promised: ballot }), &prepare),
            (Reply::Acceptance(Acceptance::Refused { promised: ballot }), &accept),
            (Reply::Acceptance(Acceptance::Accepted), &accept),
        ];
        let (replies, asked): (Vec<_>, Vec<_>) = cases.into_iter().unzip();
        assert_eq!(decode_replies(&encode_replies(&replies).unwrap(), &asked), Ok(replies));
        let commit = Message::Commit(Proposal { ballot, value: record(5) });
        let committed = encode_replies(&[Reply::Committed]).unwrap();
        assert_eq!(decode_replies(&committed, &[&commit]), Ok(vec![Reply::Committed]));
        // An answer of the wrong kind for the question, or of another length, is an error, not a guess.
        assert!(decode_replies(&committed, &[&prepare]).is_err());
        assert!(decode_replies(&committed, &[&commit, &commit]).is_err());
    }

    #[test]
    fn states_round_trip() {
        let mut acceptor = Acceptor::<Record>::default();
        assert_eq!(decode_state(&encode_state(&acceptor, true).unwrap()), Ok(acceptor.clone()));
        acceptor.promised = Some(Ballot { time: 8, proposer: 2 });
        acceptor.last_commit = Some(Ballot { time: 6, proposer: 1 });
        acceptor.accepted = Some(Proposal { ballot: Ballot { time: 7, proposer: 3 }, value: record(7) });
        assert_eq!(decode_state(&encode_state(&acceptor, false).unwrap()), Ok(acceptor.clone()));
        acceptor.held = (1..=40).collect();
        let logged = decode_state(&encode_state(&acceptor, true).unwrap()).unwrap();
        assert_eq!(logged.held, (9..=40).collect::<Vec<u64>>(), "the newest LOGGED_HELD versions");
        assert_eq!(decode_state(&encode_state(&acceptor, false).unwrap()).unwrap().held, Vec::<u64>::new());
    }

    proptest! {
        #[test]
        fn no_body_makes_a_decoder_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let prepare = Message::Prepare(Ballot::default());
            let _ = decode_requests(&bytes);
            let _ = decode_replies(&bytes, &[&prepare]);
            let _ = decode_state(&bytes);
            let mut framed = file_header(REQUEST_MAGIC).to_vec();
            framed.extend_from_slice(&bytes);
            let _ = decode_requests(&framed);
            let mut answer = file_header(ANSWER_MAGIC).to_vec();
            answer.extend_from_slice(&bytes);
            let _ = decode_replies(&answer, &[&prepare]);
        }
    }
}
