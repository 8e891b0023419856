//! The OpenAPI 3.1 document, generated from the handlers' annotations and the DTOs.

use std::sync::OnceLock;

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes::{accounts, audit, entries, events, ops, transfers};

/// The API description.
#[derive(OpenApi)]
#[openapi(
    info(title = "UltraCore ledger API", description = "Double-entry, event-sourced, bitemporal ledger. Errors are RFC 7807 problems whose `type` is `urn:ultracore:error:<code>`; see docs/errors/."),
    paths(
        accounts::create, accounts::get, accounts::freeze, accounts::unfreeze, accounts::close,
        accounts::balance, accounts::statement, accounts::restatement,
        transfers::create, transfers::batch, transfers::post, transfers::void,
        entries::create, entries::get, entries::history, entries::correct, entries::reverse,
        events::list, audit::list,
        ops::live, ops::ready, ops::metrics, ops::openapi,
    ),
    modifiers(&BearerAuth),
    tags((name = "accounts"), (name = "transfers"), (name = "entries"), (name = "events"), (name = "audit"), (name = "ops"))
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut http = Http::new(HttpAuthScheme::Bearer);
        http.bearer_format = Some("JWT".to_string());
        components.add_security_scheme("bearer", SecurityScheme::Http(http));
    }
}

/// The document as JSON (built once).
pub fn document_json() -> String {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| ApiDoc::openapi().to_pretty_json().unwrap_or_default())
        .clone()
}
