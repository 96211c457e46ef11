//! The Slack format: an incoming-webhook body within Slack's documented limits.
//!
//! ```json
//! {"text": "order.created: id 1001, total 12.5",
//!  "blocks": [{"type": "header", "text": {"type": "plain_text", "text": "order.created"}},
//!             {"type": "section", "fields": [{"type": "mrkdwn", "text": "*id*\n1001"}, …]},
//!             {"type": "context", "elements": [{"type": "mrkdwn", "text": "evt_… · 2026-…Z"}]}]}
//! ```
//! `text` is the notification and fallback text; the blocks are what the channel
//! shows: a header with the event type, the payload's top-level members as
//! section fields (ten per section) in publication order, and the event id.
//! Payload text is escaped (`&`, `<`, `>`), so it can neither link nor mention.

use serde_json::{json, Value};

use super::{display, fit, verbatim, Data, Event};

/// Most blocks in one message.
pub const BLOCKS_MAX: usize = 50;
/// Longest text of a section (and of the fallback `text` HookIt sends).
pub const SECTION_TEXT_MAX: usize = 3000;
/// Most fields in one section.
pub const SECTION_FIELDS_MAX: usize = 10;
/// Longest text of one section field.
pub const FIELD_TEXT_MAX: usize = 2000;
/// Longest header text.
pub const HEADER_MAX: usize = 150;
/// Most elements of a context block.
pub const CONTEXT_ELEMENTS_MAX: usize = 10;

/// Sections of fields at most: 40 members, well inside [`BLOCKS_MAX`].
const FIELD_SECTIONS_MAX: usize = 4;
/// Longest field name inside a section field.
const NAME_MAX: usize = 150;

/// Escapes what Slack's mrkdwn treats as markup: `&`, `<` and `>`.
pub fn escape(c: char, out: &mut String) {
    match c {
        '&' => out.push_str("&amp;"),
        '<' => out.push_str("&lt;"),
        '>' => out.push_str("&gt;"),
        c => out.push(c),
    }
}

/// The message for `e`.
pub fn render(e: &Event) -> String {
    let mut blocks = vec![json!({
        "type": "header",
        "text": {"type": "plain_text", "text": fit(&e.event_type, HEADER_MAX, verbatim), "emoji": false},
    })];
    let mut summary = Vec::new();
    let mut note = None;
    match &e.data {
        Data::Other(v) => {
            let text = display(v);
            summary.push(text.clone());
            blocks.push(section(fit(&text, SECTION_TEXT_MAX, escape)));
        }
        Data::Fields(members) if members.is_empty() => {
            blocks.push(section("_(no fields)_".into()));
        }
        Data::Fields(members) => {
            let shown = members.len().min(FIELD_SECTIONS_MAX * SECTION_FIELDS_MAX);
            for chunk in members[..shown].chunks(SECTION_FIELDS_MAX) {
                let fields: Vec<Value> = chunk
                    .iter()
                    .map(|(k, v)| {
                        let name = fit(k, NAME_MAX, escape);
                        // "*name*\n" around the name: 3 characters.
                        let room = FIELD_TEXT_MAX - name.chars().count() - 3;
                        let value = fit(&display(v), room, escape);
                        json!({"type": "mrkdwn", "text": format!("*{name}*\n{value}")})
                    })
                    .collect();
                blocks.push(json!({"type": "section", "fields": fields}));
            }
            for (k, v) in members {
                summary.push(format!("{k} {}", display(v)));
            }
            let hidden = members.len() - shown;
            if hidden > 0 {
                let s = if hidden == 1 { "" } else { "s" };
                note = Some(format!("{hidden} more field{s} not shown"));
            }
        }
    }
    let mut context = vec![json!({"type": "mrkdwn", "text": fit(&e.id, SECTION_TEXT_MAX, escape)})];
    if chrono::DateTime::parse_from_rfc3339(&e.timestamp).is_ok() {
        context.push(json!({"type": "mrkdwn", "text": fit(&e.timestamp, 64, escape)}));
    }
    if let Some(n) = note {
        context.push(json!({"type": "mrkdwn", "text": n}));
    }
    blocks.push(json!({"type": "context", "elements": context}));
    let text = if summary.is_empty() {
        e.event_type.clone()
    } else {
        format!("{}: {}", e.event_type, summary.join(", "))
    };
    json!({"text": fit(&text, SECTION_TEXT_MAX, escape), "blocks": blocks}).to_string()
}

