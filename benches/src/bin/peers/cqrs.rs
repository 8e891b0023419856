//! cqrs-es 0.5 + postgres-es 0.5 in the side-by-side: a bank-account aggregate, event
//! sourced (every command loads the account's events, decides, and inserts its new event
//! under the `(aggregate_type, aggregate_id, sequence)` primary key; a duplicate key is
//! `AggregateConflict`). An aggregate is one account, and a command touches one aggregate,
//! so a transfer is two commands and two commits: `Withdraw` on the sender, then `Deposit`
//! on the recipient (a conflict retries that command). The two halves are not atomic
//! together; a real deployment would need a saga. There is no batch API.

use std::fmt;

use async_trait::async_trait;
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, AggregateError, DomainEvent};
use postgres_es::{postgres_cqrs, PostgresCqrs};
use serde::{Deserialize, Serialize};

use crate::{System, Transfer};

/// A bank account: open or not, and its balance in cents.
#[derive(Default, Serialize, Deserialize)]
pub struct Account {
    opened: bool,
    balance: i64,
}

/// The account's commands.
#[derive(Clone, Copy, Debug)]
pub enum AccountCommand {
    /// Opens the account.
    Open,
    /// Debits `0` cents.
    Withdraw(i64),
    /// Credits `0` cents.
    Deposit(i64),
}

/// The account's events.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum AccountEvent {
    /// The account was opened.
    Opened,
    /// `0` cents were debited.
    Withdrawn(i64),
    /// `0` cents were credited.
    Deposited(i64),
}

impl DomainEvent for AccountEvent {
    fn event_type(&self) -> String {
        match self {
            AccountEvent::Opened => "Opened",
            AccountEvent::Withdrawn(_) => "Withdrawn",
            AccountEvent::Deposited(_) => "Deposited",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1".to_string()
    }
}

/// Why a command was refused.
#[derive(Debug)]
pub struct AccountError(&'static str);

impl fmt::Display for AccountError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for AccountError {}

impl Aggregate for Account {
    const TYPE: &'static str = "account";
    type Command = AccountCommand;
    type Event = AccountEvent;
    type Error = AccountError;
    type Services = ();

    async fn handle(
        &mut self,
        command: AccountCommand,
        _services: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), AccountError> {
        // Like UltraCore's and cala's accounts in this run: no overdraft check, only that
        // the account exists (or does not, to open it).
        let event = match (command, self.opened) {
            (AccountCommand::Open, false) => AccountEvent::Opened,
            (AccountCommand::Open, true) => return Err(AccountError("already open")),
            (_, false) => return Err(AccountError("no such account")),
            (AccountCommand::Withdraw(cents), true) => AccountEvent::Withdrawn(cents),
            (AccountCommand::Deposit(cents), true) => AccountEvent::Deposited(cents),
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: AccountEvent) {
        match event {
            AccountEvent::Opened => self.opened = true,
            AccountEvent::Withdrawn(cents) => self.balance -= cents,
            AccountEvent::Deposited(cents) => self.balance += cents,
        }
    }
}

/// The framework on its PostgreSQL event repository.
pub struct Cqrs {
    cqrs: PostgresCqrs<Account>,
    pool: sqlx::PgPool,
}

/// postgres-es's `events` table, as in its `db/init.sql`.
const EVENTS_TABLE: &str = "CREATE TABLE events (
    aggregate_type text NOT NULL,
    aggregate_id text NOT NULL,
    sequence bigint CHECK (sequence >= 0) NOT NULL,
    event_type text NOT NULL,
    event_version text NOT NULL,
    payload json NOT NULL,
    metadata json NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, sequence))";

impl Cqrs {
    /// Creates the events table on `url` and opens `accounts` accounts.
    pub async fn setup(url: &str, accounts: u64) -> Cqrs {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(72)
            .connect(url)
            .await
            .expect("PostgreSQL");
        sqlx::query(EVENTS_TABLE)
            .execute(&pool)
            .await
            .expect("events table");
        let cqrs = postgres_cqrs(pool.clone(), Vec::new(), ());
        let system = Cqrs { cqrs, pool };
        for i in 0..accounts {
            system.execute(i, AccountCommand::Open).await;
        }
        system
    }

    /// Executes `command` on account `i`, again after each optimistic-concurrency conflict.
    async fn execute(&self, i: u64, command: AccountCommand) {
        let id = format!("a{i}");
        loop {
            match self.cqrs.execute(&id, command).await {
                Ok(()) => return,
                Err(AggregateError::AggregateConflict) => {}
                Err(e) => panic!("account {id}: {e}"),
            }
        }
    }
}

#[async_trait]
impl System for Cqrs {
    async fn transfer(&self, t: Transfer) {
        self.execute(t.from, AccountCommand::Withdraw(t.minor))
            .await;
        self.execute(t.to, AccountCommand::Deposit(t.minor)).await;
    }

    async fn batch(&self, _ts: Vec<Transfer>) -> bool {
        false
    }

    async fn count(&self) -> u64 {
        // Every transfer is one `Withdrawn` event (and one `Deposited`).
        let n: i64 =
            sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'Withdrawn'")
                .fetch_one(&self.pool)
                .await
                .expect("count");
        u64::try_from(n).unwrap_or(0)
    }
}
