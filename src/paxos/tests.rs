//! The protocol under a simulated network: random delivery order, lost and
//! duplicated messages, timeouts, owner crashes and restarts, abandoned
//! clients. Counters updated by conditional writes must never lose or repeat
//! an increment, and every answer must fit a linearizable history.

use std::collections::BTreeMap;

use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

/// A counter record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Counter {
    version: u64,
    count: u64,
}

impl Versioned for Counter {
    fn version(&self) -> u64 {
        self.version
    }
}

fn ballot(time: u64, proposer: u64) -> Ballot {
    Ballot { time, proposer }
}

fn counter(version: u64, count: u64) -> Counter {
    Counter { version, count }
}

#[test]
fn an_acceptor_refuses_ballots_its_promise_or_record_outranks() {
    let mut acceptor = Acceptor::default();
    let record = counter(10, 1);
    assert_eq!(acceptor.prepare(ballot(10, 7), Some(&record)), Promise::Refused { promised: Ballot::covering(10) });
    assert!(matches!(acceptor.prepare(ballot(12, 1), Some(&record)), Promise::Promised { accepted: None, .. }));
    assert_eq!(acceptor.prepare(ballot(11, 9), Some(&record)), Promise::Refused { promised: ballot(12, 1) });
    // A proposal at a lower ballot than the promise is refused; at the promise it is accepted.
    let low = Proposal { ballot: ballot(11, 9), value: counter(11, 2) };
    assert_eq!(acceptor.accept(low, Some(&record)), Acceptance::Refused { promised: ballot(12, 1) });
    let mine = Proposal { ballot: ballot(12, 1), value: counter(12, 2) };
    assert_eq!(acceptor.accept(mine.clone(), Some(&record)), Acceptance::Accepted);
    assert_eq!(acceptor.accepted, Some(mine.clone()));
    // The next prepare learns about it.
    match acceptor.prepare(ballot(13, 2), Some(&record)) {
        Promise::Promised { accepted, committed, .. } => {
            assert_eq!(accepted, Some(mine.clone()));
            assert_eq!(committed, Some(record));
        }
        refused => panic!("expected a promise, got {refused:?}"),
    }
    // Committing settles the proposal; the record then covers everything up to its version.
    acceptor.commit(&mine);
    assert_eq!(acceptor.accepted, None);
    assert!(!acceptor.is_settled(Some(&mine.value)), "the promise at 13 is not covered by version 12");
    assert!(acceptor.is_settled(Some(&counter(13, 3))));
}

#[test]
fn a_proposal_older_than_the_record_is_refused_unless_it_is_the_record() {
    let mut acceptor = Acceptor::default();
    let record = counter(20, 5);
    let stale = Proposal { ballot: ballot(25, 1), value: counter(15, 4) };
    assert_eq!(acceptor.accept(stale, Some(&record)), Acceptance::Refused { promised: Ballot::covering(20) });
    let same = Proposal { ballot: ballot(25, 1), value: record };
    assert_eq!(acceptor.accept(same, Some(&record)), Acceptance::Accepted);
    assert_eq!(acceptor.accepted, None, "an already committed record needs no accepted state");
}

#[test]
fn quorums_need_a_majority_of_every_group() {
    let joint = Quorum::new(vec![vec![0, 1, 2], vec![1, 2, 3]]);
    assert_eq!(joint.members(), BTreeSet::from([0, 1, 2, 3]));
    assert!(!joint.reached(&BTreeSet::from([0, 1])), "1 of the new group is not a majority");
    assert!(joint.reached(&BTreeSet::from([0, 1, 3])));
    assert!(joint.reached(&BTreeSet::from([1, 2])));
    assert!(joint.possible(&BTreeSet::from([0, 3])));
    assert!(!joint.possible(&BTreeSet::from([1, 2])));
}

fn increment(current: Option<&Counter>, version: u64) -> Change<Counter> {
    Change::Write(counter(version, current.map_or(0, |record| record.count) + 1))
}

/// A change as a plain function.
type Rule = fn(Option<&Counter>, u64) -> Change<Counter>;

