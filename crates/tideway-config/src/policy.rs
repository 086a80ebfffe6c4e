//! The policy keys, shared by `[defaults]` and every `[[app]]`: read one section on top of a base policy.

use tideway_core::{Affinity, Balance, Policy, PolicyProblem, SpawnThreshold};
use toml::Value;

use crate::values::{count, duration, expected, integer_in, optional_duration};
use crate::walk::{Errors, Section};

/// A policy with the keys of one section laid over a base, and which keys that section wrote.
#[derive(Debug)]
pub(crate) struct Overlay {
    /// The base with every valid key of the section applied.
    pub(crate) policy: Policy,
    /// Keys the section set to a valid value.
    pub(crate) set: Vec<&'static str>,
    /// Keys the section set to an invalid value (already reported, so their policy problems are noise).
    pub(crate) invalid: Vec<&'static str>,
}

impl Overlay {
    /// Reads every policy key of `section` over `base`.
    pub(crate) fn read(section: &mut Section<'_>, errors: &mut Errors, base: &Policy) -> Self {
        let mut overlay = Overlay {
            policy: base.clone(),
            set: Vec::new(),
            invalid: Vec::new(),
        };
        let mut reader = Reader {
            section,
            errors,
            overlay: &mut overlay,
        };
        let p = &mut reader;
        p.read("min_instances", count, |policy, v| policy.min_instances = v);
        p.read("max_instances", count, |policy, v| policy.max_instances = v);
        p.read("max_connections", count, |policy, v| policy.max_connections = v);
        p.read("spawn_threshold", spawn_threshold, |policy, v| {
            policy.spawn_threshold = v
        });
        p.read("max_connection_age", optional_duration, |policy, v| {
            policy.max_connection_age = v;
        });
        p.read("inactive_timeout", optional_duration, |policy, v| {
            policy.inactive_timeout = v
        });
        p.read("scale_down_delay", duration, |policy, v| {
            policy.scale_down_delay = v
        });
        p.read("startup_timeout", duration, |policy, v| {
            policy.startup_timeout = v
        });
        p.read("queue_timeout", duration, |policy, v| policy.queue_timeout = v);
        p.read("queue_size", count, |policy, v| policy.queue_size = v);
        p.read("drain_timeout", duration, |policy, v| policy.drain_timeout = v);
        p.read("close_grace", duration, |policy, v| policy.close_grace = v);
        p.read("balance", balance, |policy, v| policy.balance = v);
        p.read("affinity", affinity, |policy, v| policy.affinity = v);
        p.read("reconnect_grace", duration, |policy, v| {
            policy.reconnect_grace = v
        });
        p.read("max_session_connections", count, |policy, v| {
            policy.max_session_connections = v
        });
        p.read("body_read_timeout", duration, |policy, v| {
            policy.body_read_timeout = v
        });
        p.read("response_timeout", duration, |policy, v| {
            policy.response_timeout = v
        });
        overlay
    }

    /// The policy's problems, minus those on keys whose value was invalid (that error is already reported).
    pub(crate) fn problems(&self) -> Vec<PolicyProblem> {
        self.policy
            .problems()
            .into_iter()
            .filter(|problem| !self.invalid.contains(&problem.key))
            .collect()
    }
}

/// Reads keys of one section into an overlay.
struct Reader<'s, 'a> {
    section: &'s mut Section<'a>,
    errors: &'s mut Errors,
    overlay: &'s mut Overlay,
}

impl Reader<'_, '_> {
    fn read<T>(
        &mut self,
        key: &'static str,
        parse: impl FnOnce(&Value) -> Result<T, String>,
        apply: impl FnOnce(&mut Policy, T),
    ) {
        if !self.section.contains(key) {
            return;
        }
        match self.section.get(key, self.errors, parse) {
            Some(value) => {
                apply(&mut self.overlay.policy, value);
                self.overlay.set.push(key);
            }
            None => self.overlay.invalid.push(key),
        }
    }
}

/// An integer percent, 1–100.
fn spawn_threshold(value: &Value) -> Result<SpawnThreshold, String> {
    let percent: u8 = integer_in(value, 1, 100)?;
    SpawnThreshold::new(percent).ok_or_else(|| "must be between 1 and 100".to_owned())
}

/// `"least-connections"` or `"pack"`.
fn balance(value: &Value) -> Result<Balance, String> {
    match value {
        Value::String(s) => s.parse(),
        other => Err(expected(r#"expected "least-connections" or "pack""#, other)),
    }
}

/// `"none"` or `"cookie"`.
fn affinity(value: &Value) -> Result<Affinity, String> {
    match value {
        Value::String(s) => s.parse(),
        other => Err(expected(r#"expected "none" or "cookie""#, other)),
    }
}

/// A policy changed at run time: the keys of `table` (as in an `[[app]]` table: `max_instances = 8`,
/// `inactive_timeout = "15m"`) laid over `base`, held to exactly the rules of the config file. Errors name
/// the key (`max_instances: must be >= min_instances (3)`); keys that are not policy keys are errors.
pub fn policy_update(base: &Policy, table: &toml::Table) -> Result<Policy, Vec<crate::FieldError>> {
    let mut errors = Errors::default();
    let mut section = Section::new("", table);
    let overlay = Overlay::read(&mut section, &mut errors, base);
    section.finish(&mut errors);
    for problem in overlay.problems() {
        errors.push(problem.key, problem.message);
    }
    if errors.is_empty() {
        Ok(overlay.policy)
    } else {
        Err(errors.into_vec())
    }
}
