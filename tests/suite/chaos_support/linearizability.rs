//! A linearizability checker for read/write registers: the Wing–Gong search
//! with Lowe's memoization of visited (linearized set, register value) states,
//! run separately for each key (P-compositionality: a history of independent
//! registers is linearizable iff each key's sub-history is).
//!
//! Operations whose outcome is unknown (a write that timed out or failed with
//! a 5xx may still have been applied) have no return time: they may take effect
//! at any point after their invocation, or never. Such a write whose value no
//! read returned (or no compare-and-set expected) is dropped up front — leaving
//! it out is always at least as permissive as placing it — which keeps the
//! search small.
//!
//! Conditional writes are compare-and-set operations: one that succeeded takes
//! effect only where the register holds its expected value; one refused (412)
//! only where it does not, and changes nothing.

use std::collections::{BTreeMap, HashMap, HashSet};

/// What an operation did to the register.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Wrote this value (values are unique per write).
    Write(String),
    /// Read this value (`None`: the key did not exist).
    Read(Option<String>),
    /// Wrote `new` if the register held `expected` (`None`: absent). `applied`:
    /// it answered 200 (`Some(true)`) or 412 (`Some(false)`); `None` with an
    /// unknown outcome (then the event has no return time either).
    Cas {
        /// The value it required.
        expected: Option<String>,
        /// The value it wrote.
        new: String,
        /// Whether it took effect, when known.
        applied: Option<bool>,
    },
}

/// One operation of the history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The register (key) it acted on.
    pub key: String,
    /// When it was invoked (any monotonic unit, e.g. µs since the test started).
    pub invoke: u64,
    /// When it returned; `None` when its outcome is unknown (writes only).
    pub ret: Option<u64>,
    /// What it did.
    pub op: Op,
}

/// Checks a whole history (initially every key is absent); on failure names
/// the first key whose sub-history is not linearizable, with its operations.
pub fn check(history: &[Event]) -> Result<(), String> {
    let mut by_key: BTreeMap<&str, Vec<&Event>> = BTreeMap::new();
    for event in history {
        by_key.entry(event.key.as_str()).or_default().push(event);
    }
    for (key, events) in by_key {
        if !check_register(&events) {
            let mut described: Vec<String> = events.iter().map(|event| describe(event)).collect();
            described.sort();
            return Err(format!(
                "the history of key {key:?} is not linearizable ({} operations):\n{}",
                events.len(),
                described.join("\n")
            ));
        }
    }
    Ok(())
}

fn describe(event: &Event) -> String {
    let ret = event.ret.map_or_else(|| "?".to_string(), |ret| ret.to_string());
    format!("  [{:>10} .. {:>10}] {:?}", event.invoke, ret, event.op)
}

/// One key's operations prepared for the search, sorted by invocation.
struct Register {
    invoke: Vec<u64>,
    /// `u64::MAX` for unknown outcomes.
    ret: Vec<u64>,
    /// Index of the written value (writes), or of the value read (`None` = absent).
    writes: Vec<Option<u32>>,
    reads: Vec<Option<Option<u32>>>,
    /// Compare-and-set operations: the expected value and whether it was refused (412).
    cas: Vec<Option<(Option<u32>, u32, bool)>>,
    /// Operations that must be linearized (all but unknown writes).
    required: usize,
}

fn check_register(events: &[&Event]) -> bool {
    let read_values: HashSet<&str> = events
        .iter()
        .filter_map(|event| match &event.op {
            Op::Read(Some(value)) | Op::Cas { expected: Some(value), .. } => Some(value.as_str()),
            _ => None,
        })
        .collect();
    let mut kept: Vec<&Event> = events
        .iter()
        .copied()
        .filter(|event| match &event.op {
            Op::Write(value) | Op::Cas { new: value, .. } => {
                event.ret.is_some() || read_values.contains(value.as_str())
            }
            Op::Read(_) => event.ret.is_some(),
        })
        .collect();
    kept.sort_by_key(|event| event.invoke);
    let mut value_ids: HashMap<&str, u32> = HashMap::new();
    for event in &kept {
        if let Op::Write(value) | Op::Cas { new: value, .. } = &event.op {
            let next = value_ids.len() as u32;
            value_ids.entry(value.as_str()).or_insert(next);
        }
    }
    // A value no write produced can never be explained.
    let id_of =
        |value: &Option<String>| value.as_deref().map(|value| value_ids.get(value).copied().unwrap_or(u32::MAX));
    let register = Register {
        invoke: kept.iter().map(|event| event.invoke).collect(),
        ret: kept.iter().map(|event| event.ret.unwrap_or(u64::MAX)).collect(),
        writes: kept
            .iter()
            .map(|event| match &event.op {
                Op::Write(value) => Some(value_ids[value.as_str()]),
                _ => None,
            })
            .collect(),
        reads: kept
            .iter()
            .map(|event| match &event.op {
                Op::Read(value) => Some(id_of(value)),
                _ => None,
            })
            .collect(),
        cas: kept
            .iter()
            .map(|event| match &event.op {
                Op::Cas { expected, new, applied } => {
                    Some((id_of(expected), value_ids[new.as_str()], *applied == Some(false)))
                }
                _ => None,
            })
            .collect(),
        required: kept.iter().filter(|event| event.ret.is_some()).count(),
    };
    let mut search = Search { register: &register, done: vec![0; kept.len().div_ceil(64)], seen: HashSet::new() };
    search.run(None, 0)
}