/// Drives `proposer` to its end, every owner answering each phase; returns the
/// outcome and the round trips taken, then delivers its background commits.
fn run(nodes: &mut [Owner], proposer: &mut Proposer<Counter, Rule>) -> (Outcome<Counter>, usize) {
    let mut step = proposer.start();
    let mut round_trips = 0;
    let outcome = loop {
        match step {
            Step::Send(messages) => {
                round_trips += 1;
                step = Step::Wait;
                for (owner, message) in messages {
                    let reply = deliver(&mut nodes[owner], message, &mut BTreeMap::new()).unwrap();
                    step = match proposer.on_reply(owner, reply) {
                        Step::Wait => step,
                        next => next,
                    };
                }
            }
            Step::Done(outcome) => break outcome,
            Step::Wait => panic!("every owner answered, yet the proposer waits"),
        }
    };
    for (owner, message) in proposer.background() {
        deliver(&mut nodes[owner], message, &mut BTreeMap::new()).unwrap();
    }
    (outcome, round_trips)
}

#[test]
fn an_uncontended_write_takes_two_round_trips_and_the_next_one_one() {
    let mut nodes: Vec<Owner> = vec![(Acceptor::default(), None); 3];
    let quorum = Quorum::new(vec![vec![0, 1, 2]]);
    let mut proposer = Proposer::new(quorum.clone(), ballot(100, 1), increment as Rule);
    assert_eq!(run(&mut nodes, &mut proposer), (Outcome::Written(counter(100, 1)), 2), "prepare, accept");
    assert!(nodes.iter().all(|(_, store)| *store == Some(counter(100, 1))), "committed in the background");

    // The same proposer's next write builds on its chosen proposal without a prepare.
    let chosen = proposer.chosen().cloned().expect("chosen");
    let mut fast =
        Proposer::after(quorum.clone(), chosen.ballot, chosen.value.version, counter(105, 2), increment as Rule);
    assert_eq!(run(&mut nodes, &mut fast), (Outcome::Written(counter(105, 2)), 1), "one round trip");
    assert!(nodes.iter().all(|(_, store)| *store == Some(counter(105, 2))));

    // An owner that stored a newer write meanwhile refuses a fast round built on an older one.
    let chosen = fast.chosen().cloned().expect("chosen");
    nodes[0].1 = Some(counter(107, 9));
    nodes[1].1 = Some(counter(107, 9));
    let mut stale = Proposer::after(quorum, chosen.ballot, chosen.value.version, counter(110, 3), increment as Rule);
    assert!(matches!(run(&mut nodes, &mut stale), (Outcome::Contended(_), 1)));
    let (outcome, _) = run(&mut nodes, &mut stale.retry(ballot(120, 1)));
    assert_eq!(outcome, Outcome::Written(counter(120, 10)), "the ordinary round builds on the newer write");
}

#[test]
fn a_fast_proposal_commits_its_base_by_reference_and_each_owner_accepts_one_successor() {
    let base = Proposal { ballot: ballot(100, 1), value: counter(100, 1) };
    let mut acceptor = Acceptor::default();
    assert_eq!(acceptor.accept(base.clone(), None), Acceptance::Accepted);
    let fast = |version, count| Proposal { ballot: Ballot::covering(100), value: counter(version, count) };
    assert_eq!(acceptor.accepted_base(ballot(100, 1), Ballot::covering(100)), Some(&base));
    assert_eq!(acceptor.accepted_base(ballot(99, 1), Ballot::covering(100)), None, "another ballot");
    // Judged against the base it commits: accepted; a second successor of the same base is not.
    assert_eq!(acceptor.accept_fast(fast(105, 2), Some(&base.value)), Acceptance::Accepted);
    assert_eq!(acceptor.accept_fast(fast(105, 2), Some(&base.value)), Acceptance::Accepted, "a repeat");
    assert!(matches!(acceptor.accept_fast(fast(106, 7), Some(&base.value)), Acceptance::Refused { .. }));
    // Without the base in its store or accepted, an owner refuses.
    let mut behind = Acceptor::default();
    assert!(matches!(behind.accept_fast(fast(105, 2), Some(&counter(90, 0))), Acceptance::Refused { .. }));
    assert!(matches!(behind.accept_fast(fast(105, 2), None), Acceptance::Refused { .. }));
    // A promise above the fast ballot wins.
    let mut promised = Acceptor::default();
    assert!(matches!(promised.prepare(ballot(101, 3), Some(&base.value)), Promise::Promised { .. }));
    assert_eq!(promised.accept_fast(fast(105, 2), Some(&base.value)), Acceptance::Refused { promised: ballot(101, 3) });
    // A pending proposal is one newer than the record.
    assert_eq!(acceptor.pending(Some(&base.value)), Some(105));
    assert_eq!(acceptor.pending(Some(&counter(105, 2))), None);
    assert!(needs_round(Some(100), [105].into_iter()));
    assert!(!needs_round(Some(105), [105].into_iter()));
}

