//! The policy keys, shared by `[defaults]` and every `[[app]]`: read one section on top of a base policy.

use std::time::Duration;

use tideway_core::{Affinity, Balance, Headroom, Policy, PolicyProblem, SpawnThreshold};
use toml::Value;

use crate::values::{boolean, count, duration, expected, integer_in, optional_duration};
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

/// One app policy key: its name as the file spells it, how a value of it is laid over a policy, and how a
/// policy's value of it is written back in the file's spelling. [`POLICY_KEYS`] lists them all, once: the
/// file's reader, the admin API and the checks of the README go through it.
pub struct PolicyKey {
    /// The key, as in the file, the admin API and the README.
    pub name: &'static str,
    /// The key's earlier name, still read (with a deprecation warning) until the next release.
    pub old_name: Option<&'static str>,
    apply: fn(&mut Policy, &Value) -> Result<(), String>,
    show: fn(&Policy) -> Value,
}

impl PolicyKey {
    /// The policy's value of this key, as the file would spell it (`"15m"`, `"off"`, `8`, `"pack"`).
    pub fn show(&self, policy: &Policy) -> Value {
        (self.show)(policy)
    }
}

/// A [`PolicyKey`] for the policy field of the same name, read with `parse` and shown with `show`.
macro_rules! key {
    ($field:ident (was $old:literal), $parse:expr, $show:expr) => {
        PolicyKey {
            old_name: Some($old),
            ..key!($field, $parse, $show)
        }
    };
    ($field:ident, $parse:expr, $show:expr) => {
        PolicyKey {
            name: stringify!($field),
            old_name: None,
            apply: |policy, value| {
                policy.$field = ($parse)(value)?;
                Ok(())
            },
            show: |policy| ($show)(&policy.$field),
        }
    };
}

/// Every app policy key, in the order of the README's reference.
pub static POLICY_KEYS: &[PolicyKey] = &[
    key!(min_instances, count, show_count),
    key!(max_instances, count, show_count),
    key!(max_connections, count, show_count),
    key!(spawn_threshold, spawn_threshold, |t: &SpawnThreshold| {
        Value::Integer(t.percent().into())
    }),
    key!(max_connection_age, optional_duration, show_optional),
    key!(inactive_timeout, optional_duration, show_optional),
    key!(scale_down_delay, duration, show_duration),
    key!(startup_timeout, duration, show_duration),
    key!(queue_timeout, duration, show_duration),
    key!(max_queued (was "queue_size"), count, show_count),
    key!(drain_timeout, duration, show_duration),
    key!(close_grace, duration, show_duration),
    key!(balance, balance, |b: &Balance| Value::String(
        b.as_str().to_owned()
    )),
    key!(affinity, affinity, |a: &Affinity| Value::String(
        a.as_str().to_owned()
    )),
    key!(reconnect_grace, duration, show_duration),
    key!(max_session_connections, count, show_count),
    key!(body_read_timeout, duration, show_duration),
    key!(response_timeout, duration, show_duration),
    key!(redirect_https, boolean, |b: &bool| Value::Boolean(*b)),
    key!(hsts_max_age, optional_duration, show_optional),
    key!(headroom, headroom, |h: &Headroom| Value::String(
        h.as_str().to_owned()
    )),
];

fn show_count(n: &u32) -> Value {
    Value::Integer((*n).into())
}

fn show_duration(d: &Duration) -> Value {
    Value::String(humantime::format_duration(*d).to_string())
}

fn show_optional(d: &Option<Duration>) -> Value {
    d.as_ref()
        .map_or_else(|| Value::String("off".to_owned()), show_duration)
}

impl Overlay {
    /// Reads every policy key of `section` over `base`.
    pub(crate) fn read(section: &mut Section<'_>, errors: &mut Errors, base: &Policy) -> Self {
        let mut overlay = Overlay {
            policy: base.clone(),
            set: Vec::new(),
            invalid: Vec::new(),
        };
        for key in POLICY_KEYS {
            let Some(spelled) = section.spelling(key.name, key.old_name, errors) else {
                continue;
            };
            let laid = section.get(spelled, errors, |value| {
                let mut policy = overlay.policy.clone();
                (key.apply)(&mut policy, value).map(|()| policy)
            });
            match laid {
                Some(policy) => {
                    overlay.policy = policy;
                    overlay.set.push(key.name);
                }
                None => overlay.invalid.push(key.name),
            }
        }
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

/// `"off"` or `"auto"`.
fn headroom(value: &Value) -> Result<Headroom, String> {
    match value {
        Value::String(s) => s.parse(),
        other => Err(expected(r#"expected "off" or "auto""#, other)),
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
