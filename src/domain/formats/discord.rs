//! The Discord format: an execute-webhook body within Discord's documented limits.
//!
//! ```json
//! {"content": "**order.created**",
//!  "embeds": [{"title": "order.created", "fields": [{"name": "id", "value": "1001", "inline": true}, …],
//!              "footer": {"text": "evt_…"}, "timestamp": "2026-…Z", "color": 5793266}],
//!  "allowed_mentions": {"parse": []}}
//! ```
//! One embed per event; its fields are the payload's top-level members in
//! publication order. A payload that is not an object becomes the description.
//! `allowed_mentions` is empty so that no payload text can ping anyone.

use serde_json::{json, Value};

use super::{chars, display, fit, Data, Event};

/// Longest message content.
pub const CONTENT_MAX: usize = 2000;
/// Most embeds in one message.
pub const EMBEDS_MAX: usize = 10;
/// Longest embed title.
pub const TITLE_MAX: usize = 256;
/// Longest embed description.
pub const DESCRIPTION_MAX: usize = 4096;
/// Most fields in one embed.
pub const FIELDS_MAX: usize = 25;
/// Longest field name.
pub const FIELD_NAME_MAX: usize = 256;
/// Longest field value.
pub const FIELD_VALUE_MAX: usize = 1024;
/// Longest footer text.
pub const FOOTER_MAX: usize = 2048;
/// Most characters of all embeds of a message together (title, description,
/// field names and values, footer text, author name).
pub const EMBED_TOTAL_MAX: usize = 6000;

/// Values this short are laid out side by side.
const INLINE_MAX: usize = 40;
/// The embed's colour (Discord's blurple).
const COLOR: u32 = 0x5865F2;
/// Discord rejects an empty field name or value; this is what an empty one shows.
const EMPTY: &str = "\"\"";
/// Smallest value worth showing when the total budget is nearly spent.
const MIN_VALUE: usize = 16;

/// Backslash-escapes Discord markdown, so payload text is shown as written.
pub fn escape(c: char, out: &mut String) {
    if matches!(
        c,
        '\\' | '*' | '_' | '~' | '`' | '|' | '>' | '[' | ']' | '#'
    ) {
        out.push('\\');
    }
    out.push(c);
}

/// The message for `e`.
pub fn render(e: &Event) -> String {
    let title = fit(&e.event_type, TITLE_MAX, escape);
    let footer = fit(&e.id, FOOTER_MAX, escape);
    // What every embed carries, before fields and description.
    let mut total = chars(&title) + chars(&footer);
    let mut fields = Vec::new();
    let mut description = None;
    match &e.data {
        Data::Other(v) => {
            let d = fit(
                &display(v),
                DESCRIPTION_MAX.min(EMBED_TOTAL_MAX - total),
                escape,
            );
            description = Some(nonempty(d));
        }
        Data::Fields(members) => {
            // Room for the note about fields left out, should there be any.
            let reserve = 64;
            let mut shown = 0;
            for (k, v) in members {
                if shown == FIELDS_MAX {
                    break;
                }
                let name = nonempty(fit(k, FIELD_NAME_MAX, escape));
                let left = EMBED_TOTAL_MAX.saturating_sub(total + reserve + chars(&name));
                if left < MIN_VALUE {
                    break;
                }
                let value = nonempty(fit(&display(v), FIELD_VALUE_MAX.min(left), escape));
                total += chars(&name) + chars(&value);
                let inline = chars(&value) <= INLINE_MAX && !value.contains('\n');
                fields.push(json!({"name": name, "value": value, "inline": inline}));
                shown += 1;
            }
            let hidden = members.len() - shown;
            if members.is_empty() {
                description = Some("(no fields)".to_string());
            } else if hidden > 0 {
                let s = if hidden == 1 { "" } else { "s" };
                description = Some(format!("{hidden} more field{s} not shown"));
            }
        }
    }
    let mut embed = json!({
        "title": title,
        "fields": fields,
        "footer": {"text": footer},
        "color": COLOR,
    });
    if let Some(d) = description {
        embed["description"] = Value::String(d);
    }
    // Discord refuses a timestamp that is not ISO 8601; HookIt writes RFC 3339.
    if chrono::DateTime::parse_from_rfc3339(&e.timestamp).is_ok() {
        embed["timestamp"] = Value::String(e.timestamp.clone());
    }
    json!({
        "content": fit(&format!("**{}**", e.event_type), CONTENT_MAX, verbatim_type),
        "embeds": [embed],
        "allowed_mentions": {"parse": []},
    })
    .to_string()
}