#[test]
fn a_refused_precondition_commits_the_current_record_to_a_majority_first() {
    // Owner 0 holds version 50 (a write that reached it alone); 1 and 2 hold nothing.
    let mut nodes: Vec<(Acceptor<Counter>, Option<Counter>)> =
        vec![(Acceptor::default(), Some(counter(50, 7))), (Acceptor::default(), None), (Acceptor::default(), None)];
    let refuse_all = |_: Option<&Counter>, _| Change::Refuse;
    let mut proposer = Proposer::new(Quorum::new(vec![vec![0, 1, 2]]), ballot(100, 1), refuse_all);
    let Step::Send(prepares) = proposer.start() else { panic!("a round starts with prepares") };
    let mut next = Step::Wait;
    for (owner, message) in prepares.into_iter().filter(|(owner, _)| *owner != 2) {
        next = proposer.on_reply(owner, deliver(&mut nodes[owner], message, &mut BTreeMap::new()).unwrap());
    }
    let Step::Send(repairs) = next else { panic!("the refusal repairs owner 1 first, got {next:?}") };
    assert_eq!(repairs.iter().map(|(owner, _)| *owner).collect::<Vec<_>>(), vec![1]);
    let (owner, message) = repairs.into_iter().next().unwrap();
    let done = proposer.on_reply(owner, deliver(&mut nodes[owner], message, &mut BTreeMap::new()).unwrap());
    assert_eq!(done, Step::Done(Outcome::Refused(Some(counter(50, 7)))));
    assert_eq!(nodes[1].1, Some(counter(50, 7)));
}

/// One owner in the simulation: its durable Paxos state and its store.
type Owner = (Acceptor<Counter>, Option<Counter>);

/// Applies a message to an owner; `chosen` records every committed version's
/// record, to check that no version ever stands for two records.
fn deliver(
    owner: &mut Owner,
    message: Message<Counter>,
    chosen: &mut BTreeMap<u64, Counter>,
) -> Result<Reply<Counter>, String> {
    Ok(match message {
        Message::Prepare(ballot) => Reply::Promise(owner.0.prepare(ballot, owner.1.as_ref())),
        Message::Accept(proposal) => Reply::Acceptance(owner.0.accept(proposal, owner.1.as_ref())),
        Message::AcceptAfter { proposal, after } => {
            // As the node does: judge against the base when it commits it by reference, then commit it.
            let base = owner.0.accepted_base(after, proposal.ballot).cloned();
            let view = match (&base, owner.1) {
                (Some(base), Some(record)) if record.version >= base.value.version => Some(record),
                (Some(base), _) => Some(base.value),
                (None, record) => record,
            };
            let acceptance = owner.0.accept_fast(proposal, view.as_ref());
            if let Some(base) = base {
                commit(owner, base, chosen)?;
            }
            Reply::Acceptance(acceptance)
        }
        Message::Commit(proposal) => {
            commit(owner, proposal, chosen)?;
            Reply::Committed
        }
    })
}