fn section(text: String) -> Value {
    json!({"type": "section", "text": {"type": "mrkdwn", "text": text}})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::formats::{chars, ELLIPSIS};

    fn rendered(data: Value) -> Value {
        let env = json!({"id": "evt_01", "type": "order.created", "timestamp": "2026-01-01T00:00:00.000Z", "data": data});
        serde_json::from_str(&render(&Event::parse(&env.to_string()).unwrap())).unwrap()
    }

    /// Every documented limit, checked on a rendered body.
    fn assert_within_limits(m: &Value) {
        let text = m["text"].as_str().unwrap();
        assert!(!text.is_empty() && chars(text) <= SECTION_TEXT_MAX);
        let blocks = m["blocks"].as_array().unwrap();
        assert!(blocks.len() <= BLOCKS_MAX);
        for b in blocks {
            let len = |v: &Value| chars(v.as_str().unwrap());
            match b["type"].as_str().unwrap() {
                "header" => assert!((1..=HEADER_MAX).contains(&len(&b["text"]["text"]))),
                "section" => {
                    if let Some(t) = b.get("text") {
                        assert!((1..=SECTION_TEXT_MAX).contains(&len(&t["text"])));
                    }
                    if let Some(f) = b.get("fields") {
                        let f = f.as_array().unwrap();
                        assert!((1..=SECTION_FIELDS_MAX).contains(&f.len()));
                        for x in f {
                            assert!((1..=FIELD_TEXT_MAX).contains(&len(&x["text"])));
                        }
                    }
                }
                "context" => {
                    let e = b["elements"].as_array().unwrap();
                    assert!((1..=CONTEXT_ELEMENTS_MAX).contains(&e.len()));
                }
                other => panic!("unexpected block {other}"),
            }
        }
    }

    #[test]
    fn a_small_payload_is_a_header_fields_and_context() {
        let m = rendered(json!({"id": 1001, "total": 12.5, "who": "<!channel> & co"}));
        assert_within_limits(&m);
        assert_eq!(
            m["text"],
            "order.created: id 1001, total 12.5, who &lt;!channel&gt; &amp; co"
        );
        let b = m["blocks"].as_array().unwrap();
        assert_eq!(b[0]["text"]["text"], "order.created");
        let f = b[1]["fields"].as_array().unwrap();
        assert_eq!(f[0]["text"], "*id*\n1001");
        assert_eq!(f[2]["text"], "*who*\n&lt;!channel&gt; &amp; co");
        assert_eq!(b[2]["elements"][0]["text"], "evt_01");
    }

    #[test]
    fn many_long_unicode_fields_stay_within_limits() {
        let data: serde_json::Map<String, Value> = (0..60)
            .map(|i| {
                (
                    format!("{i:02}{}", "é".repeat(300)),
                    json!("😀<".repeat(3000)),
                )
            })
            .collect();
        let m = rendered(Value::Object(data));
        assert_within_limits(&m);
        let b = m["blocks"].as_array().unwrap();
        assert_eq!(b.len(), 1 + FIELD_SECTIONS_MAX + 1);
        let last = b.last().unwrap()["elements"].as_array().unwrap();
        assert_eq!(last.last().unwrap()["text"], "20 more fields not shown");
        let field = b[1]["fields"][0]["text"].as_str().unwrap();
        assert_eq!(chars(field), FIELD_TEXT_MAX);
        assert!(field.ends_with(ELLIPSIS));
        assert!(m["text"].as_str().unwrap().ends_with(ELLIPSIS));
    }

    #[test]
    fn non_objects_and_empty_objects_render_a_section() {
        let m = rendered(json!("x".repeat(10_000)));
        assert_within_limits(&m);
        assert_eq!(
            chars(m["blocks"][1]["text"]["text"].as_str().unwrap()),
            SECTION_TEXT_MAX
        );
        let m = rendered(json!({}));
        assert_within_limits(&m);
        assert_eq!(m["text"], "order.created");
        assert_within_limits(&rendered(json!([{"nested": [1, 2]}])));
    }
}
