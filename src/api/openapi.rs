//! `/openapi.json`: the spec of the whole API, generated from the handlers' and
//! types' annotations, so it cannot drift from the code.

use axum::routing::get;
use axum::{Json, Router};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::RefOr;
use utoipa::{Modify, OpenApi};

use super::AppState;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Errors are RFC 9457 problems, served as `application/problem+json`; utoipa
/// documents every body as `application/json`, so move the `Problem` ones.
struct ProblemContentType;

impl Modify for ProblemContentType {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        for item in api.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for op in operations.into_iter().flatten() {
                for response in op.responses.responses.values_mut() {
                    let RefOr::T(response) = response else {
                        continue;
                    };
                    let is_problem = response
                        .content
                        .get("application/json")
                        .and_then(|c| c.schema.as_ref())
                        .is_some_and(
                            |s| matches!(s, RefOr::Ref(r) if r.ref_location.ends_with("/Problem")),
                        );
                    if is_problem {
                        if let Some(c) = response.content.shift_remove("application/json") {
                            response
                                .content
                                .insert("application/problem+json".into(), c);
                        }
                    }
                }
            }
        }
    }
}

/// The API description.
#[derive(OpenApi)]
#[openapi(
    info(title = "HookIt", description = "Webhook delivery with at-least-once guarantees on a PostgreSQL queue."),
    paths(
        super::endpoints::create, super::endpoints::list, super::endpoints::show, super::endpoints::update,
        super::endpoints::remove, super::endpoints::secret, super::endpoints::rotate, super::endpoints::pause,
        super::endpoints::resume, super::endpoints::test_event,
        super::events::publish, super::events::show, super::events_batch::publish_batch,
        super::event_types::create, super::event_types::list, super::event_types::show,
        super::event_types::update, super::event_types::deprecate,
        super::settings::show, super::settings::update,
        super::deliveries::list, super::deliveries::show, super::deliveries::redrive, super::deliveries::redrive_dead,
        super::deliveries::purge_dead,
        super::stats::endpoints, super::stats::timeseries,
        super::transformations::test,
        super::demo::show, super::demo::set,
        super::health::healthz, super::health::readyz, super::health::metrics_text,
    ),
    modifiers(&BearerAuth, &ProblemContentType),
)]
pub struct ApiDoc;

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/openapi.json", get(|| async { Json(ApiDoc::openapi()) }))
}