fn commit(owner: &mut Owner, proposal: Proposal<Counter>, chosen: &mut BTreeMap<u64, Counter>) -> Result<(), String> {
    let (acceptor, store) = owner;
    let record = proposal.value;
    if let Some(earlier) = chosen.insert(record.version, record)
        && earlier != record
    {
        return Err(format!("version {} was committed as {earlier:?} and as {record:?}", record.version));
    }
    if store.is_none_or(|stored| stored.version < record.version) {
        *store = Some(record);
        acceptor.stored(record.version);
    }
    acceptor.commit(&proposal);
    Ok(())
}

/// What a replica answers a majority read: its record and the version of a
/// pending proposal, as the node's read does.
fn read(owner: &Owner) -> (Option<Counter>, Option<u64>) {
    let (acceptor, store) = owner;
    (*store, acceptor.pending(store.as_ref()))
}

/// What can go wrong, and how often (per mille of steps).
#[derive(Debug, Clone, Copy)]
struct Weather {
    lose: u32,
    duplicate: u32,
    crash: u32,
    abandon: u32,
    /// A broken owner that forgets its Paxos state when it restarts (to show
    /// the checker catches a protocol that does not persist before replying).
    amnesia: bool,
    /// Whether clients also read (majority reads) and take fast rounds.
    reads: bool,
    fast: bool,
    /// A broken read that answers the newest record and ignores pending proposals.
    stale_reads: bool,
    /// A broken read that answers the client's own last write whenever it meets a pending
    /// proposal, whichever proposal that is.
    own_reads: bool,
}

#[derive(Debug, Clone)]
enum Envelope {
    ToOwner {
        client: usize,
        tag: u64,
        owner: usize,
        message: Message<Counter>,
    },
    ToClient {
        client: usize,
        tag: u64,
        owner: usize,
        reply: Reply<Counter>,
    },
    /// A majority read's request to one replica, and its answer (`None`: failed).
    ReadAsk {
        client: usize,
        tag: u64,
        owner: usize,
    },
    ReadAnswer {
        client: usize,
        tag: u64,
        owner: usize,
        answer: Option<(Option<Counter>, Option<u64>)>,
    },
}

/// A majority read in progress: who answered, and what.
#[derive(Debug, Default)]
struct Reading {
    yes: BTreeSet<usize>,
    no: BTreeSet<usize>,
    answers: Vec<(Option<Counter>, Option<u64>)>,
}

/// The tag of background messages, whose answers nobody waits for.
const BACKGROUND: u64 = u64::MAX;

/// An operation as the history checker sees it.
#[derive(Debug, Clone)]
struct Operation {
    invoked_at: u64,
    completed_at: Option<u64>,
    /// `Some(expected)`: write expected + 1 only if the count is `expected`.
    expected: Option<u64>,
    result: Option<Result<u64, Option<u64>>>,
    in_doubt: bool,
}

type Change1 = Box<dyn FnMut(Option<&Counter>, u64) -> Change<Counter>>;

struct Client {
    proposer: Option<Proposer<Counter, Change1>>,
    /// A majority read in progress.
    reading: Option<Reading>,
    /// This client's last chosen proposal: the base of a fast round.
    cache: Option<Proposal<Counter>>,
    tag: u64,
    operation: usize,
    attempts: u32,
    remaining: usize,
}