struct Search<'a> {
    register: &'a Register,
    /// Bit i: operation i is linearized.
    done: Vec<u64>,
    /// States already explored without success.
    seen: HashSet<(Vec<u64>, Option<u32>)>,
}

impl Search<'_> {
    fn is_done(&self, index: usize) -> bool {
        self.done[index / 64] & (1 << (index % 64)) != 0
    }

    fn flip(&mut self, index: usize) {
        self.done[index / 64] ^= 1 << (index % 64);
    }

    /// Whether the operations not yet linearized can be, starting from `value`.
    fn run(&mut self, value: Option<u32>, required_done: usize) -> bool {
        if required_done == self.register.required {
            return true;
        }
        let register = self.register;
        let count = register.invoke.len();
        // An operation may go next only if it was invoked before every pending one returned.
        let deadline = (0..count).filter(|&i| !self.is_done(i)).map(|i| register.ret[i]).min().unwrap_or(u64::MAX);
        for index in 0..count {
            if register.invoke[index] > deadline {
                break;
            }
            if self.is_done(index) {
                continue;
            }
            let next = match (register.writes[index], register.reads[index], register.cas[index]) {
                (Some(written), _, _) => Some(written),
                (None, Some(read), _) if read == value => value,
                // A compare-and-set that took effect (or may have): only on its expected value.
                (None, None, Some((expected, new, false))) if expected == value => Some(new),
                // One refused with 412: only where the register held something else.
                (None, None, Some((expected, _, true))) if expected != value => value,
                _ => continue,
            };
            self.flip(index);
            let required = required_done + usize::from(register.ret[index] != u64::MAX);
            if self.seen.insert((self.done.clone(), next)) && self.run(next, required) {
                return true;
            }
            self.flip(index);
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(invoke: u64, ret: Option<u64>, value: &str) -> Event {
        Event { key: "k".into(), invoke, ret, op: Op::Write(value.into()) }
    }

    fn read(invoke: u64, ret: u64, value: Option<&str>) -> Event {
        Event { key: "k".into(), invoke, ret: Some(ret), op: Op::Read(value.map(str::to_string)) }
    }

    #[test]
    fn a_sequential_history_is_linearizable() {
        let history = [
            read(0, 1, None),
            write(2, Some(3), "a"),
            read(4, 5, Some("a")),
            write(6, Some(7), "b"),
            read(8, 9, Some("b")),
        ];
        check(&history).unwrap();
    }

    #[test]
    fn a_read_concurrent_with_a_write_may_see_either_value() {
        check(&[write(0, Some(10), "a"), write(20, Some(40), "b"), read(25, 30, Some("a"))]).unwrap();
        check(&[write(0, Some(10), "a"), write(20, Some(40), "b"), read(25, 30, Some("b"))]).unwrap();
        // Concurrent writes in either order.
        check(&[write(0, Some(10), "a"), write(1, Some(11), "b"), read(20, 21, Some("a"))]).unwrap();
        check(&[write(0, Some(10), "a"), write(1, Some(11), "b"), read(20, 21, Some("b"))]).unwrap();
    }

    #[test]
    fn a_stale_read_after_an_acknowledged_write_is_rejected() {
        let history = [write(0, Some(10), "a"), write(20, Some(30), "b"), read(40, 50, Some("a"))];
        let error = check(&history).unwrap_err();
        assert!(error.contains("\"k\"") && error.contains("Read(Some(\"a\"))"), "{error}");
        assert!(check(&[write(0, Some(10), "a"), read(20, 30, None)]).is_err(), "the write was lost");
    }

    #[test]
    fn a_new_value_then_an_old_one_is_rejected() {
        // The write is still running, but once a read saw "b" no later read may see "a" again.
        let history =
            [write(0, Some(5), "a"), write(10, Some(100), "b"), read(20, 30, Some("b")), read(40, 50, Some("a"))];
        assert!(check(&history).is_err());
        // The same reads overlapping each other are fine.
        let history =
            [write(0, Some(5), "a"), write(10, Some(100), "b"), read(20, 50, Some("b")), read(40, 60, Some("a"))];
        check(&history).unwrap();
    }

    #[test]
    fn a_value_nobody_wrote_is_rejected() {
        assert!(check(&[write(0, Some(1), "a"), read(2, 3, Some("z"))]).is_err());
    }

    #[test]
    fn unknown_writes_may_take_effect_late_or_never() {
        // Seen long after it was invoked: it took effect then.
        check(&[write(0, None, "a"), read(50, 60, Some("a"))]).unwrap();
        // Never seen: it may simply not have happened.
        check(&[write(0, Some(1), "a"), write(5, None, "b"), read(50, 60, Some("a"))]).unwrap();
        // But not before it was invoked, and it cannot be undone once seen.
        assert!(check(&[read(0, 10, Some("a")), write(20, None, "a")]).is_err());
        assert!(check(&[write(0, None, "a"), read(50, 60, Some("a")), read(70, 80, None)]).is_err());
    }

    fn cas(invoke: u64, ret: Option<u64>, expected: Option<&str>, new: &str, applied: Option<bool>) -> Event {
        let op = Op::Cas { expected: expected.map(str::to_string), new: new.into(), applied };
        Event { key: "k".into(), invoke, ret, op }
    }

    #[test]
    fn compare_and_set_histories_are_checked() {
        // Two increments in a row, the second refused once in between.
        let history = [
            cas(0, Some(10), None, "1", Some(true)),
            cas(5, Some(15), None, "1'", Some(false)),
            read(20, 25, Some("1")),
            cas(30, Some(40), Some("1"), "2", Some(true)),
            read(50, 60, Some("2")),
        ];
        check(&history).unwrap();
        // A refusal where the expected value was surely current is not linearizable.
        assert!(check(&[cas(0, Some(10), None, "1", Some(false))]).is_err());
        // Unanswered ones may have taken effect, or not.
        check(&[cas(0, None, None, "1", None), read(20, 30, Some("1"))]).unwrap();
        check(&[cas(0, None, None, "1", None), read(20, 30, None)]).unwrap();
    }

    #[test]
    fn a_lost_update_is_rejected() {
        // Both clients read 5 and both "increments" to 6 succeeded: one update was lost.
        let history = [
            write(0, Some(1), "5"),
            read(2, 3, Some("5")),
            read(2, 3, Some("5")),
            cas(4, Some(10), Some("5"), "6-a", Some(true)),
            cas(4, Some(10), Some("5"), "6-b", Some(true)),
        ];
        let error = check(&history).unwrap_err();
        assert!(error.contains("Cas"), "{error}");
        // Two creates of an absent key cannot both succeed.
        let history = [cas(0, Some(10), None, "1-a", Some(true)), cas(0, Some(10), None, "1-b", Some(true))];
        assert!(check(&history).is_err());
    }

    #[test]
    fn keys_are_checked_independently() {
        let mut other = read(0, 1, None);
        other.key = "other".into();
        check(&[write(0, Some(10), "a"), other.clone(), read(20, 30, Some("a"))]).unwrap();
        let mut stale = read(40, 50, None);
        stale.key = "k".into();
        let error = check(&[write(0, Some(10), "a"), other, stale]).unwrap_err();
        assert!(error.contains("\"k\""), "{error}");
    }

    #[test]
    fn many_concurrent_clients_check_quickly() {
        // Four clients, each writing then reading its own value, overlapping in windows of four.
        let mut history = Vec::new();
        for round in 0..300u64 {
            let base = round * 100;
            for client in 0..4u64 {
                let value = format!("{round}-{client}");
                history.push(write(base + client, Some(base + 50 + client), &value));
            }
            history.push(read(base + 60, base + 70, Some(&format!("{round}-3"))));
        }
        check(&history).unwrap();
    }
}
