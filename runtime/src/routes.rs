//! Route templates (`/chat/{room}`, greedy `/files/{path+}`) and route selection
//! expressions (`$request.body.action`).
//!
//! Matching is done by `matchit` (the router behind axum): static segments win over
//! parameters, parameters over a greedy tail, and two templates that would match the
//! same paths are refused when the table is built.

use std::borrow::Cow;
use std::fmt;

use percent_encoding::percent_decode_str;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

/// A table of route templates, each with a value.
#[derive(Debug)]
pub struct RouteTable<T> {
    router: matchit::Router<usize>,
    routes: Vec<(String, T)>,
}

/// A matched route.
#[derive(Debug)]
pub struct RouteMatch<'a, T> {
    /// The template as configured, e.g. `/chat/{room}`.
    pub template: &'a str,
    /// The value stored with the template.
    pub value: &'a T,
    /// Captured parameters, percent-decoded, in template order.
    pub params: Vec<(String, String)>,
}

impl<T> Default for RouteTable<T> {
    fn default() -> Self {
        Self {
            router: matchit::Router::new(),
            routes: Vec::new(),
        }
    }
}

impl<T> RouteTable<T> {
    /// An empty table.
    pub fn builder() -> Self {
        Self::default()
    }

    /// Adds a template. The error says what is wrong with it or which template it
    /// conflicts with.
    pub fn insert(&mut self, template: &str, value: T) -> Result<(), String> {
        let internal = to_matchit(template)?;
        self.router
            .insert(internal, self.routes.len())
            .map_err(|err| match err {
                matchit::InsertError::Conflict { with } => {
                    let with = self
                        .routes
                        .iter()
                        .map(|(t, _)| t.as_str())
                        .find(|t| to_matchit(t).ok().as_deref() == Some(with.as_str()))
                        .unwrap_or(&with)
                        .to_owned();
                    format!("route `{template}` conflicts with route `{with}`: both would match the same paths")
                }
                other => format!("invalid route template `{template}`: {other}"),
            })?;
        self.routes.push((template.to_owned(), value));
        Ok(())
    }

    /// The value of exactly this template (not a match: a lookup by the stable key a
    /// connection keeps). Tenants have few routes, so a scan beats hashing.
    pub fn get(&self, template: &str) -> Option<&T> {
        self.routes
            .iter()
            .find(|(t, _)| t == template)
            .map(|(_, value)| value)
    }

    /// Every value, in the order the templates were added.
    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.routes.iter().map(|(_, value)| value)
    }

    /// The route matching `path` (the request path below the tenant, without query).
    pub fn at(&self, path: &str) -> Option<RouteMatch<'_, T>> {
        let matched = self.router.at(path).ok()?;
        let (template, value) = &self.routes[*matched.value];
        let params = matched
            .params
            .iter()
            .map(|(name, value)| {
                (
                    name.to_owned(),
                    percent_decode_str(value).decode_utf8_lossy().into_owned(),
                )
            })
            .collect();
        Some(RouteMatch {
            template,
            value,
            params,
        })
    }
}

/// Checks our template syntax and translates it to matchit's (`{name+}` -> `{*name}`).
fn to_matchit(template: &str) -> Result<String, String> {
    if !template.starts_with('/') {
        return Err(format!("route template `{template}` must start with '/'"));
    }
    let segments: Vec<&str> = template[1..].split('/').collect();
    let mut out = String::with_capacity(template.len() + 1);
    for (i, segment) in segments.iter().enumerate() {
        out.push('/');
        let last = i + 1 == segments.len();
        if let Some(inner) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            let (name, greedy) = match inner.strip_suffix('+') {
                Some(name) => (name, true),
                None => (inner, false),
            };
            if !valid_param_name(name) {
                return Err(format!(
                    "invalid parameter `{segment}` in route `{template}`: a name is a letter or '_' then letters, digits or '_'"
                ));
            }
            if greedy && !last {
                return Err(format!(
                    "greedy parameter `{segment}` must be the last segment of route `{template}`"
                ));
            }
            out.push('{');
            if greedy {
                out.push('*');
            }
            out.push_str(name);
            out.push('}');
        } else if segment.contains(['{', '}']) {
            return Err(format!(
                "segment `{segment}` of route `{template}`: a parameter must be a whole segment, like `{{room}}`"
            ));
        } else {
            out.push_str(segment);
        }
    }
    Ok(out)
}

fn valid_param_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A route selection expression: which field of a JSON text message names the route
/// key. `$request.body.action` and `${request.body.action}` are the same; nested
/// fields are dotted (`$request.body.meta.type`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectionExpression {
    path: Vec<String>,
}

impl SelectionExpression {
    /// Parses an expression; the error says which forms are accepted.
    pub fn parse(expr: &str) -> Result<Self, String> {
        let body = expr
            .strip_prefix("${")
            .and_then(|s| s.strip_suffix('}'))
            .or_else(|| expr.strip_prefix('$'))
            .and_then(|s| s.strip_prefix("request.body."))
            .ok_or_else(|| {
                format!("unsupported selection expression `{expr}`: use `$request.body.<field>` (fields may be dotted)")
            })?;
        let path: Vec<String> = body.split('.').map(str::to_owned).collect();
        if path.iter().any(|field| field.is_empty()) {
            return Err(format!(
                "selection expression `{expr}` has an empty field name"
            ));
        }
        Ok(Self { path })
    }