/// Runs one simulated history and checks it; `Err` names the violation.
fn simulate(
    seed: u64,
    groups: Vec<Vec<usize>>,
    clients: usize,
    operations: usize,
    weather: Weather,
) -> Result<(), String> {
    let mut rng = StdRng::seed_from_u64(seed);
    let quorum = Quorum::new(groups);
    let owner_count = quorum.members().len();
    let mut owners: Vec<Owner> = vec![(Acceptor::default(), None); owner_count];
    let mut up = vec![true; owner_count];
    let mut chosen = BTreeMap::new();
    let mut network: Vec<Envelope> = Vec::new();
    let mut history: Vec<Operation> = Vec::new();
    let mut clock = 1_000u64;
    let mut now = 0u64;
    let mut clients: Vec<Client> = (0..clients)
        .map(|_| Client {
            proposer: None,
            reading: None,
            cache: None,
            tag: 0,
            operation: 0,
            attempts: 0,
            remaining: operations,
        })
        .collect();

    let send = |network: &mut Vec<Envelope>, client: usize, tag: u64, messages: Vec<(usize, Message<Counter>)>| {
        for (owner, message) in messages {
            network.push(Envelope::ToOwner { client, tag, owner, message });
        }
    };

    for step in 0..200_000u64 {
        now += 1;
        let calm = step > 20_000;
        // Idle clients start their next operation.
        for (id, client) in clients.iter_mut().enumerate() {
            if client.proposer.is_none() && client.reading.is_none() && client.remaining > 0 {
                client.remaining -= 1;
                if weather.reads && rng.random_bool(0.3) {
                    history.push(Operation {
                        invoked_at: now,
                        completed_at: None,
                        expected: None,
                        result: None,
                        in_doubt: false,
                    });
                    client.operation = history.len() - 1;
                    client.tag += 1;
                    client.reading = Some(Reading::default());
                    for owner in quorum.members() {
                        network.push(Envelope::ReadAsk { client: id, tag: client.tag, owner });
                    }
                    continue;
                }
                let expected = rng.random_bool(0.3).then(|| rng.random_range(0..(operations * 2) as u64));
                history.push(Operation {
                    invoked_at: now,
                    completed_at: None,
                    expected,
                    result: None,
                    in_doubt: false,
                });
                client.operation = history.len() - 1;
                let mut change: Change1 = Box::new(move |current: Option<&Counter>, version| {
                    let count = current.map_or(0, |record| record.count);
                    match expected {
                        Some(expected) if expected != count => Change::Refuse,
                        _ => Change::Write(counter(version, count + 1)),
                    }
                });
                clock += 1;
                // After its own write was chosen, a client usually goes straight to a fast round
                // (never to a refusal: what it knows may be stale, an ordinary round decides that).
                let fast =
                    client.cache.take().filter(|_| weather.fast && rng.random_bool(0.8)).and_then(|base| match change(
                        Some(&base.value),
                        clock,
                    ) {
                        Change::Write(record) => Some((base, record)),
                        Change::Refuse => None,
                    });
                let mut proposer = match fast {
                    Some((base, record)) => {
                        Proposer::after(quorum.clone(), base.ballot, base.value.version, record, change)
                    }
                    None => Proposer::new(quorum.clone(), ballot(clock, id as u64), change),
                };
                client.attempts = 0;
                client.tag += 1;
                if let Step::Send(messages) = proposer.start() {
                    send(&mut network, id, client.tag, messages);
                }
                client.proposer = Some(proposer);
            }
        }
        if network.is_empty() {
            if clients
                .iter()
                .all(|client| client.proposer.is_none() && client.reading.is_none() && client.remaining == 0)
            {
                break;
            }
            continue;
        }
        let roll = rng.random_range(0..1000);
        let index = rng.random_range(0..network.len());
        if !calm && roll < weather.crash {
            let owner = rng.random_range(0..owner_count);
            if up[owner] {
                up[owner] = false;
                if weather.amnesia {
                    owners[owner].0 = Acceptor::default();
                }
            } else {
                up[owner] = true;
            }
            continue;
        }
        if calm {
            up.iter_mut().for_each(|up| *up = true);
        }
        if !calm && roll < weather.crash + weather.abandon {
            // A client gives up waiting (its gateway timed out or died).
            let id = rng.random_range(0..clients.len());
            if clients[id].reading.take().is_some() {
                history[clients[id].operation].completed_at = Some(now);
                clients[id].tag += 1;
            }
            if let Some(proposer) = clients[id].proposer.take() {
                let operation = &mut history[clients[id].operation];
                operation.in_doubt = proposer.proposed;
                operation.completed_at = Some(now);
                clients[id].tag += 1;
            }
            continue;
        }
        let envelope = if !calm && roll < weather.crash + weather.abandon + weather.duplicate {
            network[index].clone()
        } else {
            network.swap_remove(index)
        };
        let lost = !calm && roll >= 1000 - weather.lose;
        match envelope {
            Envelope::ToOwner { client, tag, owner, message } => {
                let reply =
                    if lost || !up[owner] { Reply::Failed } else { deliver(&mut owners[owner], message, &mut chosen)? };
                network.push(Envelope::ToClient { client, tag, owner, reply });
            }
            Envelope::ReadAsk { client, tag, owner } => {
                let answer = (!lost && up[owner]).then(|| read(&owners[owner]));
                network.push(Envelope::ReadAnswer { client, tag, owner, answer });
            }
            Envelope::ReadAnswer { client: id, tag, owner, answer } => {
                let client = &mut clients[id];
                let Some(reading) = client.reading.as_mut().filter(|_| tag == client.tag) else { continue };
                match answer.filter(|_| !lost) {
                    Some(answer) => {
                        if reading.yes.insert(owner) {
                            reading.answers.push(answer);
                        }
                    }
                    None => {
                        reading.no.insert(owner);
                    }
                }
                let operation = &mut history[client.operation];
                if quorum.reached(&reading.yes) {
                    let newest =
                        reading.answers.iter().filter_map(|(record, _)| *record).max_by_key(|record| record.version);
                    let pending = reading.answers.iter().filter_map(|(_, pending)| *pending).max();
                    // The client's own last write, chosen and maybe still being committed, is
                    // the answer when it is the pending one (as the gateway answers its own).
                    let own = client
                        .cache
                        .clone()
                        .filter(|chosen| weather.own_reads || Some(chosen.value.version) == pending);
                    if let Some(chosen) =
                        own.filter(|_| needs_round(newest.map(|record| record.version), pending.into_iter()))
                    {
                        operation.result = Some(Err(Some(chosen.value.count)));
                        operation.completed_at = Some(now);
                        client.reading = None;
                    } else if !weather.stale_reads
                        && needs_round(newest.map(|record| record.version), pending.into_iter())
                    {
                        // A proposal newer than every record read may be chosen: settle it through a round.
                        clock += 1;
                        let refuse: Change1 = Box::new(|_: Option<&Counter>, _| Change::Refuse);
                        let mut proposer = Proposer::new(quorum.clone(), ballot(clock, id as u64), refuse);
                        client.reading = None;
                        client.attempts = 0;
                        client.tag += 1;
                        if let Step::Send(messages) = proposer.start() {
                            send(&mut network, id, client.tag, messages);
                        }
                        client.proposer = Some(proposer);
                    } else {
                        operation.result = Some(Err(newest.map(|record| record.count)));
                        operation.completed_at = Some(now);
                        client.reading = None;
                    }
                } else if !quorum.possible(&reading.no) {
                    // Too few replicas answered: the read fails (a 503), having observed nothing.
                    operation.completed_at = Some(now);
                    client.reading = None;
                }
            }
            Envelope::ToClient { client: id, tag, owner, reply } => {
                let client = &mut clients[id];
                if tag != client.tag {
                    continue;
                }
                let reply = if lost { Reply::Failed } else { reply };
                let Some(proposer) = client.proposer.as_mut() else { continue };
                match proposer.on_reply(owner, reply) {
                    Step::Wait => {}
                    Step::Send(messages) => {
                        client.tag += 1;
                        send(&mut network, id, client.tag, messages);
                    }
                    Step::Done(outcome) => {
                        for (owner, message) in proposer.background() {
                            network.push(Envelope::ToOwner { client: id, tag: BACKGROUND, owner, message });
                        }
                        let operation = &mut history[client.operation];
                        let retry_after = match outcome {
                            Outcome::Written(record) => {
                                operation.result = Some(Ok(record.count));
                                client.cache = proposer.chosen().cloned();
                                None
                            }
                            Outcome::Refused(current) => {
                                operation.result = Some(Err(current.map(|record| record.count)));
                                None
                            }
                            Outcome::Contended(seen) => Some(seen.time),
                            Outcome::Unavailable { .. } => Some(0),
                        };
                        match retry_after {
                            Some(seen) if client.attempts < 50 => {
                                client.attempts += 1;
                                clock = clock.max(seen) + 1 + rng.random_range(0..3);
                                let proposer = client.proposer.take().expect("running").retry(ballot(clock, id as u64));
                                let mut proposer = proposer;
                                client.tag += 1;
                                if let Step::Send(messages) = proposer.start() {
                                    send(&mut network, id, client.tag, messages);
                                }
                                client.proposer = Some(proposer);
                            }
                            Some(_) => {
                                let proposer = client.proposer.take().expect("running");
                                operation.in_doubt = proposer.proposed;
                                operation.completed_at = Some(now);
                            }
                            None => {
                                operation.completed_at = Some(now);
                                client.proposer = None;
                            }
                        }
                    }
                }
            }
        }
    }
    if clients.iter().any(|client| client.proposer.is_some() || client.reading.is_some() || client.remaining > 0) {
        return Err("the history did not finish once the network was calm".into());
    }

    // The final count, read through the protocol itself (it may first finish
    // a proposal an abandoned client left behind, then read again).
    let mut reader =
        Proposer::new(quorum.clone(), ballot(clock + 1, u64::MAX - 1), |_: Option<&Counter>, _| Change::Refuse);
    let mut final_count = None;
    for _ in 0..4 {
        let mut pending = match reader.start() {
            Step::Send(messages) => messages,
            other => return Err(format!("a read starts with prepares, not {other:?}")),
        };
        let outcome = loop {
            let Some((owner, message)) = pending.pop() else { return Err("the final read did not finish".into()) };
            match reader.on_reply(owner, deliver(&mut owners[owner], message, &mut chosen)?) {
                Step::Wait => {}
                Step::Send(more) => pending = more,
                Step::Done(outcome) => break outcome,
            }
        };
        match outcome {
            Outcome::Refused(current) => {
                final_count = Some(current.map_or(0, |record| record.count));
                break;
            }
            Outcome::Contended(seen) => {
                let time = seen.time.max(reader.ballot().time) + 1;
                reader = reader.retry(ballot(time, u64::MAX - 1));
            }
            other => return Err(format!("the final read ended {other:?}")),
        }
    }
    let Some(final_count) = final_count else { return Err("the final read kept meeting contention".into()) };
    check(&history, final_count)
}

