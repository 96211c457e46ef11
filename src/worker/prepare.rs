//! What one attempt sends: the body rendered in the endpoint's format, then
//! reshaped by the endpoint's transformation when it has one. Nothing here
//! touches the network; [`super::dispatch`] sends what this decides.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tracing::warn;

use crate::db::deliveries::{Claimed, FifoBatch};
use crate::db::Store;
use crate::domain::formats;
use crate::domain::ids::{BatchId, EventId};
use crate::domain::state::Outcome;
use crate::domain::transform::{input_json, Method, Rewritten};
use crate::transform::{code_sha, Transformer};

/// Transformation sources kept by content hash (compiled forms live in the
/// engine threads, keyed the same way). Small: one entry per code version in use.
const MAX_CODES: usize = 1024;

/// The request of one attempt.
#[derive(Debug)]
pub struct Outgoing {
    /// The body, signed as is.
    pub body: Bytes,
    /// Where to (the endpoint's URL unless the transformation changed it).
    pub url: String,
    /// POST unless the transformation chose PUT.
    pub method: Method,
    /// Custom headers replacing the endpoint's (`None`: the endpoint's own).
    pub headers: Option<BTreeMap<String, String>>,
    /// The `webhook-id`: the event's id, or the batch's for a FIFO batch.
    pub webhook_id: String,
}

/// Renders and transforms deliveries for one worker.
pub struct Preparer {
    store: Store,
    transformer: Transformer,
    codes: Mutex<HashMap<[u8; 32], Arc<str>>>,
}

impl Preparer {
    /// A preparer reading transformation code from `store`.
    pub fn new(store: Store, transformer: Transformer) -> Self {
        Preparer {
            store,
            transformer,
            codes: Mutex::default(),
        }
    }

    /// The request for `d`, or the outcome that replaces sending it: a failure
    /// to render (retried like any failure), or the transformation's refusal or
    /// cancel (see `domain::state`).
    ///
    /// A FIFO batch (`batch`, only ever formed for the standard format without a
    /// transformation: see `Claimed::batched`) is the JSON array of its events'
    /// envelopes in acceptance order, under the batch's own `webhook-id`.
    pub async fn prepare(
        &self,
        d: &Claimed,
        batch: Option<&FifoBatch>,
    ) -> Result<Outgoing, Outcome> {
        if let Some(b) = batch {
            return Ok(Outgoing {
                body: Bytes::from(batch_body(b)),
                url: d.url.clone(),
                method: Method::Post,
                headers: None,
                webhook_id: BatchId::from_uuid(b.id).to_string(),
            });
        }
        let webhook_id = EventId::from_uuid(d.event_id).to_string();
        let failed = |error: String| Outcome::Failed {
            status: None,
            error,
            retry_after: None,
        };
        let format = d.format().map_err(|e| failed(e.to_string()))?;
        // Rendered per attempt rather than stored: chat formats are for chat
        // volumes, and the stored envelope stays the single source of the event.
        let rendered = formats::render(format, &d.body)
            .map_err(|e| failed(format!("cannot render the {format} format: {e}")))?;
        let code = match d.transformation_sha.as_deref() {
            Some(sha) => self.code(d, sha).await.map_err(failed)?,
            None => None,
        };
        let Some(code) = code else {
            return Ok(Outgoing {
                body: Bytes::from(rendered.into_owned()),
                url: d.url.clone(),
                method: Method::Post,
                headers: None,
                webhook_id,
            });
        };
        let input = input_json(&d.event_type, &rendered, &d.url, &d.headers);
        match self.transformer.run(d.endpoint_id, code, input).await {
            Ok(Rewritten::Send(r)) => Ok(Outgoing {
                body: Bytes::from(r.body),
                url: r.url,
                method: r.method,
                headers: Some(r.headers),
                webhook_id,
            }),
            Ok(Rewritten::Cancel) => Err(Outcome::Cancelled),
            Err(e) if e.is_deterministic() => Err(Outcome::Refused {
                error: e.to_string(),
            }),
            Err(e) => Err(failed(e.to_string())),
        }
    }

    /// The code whose hash the claim returned, from memory or the database
    /// (`None`: removed since the claim, so the endpoint's settings of the
    /// moment apply, as for every other setting).
    async fn code(&self, d: &Claimed, sha: &[u8]) -> Result<Option<Arc<str>>, String> {
        let key: [u8; 32] = sha
            .try_into()
            .map_err(|_| "transformation hash has the wrong length".to_string())?;
        if let Some(code) = self.lock().get(&key) {
            return Ok(Some(code.clone()));
        }
        let code = match self.store.transformation(d.endpoint_id).await {
            Ok(Some(code)) => code,
            Ok(None) => return Ok(None),
            Err(e) => {
                warn!(error = %e, "could not read the endpoint's transformation");
                return Err("could not read the endpoint's transformation".into());
            }
        };
        let code: Arc<str> = Arc::from(code);
        // Keyed by the hash of what was read (it may be a newer version than
        // the claim saw; the next claim then finds it here).
        let mut codes = self.lock();
        if codes.len() >= MAX_CODES {
            codes.clear();
        }
        codes.insert(code_sha(&code), code.clone());
        Ok(Some(code))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Arc<str>>> {
        self.codes.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// `[envelope,envelope,...]`: the stored envelopes are JSON objects already, so
/// they are joined as they are, not parsed and re-serialised.
fn batch_body(b: &FifoBatch) -> Vec<u8> {
    let len = b.items.iter().map(|i| i.body.len() + 1).sum::<usize>() + 1;
    let mut out = Vec::with_capacity(len);
    out.push(b'[');
    for (n, item) in b.items.iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        out.extend_from_slice(item.body.as_bytes());
    }
    out.push(b']');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::deliveries::BatchItem;
    use uuid::Uuid;

    #[test]
    fn a_batch_body_is_the_json_array_of_its_envelopes_in_order() {
        let item = |n: u32| BatchItem {
            id: Uuid::new_v4(),
            event_id: Uuid::new_v4(),
            body: format!(r#"{{"type":"t","data":{{"n":{n}}}}}"#),
        };
        let b = FifoBatch {
            id: Uuid::new_v4(),
            items: vec![item(1), item(2), item(3)],
        };
        let v: serde_json::Value = serde_json::from_slice(&batch_body(&b)).unwrap();
        let ns: Vec<u64> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["data"]["n"].as_u64().unwrap())
            .collect();
        assert_eq!(ns, [1, 2, 3]);
        let one = FifoBatch {
            id: Uuid::new_v4(),
            items: vec![item(7)],
        };
        assert_eq!(
            String::from_utf8(batch_body(&one)).unwrap(),
            r#"[{"type":"t","data":{"n":7}}]"#
        );
    }
}
