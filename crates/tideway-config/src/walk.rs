//! Walking a TOML table key by key while collecting every error with its field path.
//!
//! Serde's derive stops at the first error; a config check should name all of them. A [`Section`] hands out
//! the keys it is asked for (marking them consumed) and, when finished, reports every key nobody asked for.

use std::collections::BTreeSet;

use toml::{Table, Value};

use crate::FieldError;
use crate::values::expected;

/// Every error found so far, in the order found, and the keys spelled by a name that is going away.
#[derive(Debug, Default)]
pub(crate) struct Errors {
    errors: Vec<FieldError>,
    deprecated: Vec<FieldError>,
}

/// One TOML table being read: typed getters consume keys, [`Section::finish`] reports the rest as unknown.
#[derive(Debug)]
pub(crate) struct Section<'a> {
    path: String,
    table: &'a Table,
    consumed: BTreeSet<&'a str>,
}

impl Errors {
    /// Records that the value at `path` is wrong because of `message`.
    pub(crate) fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(FieldError {
            path: path.into(),
            message: message.into(),
        });
    }

    /// Whether nothing is wrong so far.
    pub(crate) fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    /// The errors, in the order found.
    pub(crate) fn into_vec(self) -> Vec<FieldError> {
        self.errors
    }

    /// The keys spelled by an old name, each with the name to use.
    pub(crate) fn deprecations(&self) -> Vec<FieldError> {
        self.deprecated.clone()
    }
}

impl<'a> Section<'a> {
    /// Starts reading `table`, found at `path` ("" for the whole file).
    pub(crate) fn new(path: impl Into<String>, table: &'a Table) -> Self {
        Section {
            path: path.into(),
            table,
            consumed: BTreeSet::new(),
        }
    }

    /// Where this table sits in the file, e.g. `app[0].static`.
    pub(crate) fn path(&self) -> &str {
        &self.path
    }

    /// The path of `key` in this table, quoting keys that are not bare TOML keys.
    pub(crate) fn key_path(&self, key: &str) -> String {
        let bare = !key.is_empty()
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        let key = if bare { key.to_owned() } else { format!("{key:?}") };
        if self.path.is_empty() {
            key
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// Which spelling of a renamed key the table uses: `new`, or else `old` — which still works, for one
    /// release, and is reported as deprecated; both at once is an error. `None` when it has neither.
    pub(crate) fn spelling(
        &mut self,
        new: &'static str,
        old: Option<&'static str>,
        errors: &mut Errors,
    ) -> Option<&'static str> {
        let old = old.filter(|old| self.contains(old));
        match (self.contains(new), old) {
            (true, None) => Some(new),
            (false, None) => None,
            (true, Some(old)) => {
                self.take(old);
                errors.push(
                    self.key_path(old),
                    format!("the old name of `{new}`, which is set too"),
                );
                Some(new)
            }
            (false, Some(old)) => {
                errors.deprecated.push(FieldError {
                    path: self.key_path(old),
                    message: format!("renamed to `{new}`; the old name works until the next release"),
                });
                Some(old)
            }
        }
    }

    /// Whether the table has `key`, without consuming it.
    pub(crate) fn contains(&self, key: &str) -> bool {
        self.table.contains_key(key)
    }

    /// The raw value of `key`, without consuming it.
    pub(crate) fn peek(&self, key: &str) -> Option<&'a Value> {
        self.table.get(key)
    }

    /// The raw value of `key`, consuming it.
    pub(crate) fn take(&mut self, key: &str) -> Option<&'a Value> {
        let (key, value) = self.table.get_key_value(key)?;
        self.consumed.insert(key.as_str());
        Some(value)
    }

    /// The value of `key` converted by `parse`; `None` when absent, or when invalid (the error is recorded).
    pub(crate) fn get<T>(
        &mut self,
        key: &str,
        errors: &mut Errors,
        parse: impl FnOnce(&'a Value) -> Result<T, String>,
    ) -> Option<T> {
        let value = self.take(key)?;
        parse(value)
            .map_err(|message| errors.push(self.key_path(key), message))
            .ok()
    }

    /// Like [`Section::get`], but a missing key is an error too.
    pub(crate) fn required<T>(
        &mut self,
        key: &str,
        errors: &mut Errors,
        parse: impl FnOnce(&'a Value) -> Result<T, String>,
    ) -> Option<T> {
        if !self.contains(key) {
            errors.push(self.key_path(key), "required");
            return None;
        }
        self.get(key, errors, parse)
    }

    /// The elements of the array `key` that `parse` accepts, each with its index; errors are recorded at
    /// `key[i]`. `None` when the key is absent or not an array.
    pub(crate) fn list<T>(
        &mut self,
        key: &str,
        errors: &mut Errors,
        mut parse: impl FnMut(&'a Value) -> Result<T, String>,
    ) -> Option<Vec<(usize, T)>> {
        let items = self.get(key, errors, |value| match value {
            Value::Array(items) => Ok(items),
            other => Err(expected("expected an array", other)),
        })?;
        let path = self.key_path(key);
        let parsed = items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| match parse(item) {
                Ok(parsed) => Some((i, parsed)),
                Err(message) => {
                    errors.push(format!("{path}[{i}]"), message);
                    None
                }
            })
            .collect();
        Some(parsed)
    }

    /// The sub-table `key` as a section of its own; `None` when absent or not a table (recorded).
    pub(crate) fn table(&mut self, key: &str, errors: &mut Errors) -> Option<Section<'a>> {
        let table = self.get(key, errors, |value| match value {
            Value::Table(table) => Ok(table),
            other => Err(expected("expected a table", other)),
        })?;
        Some(Section::new(self.key_path(key), table))
    }

    /// The array of tables `key` (`[[key]]`), each as a section at `key[i]`; elements that are not tables
    /// are recorded as errors and skipped.
    pub(crate) fn tables(&mut self, key: &str, errors: &mut Errors) -> Vec<Section<'a>> {
        let path = self.key_path(key);
        let items = self.get(key, errors, |value| match value {
            Value::Array(items) => Ok(items),
            other => Err(expected(
                &format!("expected an array of tables ([[{key}]])"),
                other,
            )),
        });
        let Some(items) = items else {
            return Vec::new();
        };
        items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| match item {
                Value::Table(table) => Some(Section::new(format!("{path}[{i}]"), table)),
                other => {
                    errors.push(format!("{path}[{i}]"), expected("expected a table", other));
                    None
                }
            })
            .collect()
    }

    /// Every key of the table, for tables whose keys are data (such as `env`).
    pub(crate) fn keys(&self) -> impl Iterator<Item = &'a str> + use<'a> {
        let table: &'a Table = self.table;
        table.keys().map(String::as_str)
    }

    /// Reports every key that no getter asked for as `unknown key`.
    pub(crate) fn finish(self, errors: &mut Errors) {
        for key in self.table.keys() {
            if !self.consumed.contains(key.as_str()) {
                errors.push(self.key_path(key), "unknown key");
            }
        }
    }
}