/// A counter history is linearizable when the successful increments produced
/// distinct counts, the final count is their number plus some in-doubt ones,
/// and no answer (a write's count, a refusal's or a read's current count) is
/// older than an answer completed before it was asked.
fn check(history: &[Operation], final_count: u64) -> Result<(), String> {
    let written: Vec<u64> = history.iter().filter_map(|operation| operation.result?.ok()).collect();
    let in_doubt = history.iter().filter(|operation| operation.result.is_none() && operation.in_doubt).count() as u64;
    let mut distinct = written.clone();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() != written.len() {
        return Err(format!("two increments produced the same count: {written:?}"));
    }
    let acknowledged = written.len() as u64;
    if final_count < acknowledged || final_count > acknowledged + in_doubt {
        return Err(format!(
            "final count {final_count} with {acknowledged} acknowledged and {in_doubt} in-doubt increments"
        ));
    }
    for operation in history {
        let observed = match operation.result {
            Some(Ok(count)) => count,
            Some(Err(current)) => {
                let count = current.unwrap_or(0);
                if Some(count) == operation.expected {
                    return Err(format!("refused although the count was the expected {count}"));
                }
                count
            }
            None => continue,
        };
        if let Some(Ok(count)) = operation.result
            && operation.expected.is_some_and(|expected| expected + 1 != count)
        {
            return Err(format!("a conditional increment from {:?} wrote {count}", operation.expected));
        }
        for before in history.iter().filter(|before| before.completed_at.is_some_and(|at| at < operation.invoked_at)) {
            let earlier = match before.result {
                Some(Ok(count)) => count,
                Some(Err(current)) => current.unwrap_or(0),
                None => continue,
            };
            if earlier > observed {
                return Err(format!(
                    "an operation saw count {observed} after an answer with count {earlier} had completed"
                ));
            }
        }
    }
    Ok(())
}