/// Event types are letters, digits, `_`, `-` and `.`: only `_` needs escaping
/// inside the bold markers.
fn verbatim_type(c: char, out: &mut String) {
    if c == '_' {
        out.push('\\');
    }
    out.push(c);
}

fn nonempty(s: String) -> String {
    if s.is_empty() {
        EMPTY.to_string()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::formats::ELLIPSIS;

    /// `data` as raw JSON, so its members keep the order written here.
    fn raw(data: &str) -> Value {
        let env = format!(
            r#"{{"id":"evt_01","type":"price.updated","timestamp":"2026-01-01T00:00:00.000Z","data":{data}}}"#
        );
        serde_json::from_str(&render(&Event::parse(&env).unwrap())).unwrap()
    }

    fn rendered(data: Value) -> Value {
        raw(&data.to_string())
    }

    /// Every documented limit, checked on a rendered body.
    fn assert_within_limits(m: &Value) {
        let content = m["content"].as_str().unwrap();
        assert!(!content.is_empty() && chars(content) <= CONTENT_MAX);
        let embeds = m["embeds"].as_array().unwrap();
        assert!(embeds.len() <= EMBEDS_MAX);
        let mut total = 0;
        for e in embeds {
            let len = |v: &Value| v.as_str().map(chars).unwrap_or(0);
            assert!(len(&e["title"]) <= TITLE_MAX);
            assert!(len(&e["description"]) <= DESCRIPTION_MAX);
            assert!(len(&e["footer"]["text"]) <= FOOTER_MAX);
            total += len(&e["title"]) + len(&e["description"]) + len(&e["footer"]["text"]);
            let fields = e["fields"].as_array().unwrap();
            assert!(fields.len() <= FIELDS_MAX);
            for f in fields {
                let (n, v) = (len(&f["name"]), len(&f["value"]));
                assert!((1..=FIELD_NAME_MAX).contains(&n), "name of {n}");
                assert!((1..=FIELD_VALUE_MAX).contains(&v), "value of {v}");
                total += n + v;
            }
        }
        assert!(total <= EMBED_TOTAL_MAX, "embeds total {total}");
    }

    #[test]
    fn a_small_payload_is_a_readable_embed_in_publication_order() {
        let m = raw(r#"{"symbol": "BTC", "price": 97000.5, "up": true, "tags": ["a", "b"]}"#);
        assert_within_limits(&m);
        assert_eq!(m["content"], "**price.updated**");
        let e = &m["embeds"][0];
        assert_eq!(e["title"], "price.updated");
        assert_eq!(e["footer"]["text"], "evt\\_01");
        assert_eq!(e["timestamp"], "2026-01-01T00:00:00.000Z");
        let pairs: Vec<(String, String)> = e["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                (
                    f["name"].as_str().unwrap().into(),
                    f["value"].as_str().unwrap().into(),
                )
            })
            .collect();
        let want = [
            ("symbol", "BTC"),
            ("price", "97000.5"),
            ("up", "true"),
            ("tags", r#"\["a","b"\]"#),
        ];
        assert_eq!(pairs, want.map(|(a, b)| (a.to_string(), b.to_string())));
        assert_eq!(m["allowed_mentions"], json!({"parse": []}));
        assert!(e.get("description").is_none());
    }

    #[test]
    fn long_values_are_cut_with_an_ellipsis() {
        let m = raw(&format!(
            r#"{{"note": "{}", "{}": 1}}"#,
            "x".repeat(5000),
            "k".repeat(300)
        ));
        assert_within_limits(&m);
        let f = &m["embeds"][0]["fields"];
        let v = f[0]["value"].as_str().unwrap();
        assert_eq!(chars(v), FIELD_VALUE_MAX);
        assert!(v.ends_with(ELLIPSIS));
        assert_eq!(f[0]["inline"], false);
        assert_eq!(chars(f[1]["name"].as_str().unwrap()), FIELD_NAME_MAX);
    }

    #[test]
    fn many_fields_stop_at_the_limit_and_say_how_many_are_hidden() {
        let data: serde_json::Map<String, Value> =
            (0..40).map(|i| (format!("f{i:02}"), json!(i))).collect();
        let m = rendered(Value::Object(data));
        assert_within_limits(&m);
        let e = &m["embeds"][0];
        assert_eq!(e["fields"].as_array().unwrap().len(), FIELDS_MAX);
        assert_eq!(e["description"], "15 more fields not shown");
        // Exactly 25 fit without a note.
        let data: serde_json::Map<String, Value> =
            (0..25).map(|i| (format!("f{i:02}"), json!(i))).collect();
        let m = rendered(Value::Object(data));
        assert_eq!(
            m["embeds"][0]["fields"].as_array().unwrap().len(),
            FIELDS_MAX
        );
        assert!(m["embeds"][0].get("description").is_none());
    }

    #[test]
    fn the_total_budget_holds_with_every_field_at_its_maximum() {
        let data: serde_json::Map<String, Value> = (0..25)
            .map(|i| {
                (
                    format!("{i:02}{}", "n".repeat(400)),
                    json!("v".repeat(2000)),
                )
            })
            .collect();
        let m = rendered(Value::Object(data));
        assert_within_limits(&m);
        let d = m["embeds"][0]["description"].as_str().unwrap();
        assert!(d.ends_with("more fields not shown"), "{d}");
    }

    #[test]
    fn nested_unicode_empty_and_markdown_values() {
        let m = raw(&format!(
            r#"{{"nested": {{"b": [1, {{"c": null}}], "a": "é"}}, "emoji": "{}", "": "",
                 "md": "*bold* @everyone <@123> `code`"}}"#,
            "😀".repeat(2000)
        ));
        assert_within_limits(&m);
        let f = m["embeds"][0]["fields"].as_array().unwrap();
        assert_eq!(f[0]["value"], r#"{"a":"é","b":\[1,{"c":null}\]}"#);
        let emoji = f[1]["value"].as_str().unwrap();
        assert_eq!(chars(emoji), FIELD_VALUE_MAX);
        assert!(emoji.starts_with('😀') && emoji.ends_with(ELLIPSIS));
        assert_eq!(
            (f[2]["name"].as_str(), f[2]["value"].as_str()),
            (Some(EMPTY), Some(EMPTY))
        );
        assert_eq!(f[3]["value"], r"\*bold\* @everyone <@123\> \`code\`");
    }

    #[test]
    fn non_objects_and_empty_objects_get_a_description() {
        let m = rendered(json!("a".repeat(9000)));
        assert_within_limits(&m);
        let d = m["embeds"][0]["description"].as_str().unwrap();
        assert_eq!(chars(d), DESCRIPTION_MAX);
        assert!(m["embeds"][0]["fields"].as_array().unwrap().is_empty());
        let m = rendered(json!({}));
        assert_eq!(m["embeds"][0]["description"], "(no fields)");
        let m = rendered(json!(null));
        assert_eq!(m["embeds"][0]["description"], "null");
        assert_within_limits(&rendered(json!([1, 2, 3])));
    }
}
