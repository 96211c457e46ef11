//! The dashboard: static assets compiled into the binary (no build step, no CDN).
//! It signs in with an API key and talks to the same `/v1` API as everyone else.
//!
//! The script is a set of native ES modules: `index.html` loads `app.js`, which
//! imports the rest by relative path. Every module must be in [`ASSETS`]; the
//! tests below fail when a module imports one that is not served, since the
//! browser would only find out at runtime.

use axum::http::{header, HeaderName, HeaderValue};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use super::AppState;

const INDEX: &str = include_str!("../../assets/dashboard/index.html");

/// Embeds one file of `assets/dashboard/` as `(path below /assets/, body)`.
macro_rules! asset {
    ($path:literal) => {
        (
            $path,
            include_str!(concat!("../../assets/dashboard/", $path)),
        )
    };
}

/// Everything served under `/assets/`: the stylesheet and every script module.
const ASSETS: &[(&str, &str)] = &[
    asset!("app.css"),
    // The entry module, then what it imports.
    asset!("app.js"),
    asset!("api.js"),
    asset!("charts.js"),
    asset!("demo.js"),
    asset!("dialogs.js"),
    asset!("dom.js"),
    asset!("endpoint-cache.js"),
    asset!("feedback.js"),
    asset!("format.js"),
    asset!("hash.js"),
    asset!("poll.js"),
    asset!("shell.js"),
    asset!("signin.js"),
    asset!("ui.js"),
    asset!("components/activity.js"),
    asset!("components/code-editor.js"),
    asset!("components/delivery-list.js"),
    asset!("components/endpoint-form.js"),
    asset!("components/endpoint-pause.js"),
    asset!("components/transformation-editor.js"),
    asset!("views/dead-letters.js"),
    asset!("views/deliveries.js"),
    asset!("views/delivery.js"),
    asset!("views/endpoint.js"),
    asset!("views/endpoints.js"),
    asset!("views/event.js"),
    asset!("views/event-types.js"),
];

pub(super) fn router() -> Router<AppState> {
    let index = get(|| async { asset("text/html; charset=utf-8", INDEX) });
    ASSETS
        .iter()
        .fold(Router::new().route("/", index), |router, &(path, body)| {
            let content_type = content_type(path);
            router.route(
                &format!("/assets/{path}"),
                get(move || async move { asset(content_type, body) }),
            )
        })
}