fn owner_groups() -> impl Strategy<Value = Vec<Vec<usize>>> {
    prop_oneof![
        Just(vec![vec![0, 1, 2]]),
        Just(vec![vec![0, 1, 2, 3, 4]]),
        // A membership change: the old owners and the new ones.
        Just(vec![vec![0, 1, 2], vec![1, 2, 3]]),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 160, ..ProptestConfig::default() })]

    #[test]
    fn conditional_counters_lose_no_increment_under_faults(
        seed in any::<u64>(),
        groups in owner_groups(),
        clients in 1usize..5,
        operations in 1usize..6,
        lose in 0u32..150,
        duplicate in 0u32..100,
        crash in 0u32..30,
        abandon in 0u32..10,
        reads in any::<bool>(),
        fast in any::<bool>(),
    ) {
        let weather = Weather { lose, duplicate, crash, abandon, amnesia: false, reads, fast, stale_reads: false, own_reads: false };
        if let Err(violation) = simulate(seed, groups, clients, operations, weather) {
            return Err(TestCaseError::fail(violation));
        }
    }
}

#[test]
fn the_checker_catches_owners_that_forget_their_promises() {
    let weather = Weather {
        lose: 50,
        duplicate: 30,
        crash: 60,
        abandon: 0,
        amnesia: true,
        reads: true,
        fast: true,
        stale_reads: false,
        own_reads: false,
    };
    let caught = (0..400u64).find_map(|seed| simulate(seed, vec![vec![0, 1, 2]], 4, 5, weather).err());
    assert!(caught.is_some(), "forgetting accepted proposals on restart must break some history");
}

