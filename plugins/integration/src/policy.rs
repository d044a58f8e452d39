//! IAM policy evaluation for a REQUEST authorizer's `policyDocument`, as API Gateway
//! does it for `$connect`: an explicit Deny wins, otherwise some Allow must match.

use serde_json::Value;

/// The action API Gateway checks a `$connect` against.
pub const INVOKE: &str = "execute-api:Invoke";

/// Whether `document` allows `action` on `resource`. `Err` says why the document
/// cannot be read (an invalid answer, which refuses the connection too).
///
/// A statement applies when its `Action` (or `NotAction`) and `Resource` (or
/// `NotResource`) match. A `Condition` cannot be evaluated here (there are no request
/// keys to test), so it is read in the safe direction: an Allow under a condition does
/// not count, a Deny under one does.
pub fn allows(document: &Value, action: &str, resource: &str) -> Result<bool, String> {
    let document = document
        .as_object()
        .ok_or("`policyDocument` is not an object")?;
    let statements: Vec<&Value> = match document.get("Statement") {
        Some(Value::Array(list)) => list.iter().collect(),
        Some(one @ Value::Object(_)) => vec![one],
        _ => return Err("`policyDocument.Statement` is missing or not a list".into()),
    };
    let mut allowed = false;
    for statement in statements {
        let statement = statement
            .as_object()
            .ok_or("a policy statement is not an object")?;
        let effect = statement
            .get("Effect")
            .and_then(Value::as_str)
            .ok_or("a policy statement has no `Effect`")?;
        let allow = if effect.eq_ignore_ascii_case("allow") {
            true
        } else if effect.eq_ignore_ascii_case("deny") {
            false
        } else {
            return Err(format!("a policy statement has `Effect` {effect:?}"));
        };
        let applies = matches_any(statement, "Action", "NotAction", action, Case::Insensitive)?
            && matches_any(
                statement,
                "Resource",
                "NotResource",
                resource,
                Case::Sensitive,
            )?;
        let conditional = statement.contains_key("Condition");
        match (applies, allow) {
            (false, _) => {}
            (true, false) => return Ok(false),
            (true, true) if !conditional => allowed = true,
            (true, true) => {}
        }
    }
    Ok(allowed)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Case {
    Sensitive,
    Insensitive,
}

/// Whether the statement's `key` list matches `value` (or its `not_key` list does not).
fn matches_any(
    statement: &serde_json::Map<String, Value>,
    key: &str,
    not_key: &str,
    value: &str,
    case: Case,
) -> Result<bool, String> {
    let (patterns, negated) = match (statement.get(key), statement.get(not_key)) {
        (Some(patterns), None) => (patterns, false),
        (None, Some(patterns)) => (patterns, true),
        _ => {
            return Err(format!(
                "a policy statement needs exactly one of `{key}` and `{not_key}`"
            ));
        }
    };
    let patterns: Vec<&str> = match patterns {
        Value::String(one) => vec![one],
        Value::Array(list) => list
            .iter()
            .map(|p| p.as_str().ok_or(format!("`{key}` holds a non-string")))
            .collect::<Result<_, _>>()?,
        _ => return Err(format!("`{key}` is neither a string nor a list")),
    };
    let any = patterns
        .iter()
        .any(|pattern| wildcard_match(pattern, value, case));
    Ok(any != negated)
}

/// IAM wildcard matching: `*` is any run of characters, `?` any one character. In an
/// ARN a wildcard stays within its colon-separated segment, except a `*` that ends a
/// segment, which IAM lets expand past colons (so `arn:aws:execute-api:*` matches every
/// API). Actions have one colon and the same rule gives `execute-api:*` its meaning.
fn wildcard_match(pattern: &str, text: &str, case: Case) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    let same = |a: char, b: char| match case {
        Case::Sensitive => a == b,
        Case::Insensitive => a.eq_ignore_ascii_case(&b),
    };
    // reach[j]: pattern[..i] matches text[..j], for the i of the current round.
    let mut reach = vec![false; text.len() + 1];
    reach[0] = true;
    for (i, &p) in pattern.iter().enumerate() {
        let mut next = vec![false; text.len() + 1];
        match p {
            '*' => {
                let crosses = matches!(pattern.get(i + 1), None | Some(':'));
                let mut open = false;
                for j in 0..=text.len() {
                    open |= reach[j];
                    next[j] = open;
                    // A run that may not cross segments ends before a colon.
                    if j < text.len() && text[j] == ':' && !crosses {
                        open = false;
                    }
                }
            }
            '?' => {
                for j in 0..text.len() {
                    next[j + 1] = reach[j] && text[j] != ':';
                }
            }
            literal => {
                for j in 0..text.len() {
                    next[j + 1] = reach[j] && same(literal, text[j]);
                }
            }
        }
        reach = next;
    }
    reach[text.len()]
}
