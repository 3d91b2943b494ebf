//! `labelSelector` and `fieldSelector` query parameters.

use serde_json::Value;

use crate::status::ApiError;

#[derive(Debug, Clone, PartialEq)]
enum Req {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed label or field selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Selector {
    reqs: Vec<Req>,
    fields: bool,
}

impl Selector {
    /// Parses a label selector: `a=b`, `a==b`, `a!=b`, `a`, `!a`,
    /// `a in (x,y)`, `a notin (x)`, comma-separated.
    pub fn labels(s: &str) -> Result<Selector, ApiError> {
        let mut reqs = Vec::new();
        for term in split_terms(s) {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            let bad = || {
                ApiError::bad_request(format!(
                    "unable to parse requirement: invalid label selector {s:?}"
                ))
            };
            let req = if let Some(k) = term.strip_prefix('!') {
                Req::NotExists(k.trim().to_string())
            } else if let Some((k, v)) = term.split_once("!=") {
                Req::NotEq(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                Req::Eq(k.trim().into(), v.trim().into())
            } else if let Some((k, rest)) = term.split_once(" notin ") {
                Req::NotIn(k.trim().into(), set(rest).ok_or_else(bad)?)
            } else if let Some((k, rest)) = term.split_once(" in ") {
                Req::In(k.trim().into(), set(rest).ok_or_else(bad)?)
            } else if term.contains(char::is_whitespace) || term.contains('(') {
                return Err(bad());
            } else {
                Req::Exists(term.to_string())
            };
            reqs.push(req);
        }
        Ok(Selector {
            reqs,
            fields: false,
        })
    }

    /// Parses a field selector. Like the real server for most types, only
    /// `metadata.name` and `metadata.namespace` are supported (plus the
    /// event fields kubectl uses); others are a 400.
    pub fn fields(s: &str, kind: &str) -> Result<Selector, ApiError> {
        let sel = Selector::labels(s)?;
        for r in &sel.reqs {
            let key = match r {
                Req::Eq(k, _) | Req::NotEq(k, _) => k,
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "invalid field selector: {s:?}"
                    )));
                }
            };
            let known = matches!(key.as_str(), "metadata.name" | "metadata.namespace")
                || (kind == "Event"
                    && (key.starts_with("involvedObject.")
                        || matches!(
                            key.as_str(),
                            "reason" | "type" | "source" | "reportingComponent"
                        )));
            if !known {
                return Err(ApiError::bad_request(format!(
                    "\"{key}\" is not a known field selector: only \"metadata.name\", \"metadata.namespace\""
                )));
            }
        }
        Ok(Selector {
            fields: true,
            ..sel
        })
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.reqs.iter().all(|r| {
            let get = |k: &str| -> Option<String> {
                if self.fields {
                    let v = k.split('.').try_fold(obj, |cur, part| cur.get(part))?;
                    Some(match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                } else {
                    obj.pointer("/metadata/labels")?
                        .get(k)?
                        .as_str()
                        .map(str::to_string)
                }
            };
            match r {
                Req::Eq(k, v) => {
                    get(k).as_deref() == Some(v.as_str())
                        || (self.fields && v.is_empty() && get(k).is_none())
                }
                Req::NotEq(k, v) => get(k).as_deref() != Some(v.as_str()),
                Req::In(k, vs) => get(k).is_some_and(|x| vs.contains(&x)),
                Req::NotIn(k, vs) => get(k).is_none_or(|x| !vs.contains(&x)),
                Req::Exists(k) => get(k).is_some(),
                Req::NotExists(k) => get(k).is_none(),
            }
        })
    }
}

/// Splits on commas outside parentheses.
fn split_terms(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn set(s: &str) -> Option<Vec<String>> {
    let inner = s.trim().strip_prefix('(')?.strip_suffix(')')?;
    Some(
        inner
            .split(',')
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_selectors() {
        let obj = json!({"metadata": {"name": "x", "labels": {"app": "web", "tier": "fe"}}});
        let cases = [
            ("", true),
            ("app=web", true),
            ("app==web", true),
            ("app=db", false),
            ("app!=db", true),
            ("app", true),
            ("!app", false),
            ("missing", false),
            ("!missing", true),
            ("app in (web,db)", true),
            ("app notin (web)", false),
            ("app=web,tier in (fe, be)", true),
            ("app=web,tier=be", false),
        ];
        for (sel, want) in cases {
            assert_eq!(Selector::labels(sel).unwrap().matches(&obj), want, "{sel}");
        }
        assert!(Selector::labels("app in web").is_err());
    }

    #[test]
    fn field_selectors() {
        let obj = json!({"metadata": {"name": "x", "namespace": "ns"}});
        assert!(
            Selector::fields("metadata.name=x", "Deployment")
                .unwrap()
                .matches(&obj)
        );
        assert!(
            !Selector::fields("metadata.name=y", "Deployment")
                .unwrap()
                .matches(&obj)
        );
        assert!(
            Selector::fields("metadata.namespace!=other", "Deployment")
                .unwrap()
                .matches(&obj)
        );
        assert_eq!(
            Selector::fields("spec.replicas=1", "Deployment")
                .unwrap_err()
                .code,
            400
        );
    }
}