    /// The route key a text message selects: the field's value when it is a string,
    /// number or boolean. `None` when the message is not a JSON object or lacks the
    /// field; the caller falls back to `$default`.
    pub fn select(&self, text: &str) -> Option<String> {
        let mut current: &RawValue = serde_json::from_str(text).ok()?;
        for field in &self.path {
            let mut de = serde_json::Deserializer::from_str(current.get());
            current = FieldSeed(field).deserialize(&mut de).ok()??;
        }
        match serde_json::from_str::<Scalar>(current.get()).ok()? {
            Scalar::String(s) => Some(s.into_owned()),
            Scalar::Number(n) => Some(n.to_string()),
            Scalar::Bool(b) => Some(b.to_string()),
        }
    }
}

#[derive(serde::Deserialize)]
#[serde(untagged)]
enum Scalar<'a> {
    #[serde(borrow)]
    String(Cow<'a, str>),
    Number(serde_json::Number),
    Bool(bool),
}

/// Finds one field of a JSON object without building the rest of it.
struct FieldSeed<'f>(&'f str);

impl<'de> DeserializeSeed<'de> for FieldSeed<'_> {
    type Value = Option<&'de RawValue>;

    fn deserialize<D: de::Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        de.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for FieldSeed<'_> {
    type Value = Option<&'de RawValue>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            if found.is_none() && key == self.0 {
                found = Some(map.next_value::<&'de RawValue>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(templates: &[&str]) -> RouteTable<usize> {
        let mut table = RouteTable::builder();
        for (i, t) in templates.iter().enumerate() {
            table.insert(t, i).unwrap();
        }
        table
    }

    #[test]
    fn static_params_and_greedy() {
        let t = table(&["/echo", "/chat/{room}", "/files/{path+}", "/chat/lobby"]);
        assert_eq!(*t.at("/echo").unwrap().value, 0);
        let m = t.at("/chat/general").unwrap();
        assert_eq!((m.template, *m.value), ("/chat/{room}", 1));
        assert_eq!(m.params, vec![("room".into(), "general".into())]);
        assert_eq!(
            *t.at("/chat/lobby").unwrap().value,
            3,
            "static beats parameter"
        );
        let m = t.at("/files/a/b/c.txt").unwrap();
        assert_eq!(m.params, vec![("path".into(), "a/b/c.txt".into())]);
        assert!(
            t.at("/files/").is_none(),
            "greedy needs at least one character"
        );
        assert!(t.at("/nope").is_none());
        assert!(t.at("/chat/a/b").is_none());
    }

    #[test]
    fn params_are_percent_decoded() {
        let t = table(&["/chat/{room}"]);
        assert_eq!(t.at("/chat/caf%C3%A9").unwrap().params[0].1, "café");
    }

    #[test]
    fn conflicts_name_both_routes() {
        let mut t = table(&["/chat/{room}"]);
        let err = t.insert("/chat/{name}", 1).unwrap_err();
        assert!(
            err.contains("`/chat/{name}` conflicts with route `/chat/{room}`"),
            "{err}"
        );
    }

    #[test]
    fn malformed_templates_are_refused() {
        let mut t = RouteTable::builder();
        for bad in ["echo", "/a/{rest+}/b", "/a-{x}", "/{1x}", "/{}"] {
            assert!(t.insert(bad, 0).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn selection_parses_both_forms() {
        let a = SelectionExpression::parse("$request.body.action").unwrap();
        let b = SelectionExpression::parse("${request.body.action}").unwrap();
        assert_eq!(a, b);
        for bad in [
            "request.body.action",
            "$request.header.x",
            "$request.body.",
            "$request.body.a..b",
        ] {
            assert!(SelectionExpression::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn selection_reads_fields() {
        let e = SelectionExpression::parse("$request.body.action").unwrap();
        assert_eq!(
            e.select(r#"{"action":"join","x":[1,{"action":"no"}]}"#)
                .as_deref(),
            Some("join")
        );
        assert_eq!(
            e.select(r#"{"x":{"action":"deep"},"action":"top"}"#)
                .as_deref(),
            Some("top")
        );
        assert_eq!(e.select(r#"{"action":"a\"b"}"#).as_deref(), Some("a\"b"));
        assert_eq!(e.select(r#"{"action":7}"#).as_deref(), Some("7"));
        assert_eq!(e.select(r#"{"action":true}"#).as_deref(), Some("true"));
        assert_eq!(e.select(r#"{"action":null}"#), None);
        assert_eq!(e.select(r#"{"action":{"a":1}}"#), None);
        assert_eq!(e.select(r#"{"other":1}"#), None);
        assert_eq!(e.select("not json"), None);
        assert_eq!(e.select("[1,2]"), None);
        let nested = SelectionExpression::parse("$request.body.meta.kind").unwrap();
        assert_eq!(
            nested.select(r#"{"meta":{"kind":"ping"}}"#).as_deref(),
            Some("ping")
        );
        assert_eq!(nested.select(r#"{"meta":"flat"}"#), None);
    }
}
