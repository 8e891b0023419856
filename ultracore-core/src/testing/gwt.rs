//! Given/when/then: state from commands (or events), one command under test, then checks on
//! the emitted events and the answer — and, every time, a rebuild from given + emitted events
//! that must equal the live state (so `apply` can never drift from `decide`).

use crate::event::{Envelope, Trace};
use crate::ledger::{Command, Ledger, LedgerConfig, LedgerEvent, Outcome, Rejection};
use crate::time::Timestamp;

/// A ledger under test with its full log and a settable "now".
pub struct Scenario {
    ledger: Ledger,
    log: Vec<Envelope<LedgerEvent>>,
    now: Timestamp,
}

/// What one `when` produced.
#[derive(Debug)]
pub struct Then {
    /// The answer.
    pub result: Result<Outcome, Rejection>,
    /// The events recorded (a rejection's record included).
    pub events: Vec<LedgerEvent>,
}

impl Scenario {
    /// An empty ledger with the default configuration, at `now`.
    pub fn new(now: Timestamp) -> Scenario {
        Scenario::with_config(LedgerConfig::default(), now)
    }

    /// An empty ledger with `config`, at `now`.
    pub fn with_config(config: LedgerConfig, now: Timestamp) -> Scenario {
        Scenario {
            ledger: Ledger::new(config),
            log: Vec::new(),
            now,
        }
    }

    /// Given: these commands were accepted (panics, naming the command, if one is refused).
    pub fn given(mut self, commands: impl IntoIterator<Item = Command>) -> Scenario {
        for c in commands {
            let then = self.run(&c);
            if let Err(r) = &then.result {
                panic!("given command {c:?} was refused: {r}");
            }
        }
        self
    }

    /// Moves "now".
    pub fn at(mut self, now: Timestamp) -> Scenario {
        self.now = now;
        self
    }

    /// Sets "now" in place.
    pub fn set_now(&mut self, now: Timestamp) {
        self.now = now;
    }

    /// When: runs one command; then rebuilds the state from the whole log and checks it equals
    /// the live state.
    pub fn when(&mut self, command: Command) -> Then {
        let then = self.run(&command);
        self.assert_replay_matches();
        then
    }

    fn run(&mut self, command: &Command) -> Then {
        let mut out = Vec::new();
        let result = self
            .ledger
            .execute(command, &Trace::default(), self.now, 0, &mut out)
            .unwrap_or_else(|e| panic!("invariant violated by {command:?}: {e}"));
        let events = out.iter().map(|e| e.payload.clone()).collect();
        self.log.extend(out);
        Then { result, events }
    }

    /// Rebuilds from the log and compares with the live state.
    pub fn assert_replay_matches(&self) {
        let mut rebuilt = Ledger::new(self.ledger.config().clone());
        for e in &self.log {
            rebuilt
                .apply(e)
                .unwrap_or_else(|err| panic!("replay failed at {}: {err}", e.position));
        }
        if let Err(diff) = super::same_state(&self.ledger, &rebuilt) {
            panic!("replay differs from live state: {diff}");
        }
    }

    /// The ledger.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// The log so far.
    pub fn log(&self) -> &[Envelope<LedgerEvent>] {
        &self.log
    }

    /// "Now".
    pub fn now(&self) -> Timestamp {
        self.now
    }
}

impl Then {
    /// Asserts the command was accepted and returns the outcome.
    #[track_caller]
    pub fn accepted(&self) -> &Outcome {
        match &self.result {
            Ok(o) => o,
            Err(r) => panic!("expected acceptance, got rejection {}: {r}", r.code()),
        }
    }

    /// Asserts the command was refused with `code` and returns the rejection.
    #[track_caller]
    pub fn rejected(&self, code: &str) -> &Rejection {
        match &self.result {
            Err(r) if r.code() == code => r,
            Err(r) => panic!("expected rejection {code}, got {}: {r}", r.code()),
            Ok(o) => panic!("expected rejection {code}, got {o:?}"),
        }
    }

    /// Asserts exactly these events were recorded.
    #[track_caller]
    pub fn events_are(&self, expected: &[LedgerEvent]) {
        assert_eq!(self.events, expected, "emitted events differ");
    }

    /// Asserts nothing was recorded.
    #[track_caller]
    pub fn no_events(&self) {
        assert!(
            self.events.is_empty(),
            "expected no events, got {:?}",
            self.events
        );
    }
}