/// The `Content-Type` of an asset, by extension. Anything else is served as bytes,
/// which `nosniff` stops the browser from running or applying: a loud mistake.
fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        _ => "application/octet-stream",
    }
}

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            // Everything the page needs is served from here: nothing else may load.
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static("default-src 'self'; img-src 'self' data:; style-src 'self'; frame-ancestors 'none'"),
            ),
            (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
            (HeaderName::from_static("referrer-policy"), HeaderValue::from_static("no-referrer")),
        ],
        body,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The module specifiers a script imports: `import … from '…'`, `export … from '…'`,
    /// `import '…'` and `import('…')`, one statement per line as the dashboard writes them.
    fn imports(script: &str) -> Vec<&str> {
        let mut found = Vec::new();
        for line in script.lines().map(str::trim_start) {
            let statement = line.starts_with("import ")
                || line.starts_with("export ")
                || line.starts_with("} from ");
            let rest = if let Some(at) = line.find("import(") {
                Some(&line[at + "import(".len()..])
            } else if statement {
                line.find(" from ")
                    .map(|at| &line[at + " from ".len()..])
                    .or_else(|| line.strip_prefix("import "))
            } else {
                None
            };
            let Some(rest) = rest.map(str::trim_start) else {
                continue;
            };
            let Some(quote) = rest.chars().next().filter(|c| matches!(c, '\'' | '"')) else {
                continue;
            };
            if let Some(end) = rest[1..].find(quote) {
                found.push(&rest[1..1 + end]);
            }
        }
        found
    }

    /// Where the browser fetches `specifier` from when `module` (a path below
    /// /assets/) imports it, as a path below /assets/; `None` if it leaves /assets/.
    fn resolve(module: &str, specifier: &str) -> Option<String> {
        if let Some(absolute) = specifier.strip_prefix("/assets/") {
            return Some(absolute.to_owned());
        }
        // A bare name ("lit") needs an import map or a bundler; a URL is a CDN.
        if !(specifier.starts_with("./") || specifier.starts_with("../")) {
            return None;
        }
        let mut parts: Vec<&str> = module.split('/').collect();
        parts.pop(); // the importing file itself
        for segment in specifier.split('/') {
            match segment {
                "." => {}
                ".." => {
                    parts.pop()?;
                }
                _ => parts.push(segment),
            }
        }
        Some(parts.join("/"))
    }

    fn served(path: &str) -> bool {
        ASSETS.iter().any(|&(p, _)| p == path)
    }

    #[test]
    fn every_imported_module_is_served() {
        let mut checked = 0;
        for &(module, body) in ASSETS.iter().filter(|(p, _)| p.ends_with(".js")) {
            for specifier in imports(body) {
                let target = resolve(module, specifier);
                assert!(
                    target.as_deref().is_some_and(served),
                    "{module} imports {specifier:?}, which is not in ASSETS (resolved: {target:?})"
                );
                checked += 1;
            }
        }
        // Guards the parser: the entry alone imports a dozen modules.
        assert!(checked > 20, "only {checked} imports found");
    }

    #[test]
    fn every_asset_the_page_links_is_served() {
        for attr in ["src=\"/assets/", "href=\"/assets/"] {
            for (at, _) in INDEX.match_indices(attr) {
                let rest = &INDEX[at + attr.len()..];
                let path = &rest[..rest.find('"').expect("closing quote")];
                assert!(
                    served(path),
                    "index.html links /assets/{path}, which is not served"
                );
            }
        }
        assert!(INDEX.contains("<script type=\"module\" src=\"/assets/app.js\">"));
    }

    #[test]
    fn every_module_is_reachable_from_the_entry() {
        // A module nobody imports is dead code that still ships in the binary.
        let mut seen = vec!["app.js".to_owned()];
        let mut next = 0;
        while let Some(module) = seen.get(next).cloned() {
            next += 1;
            let body = ASSETS.iter().find(|&&(p, _)| p == module).map(|&(_, b)| b);
            for specifier in imports(body.unwrap_or_default()) {
                let target = resolve(&module, specifier).unwrap_or_default();
                if !seen.contains(&target) {
                    seen.push(target);
                }
            }
        }
        for &(path, _) in ASSETS.iter().filter(|(p, _)| p.ends_with(".js")) {
            assert!(
                seen.iter().any(|s| s == path),
                "{path} is served but never imported"
            );
        }
    }

    #[test]
    fn import_parser_reads_the_forms_the_dashboard_uses() {
        let script = "import { a, b } from './a.js';\nimport \"../b.js\";\n} from './c.js';\nconst m = import('./d.js');\nconst s = 'from here';\n";
        assert_eq!(imports(script), ["./a.js", "../b.js", "./c.js", "./d.js"]);
        assert_eq!(
            resolve("views/x.js", "../api.js").as_deref(),
            Some("api.js")
        );
        assert_eq!(
            resolve("views/x.js", "./y.js").as_deref(),
            Some("views/y.js")
        );
        assert_eq!(resolve("app.js", "../up.js"), None);
        assert_eq!(resolve("app.js", "https://cdn.example/x.js"), None);
    }

    #[test]
    fn every_asset_has_its_content_type() {
        for &(path, _) in ASSETS {
            let expected = if path.ends_with(".css") {
                "text/css"
            } else {
                "text/javascript"
            };
            assert!(
                content_type(path).starts_with(expected),
                "{path}: {}",
                content_type(path)
            );
        }
        assert_eq!(content_type("logo.svg"), "application/octet-stream");
    }
}