#[test]
fn replay_joins_logged_states_in_any_order() {
    let ballot = |time| Ballot { time, proposer: 1 };
    let proposal = |time| Proposal { ballot: ballot(time), value: Counter { version: time, count: time } };
    let promised = Acceptor { promised: Some(ballot(9)), ..Acceptor::default() };
    let accepted = Acceptor { promised: Some(ballot(7)), accepted: Some(proposal(7)), ..Acceptor::default() };
    let committed =
        Acceptor { promised: Some(ballot(5)), last_commit: Some(ballot(5)), held: vec![3, 5], ..Acceptor::default() };
    for order in [[&promised, &accepted, &committed], [&committed, &accepted, &promised]] {
        let mut replayed = Acceptor::default();
        for logged in order {
            replayed.merge(logged.clone());
        }
        assert_eq!(replayed.promised, Some(ballot(9)));
        assert_eq!(replayed.accepted, Some(proposal(7)), "accepted after the latest commit");
        assert_eq!(replayed.last_commit, Some(ballot(5)));
        assert_eq!(replayed.held, vec![3, 5]);
    }
    // A commit after the accepted proposal settles it, whichever was logged first.
    let later = Acceptor { last_commit: Some(ballot(8)), held: vec![8], ..Acceptor::default() };
    let mut replayed = later.clone();
    replayed.merge(accepted.clone());
    assert_eq!((replayed.accepted, replayed.held), (None, vec![8]));
}

#[test]
fn the_checker_catches_reads_that_ignore_pending_proposals() {
    let weather = Weather {
        lose: 100,
        duplicate: 0,
        crash: 0,
        abandon: 0,
        amnesia: false,
        reads: true,
        fast: true,
        stale_reads: true,
        own_reads: false,
    };
    let caught = (0..400u64).find_map(|seed| simulate(seed, vec![vec![0, 1, 2]], 4, 5, weather).err());
    assert!(caught.is_some(), "a read that misses a chosen but uncommitted write must break some history");
}

#[test]
fn the_checker_catches_reads_that_answer_a_pending_write_not_their_own() {
    let weather = Weather {
        lose: 100,
        duplicate: 0,
        crash: 0,
        abandon: 0,
        amnesia: false,
        reads: true,
        fast: true,
        stale_reads: false,
        own_reads: true,
    };
    let caught = (0..2000u64).find_map(|seed| simulate(seed, vec![vec![0, 1, 2]], 4, 8, weather).err());
    assert!(caught.is_some(), "answering another writer's pending write as one's own must break some history");
}
