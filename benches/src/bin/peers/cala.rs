//! cala-ledger 0.33 in the side-by-side. A transfer is one `post_transaction` of a template
//! `TRANSFER` with two entries (debit `sender`, credit `recipient`, layer SETTLED, USD) in
//! one journal; cala evaluates the template's CEL, locks both balances (advisory locks),
//! writes the transaction, its entries and both new balance snapshots, and commits. A batch
//! is `post_transactions` of 1,000 such postings in one database transaction.

use async_trait::async_trait;
use cala_ledger::account::NewAccount;
use cala_ledger::journal::NewJournal;
use cala_ledger::posting::PostingInput;
use cala_ledger::tx_template::{
    NewParamDefinition, NewTxTemplate, NewTxTemplateEntry, NewTxTemplateTransaction, ParamDataType,
    Params,
};
use cala_ledger::{AccountId, CalaLedger, CalaLedgerConfig, JournalId, TransactionId};
use rust_decimal::Decimal;

use crate::{System, Transfer, BATCH};

/// The template every transfer is posted through.
const TEMPLATE: &str = "TRANSFER";

/// The ledger, its accounts, and the job service it needs alive.
pub struct Cala {
    cala: CalaLedger,
    accounts: Vec<AccountId>,
    _jobs: cala_ledger::job::Jobs,
}

impl Cala {
    /// Runs cala's migrations on `url` and creates one journal, the template, and `accounts`
    /// accounts (no velocity limits, no account sets: the plainest posting path).
    pub async fn setup(url: &str, accounts: u64) -> Cala {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(72)
            .connect(url)
            .await
            .expect("PostgreSQL");
        let config = CalaLedgerConfig::builder()
            .pool(pool.clone())
            .exec_migrations(true)
            .build()
            .expect("config");
        let job_config = cala_ledger::job::JobSvcConfig::builder()
            .pool(pool)
            .build()
            .expect("job config");
        let mut jobs = cala_ledger::job::Jobs::init(job_config)
            .await
            .expect("jobs");
        let cala = CalaLedger::init(config, &mut jobs).await.expect("cala");
        let journal = JournalId::new();
        let new_journal = NewJournal::builder().id(journal).name("bench").build();
        cala.journals().create(new_journal).await.expect("journal");
        cala.tx_templates()
            .create(template(journal))
            .await
            .expect("template");
        let ids: Vec<AccountId> = (0..accounts).map(|_| AccountId::new()).collect();
        for chunk in ids.chunks(BATCH) {
            let new: Vec<_> = chunk
                .iter()
                .map(|&id| {
                    let code = format!("a-{id}");
                    NewAccount::builder()
                        .id(id)
                        .name(code.clone())
                        .code(code)
                        .build()
                })
                .collect();
            cala.accounts().create_all(new).await.expect("accounts");
        }
        Cala {
            cala,
            accounts: ids,
            _jobs: jobs,
        }
    }

    fn input(&self, t: Transfer) -> PostingInput {
        let mut params = Params::new();
        params.insert("sender", self.accounts[t.from as usize]);
        params.insert("recipient", self.accounts[t.to as usize]);
        params.insert("units", Decimal::new(t.minor, 2));
        PostingInput::new(TransactionId::new(), TEMPLATE, params)
    }
}

fn param(name: &str, kind: ParamDataType) -> NewParamDefinition {
    NewParamDefinition::builder()
        .name(name)
        .r#type(kind)
        .build()
        .expect("param")
}

fn entry(kind: &str, account: &str, direction: &str) -> NewTxTemplateEntry {
    NewTxTemplateEntry::builder()
        .entry_type(kind)
        .account_id(account)
        .layer("SETTLED")
        .direction(direction)
        .units("params.units")
        .currency("'USD'")
        .build()
        .expect("entry")
}

/// Two entries: debit `params.sender`, credit `params.recipient`, `params.units` USD.
fn template(journal: JournalId) -> NewTxTemplate {
    let transaction = NewTxTemplateTransaction::builder()
        .effective("date()")
        .journal_id(format!("uuid('{journal}')"))
        .build()
        .expect("transaction");
    NewTxTemplate::builder()
        .id(uuid::Uuid::new_v4())
        .code(TEMPLATE)
        .params(vec![
            param("sender", ParamDataType::Uuid),
            param("recipient", ParamDataType::Uuid),
            param("units", ParamDataType::Decimal),
        ])
        .transaction(transaction)
        .entries(vec![
            entry("'TRANSFER_DR'", "params.sender", "DEBIT"),
            entry("'TRANSFER_CR'", "params.recipient", "CREDIT"),
        ])
        .build()
}

#[async_trait]
impl System for Cala {
    async fn transfer(&self, t: Transfer) {
        let input = self.input(t);
        let posted = self
            .cala
            .post_transaction(input.tx_id, TEMPLATE, input.params)
            .await;
        posted.expect("transfer posted");
    }

    async fn batch(&self, ts: Vec<Transfer>) -> bool {
        let inputs = ts.into_iter().map(|t| self.input(t)).collect();
        self.cala
            .post_transactions(inputs)
            .await
            .expect("batch posted");
        true
    }

    async fn count(&self) -> u64 {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM cala_transactions")
            .fetch_one(self.cala.pool())
            .await
            .expect("count");
        u64::try_from(n).unwrap_or(0)
    }
}
