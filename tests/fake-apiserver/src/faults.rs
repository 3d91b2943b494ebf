//! Fault injection: rules that make the next matching requests slow, fail
//! with a status, or lose their connection.

use std::time::Duration;

/// A fault for the next `times` requests that match every given field.
///
/// ```
/// use fake_apiserver::FaultRule;
/// use std::time::Duration;
/// // The next two patches of deployments answer 429 with Retry-After.
/// let r = FaultRule::status(429).verb("patch").resource("deployments").times(2);
/// // The next get waits 2 s and then proceeds normally.
/// let d = FaultRule::delay(Duration::from_secs(2)).verb("get");
/// # let _ = (r, d);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct FaultRule {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`,
    /// `deletecollection`; non-resource requests have the lowercase method.
    pub verb: Option<String>,
    /// The plural resource (`deployments`, `configmaps`, `leases`).
    pub resource: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    /// How many matching requests this rule hits (at least 1).
    pub times: usize,
    /// Answer with this code and its proper `Status` body (429 and 503 add
    /// `Retry-After: 1`). `None` proceeds normally after the delay.
    pub status: Option<u16>,
    /// Wait this long first.
    pub delay: Option<Duration>,
    /// Close the connection instead of answering: the client sees a
    /// transport error ("connection closed before message completed").
    pub drop_connection: bool,
}

impl Default for FaultRule {
    fn default() -> Self {
        FaultRule {
            verb: None,
            resource: None,
            namespace: None,
            name: None,
            times: 1,
            status: None,
            delay: None,
            drop_connection: false,
        }
    }
}

impl FaultRule {
    /// Fail with `code` and a matching `Status`.
    pub fn status(code: u16) -> Self {
        FaultRule {
            status: Some(code),
            ..Default::default()
        }
    }

    /// Delay, then proceed (add [`FaultRule::with_status`] to fail after it).
    pub fn delay(d: Duration) -> Self {
        FaultRule {
            delay: Some(d),
            ..Default::default()
        }
    }

    /// Drop the connection without answering.
    pub fn drop_connection() -> Self {
        FaultRule {
            drop_connection: true,
            ..Default::default()
        }
    }

    pub fn verb(mut self, verb: &str) -> Self {
        self.verb = Some(verb.into());
        self
    }

    pub fn resource(mut self, resource: &str) -> Self {
        self.resource = Some(resource.into());
        self
    }

    pub fn namespace(mut self, namespace: &str) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.into());
        self
    }

    pub fn times(mut self, times: usize) -> Self {
        self.times = times;
        self
    }

    pub fn with_status(mut self, code: u16) -> Self {
        self.status = Some(code);
        self
    }

    pub fn with_delay(mut self, d: Duration) -> Self {
        self.delay = Some(d);
        self
    }

    pub(crate) fn matches(
        &self,
        verb: &str,
        resource: Option<&str>,
        namespace: Option<&str>,
        name: Option<&str>,
    ) -> bool {
        fn ok(want: &Option<String>, have: Option<&str>) -> bool {
            want.as_deref().is_none_or(|w| Some(w) == have)
        }
        self.times > 0
            && ok(&self.verb, Some(verb))
            && ok(&self.resource, resource)
            && ok(&self.namespace, namespace)
            && ok(&self.name, name)
    }
}

/// Takes the first matching rule, spending one of its `times`.
pub(crate) fn take(
    rules: &mut Vec<FaultRule>,
    verb: &str,
    resource: Option<&str>,
    namespace: Option<&str>,
    name: Option<&str>,
) -> Option<FaultRule> {
    let i = rules
        .iter()
        .position(|r| r.matches(verb, resource, namespace, name))?;
    rules[i].times -= 1;
    let hit = rules[i].clone();
    if rules[i].times == 0 {
        rules.remove(i);
    }
    Some(hit)
}
