//! What a command prints: named fields and a table, for a person, or one JSON object.

use std::time::{Duration, UNIX_EPOCH};

use serde_json::{Map, Value};

/// A command's result: fields, an optional table, and a note on what to do next.
#[derive(Debug, Default)]
pub(crate) struct Report {
    fields: Vec<(&'static str, Value)>,
    table: Option<(Vec<&'static str>, Vec<Vec<Value>>)>,
    note: Option<&'static str>,
}

impl Report {
    /// A report of named values.
    pub(crate) fn fields(fields: &[(&'static str, Value)]) -> Self {
        Self {
            fields: fields.to_vec(),
            ..Self::default()
        }
    }

    /// A table: its columns and its rows (each as many values as columns).
    pub(crate) fn table(columns: &[&'static str], rows: Vec<Vec<Value>>) -> Self {
        Self {
            table: Some((columns.to_vec(), rows)),
            ..Self::default()
        }
    }

    /// Adds what the reader should do next.
    pub(crate) fn with_note(mut self, note: &'static str) -> Self {
        self.note = Some(note);
        self
    }

    /// Prints the report on stdout (the note on stderr when it is a table for a person).
    pub(crate) fn print(&self, json: bool) {
        if json {
            println!("{}", self.to_json());
            return;
        }
        for (name, value) in &self.fields {
            println!("{name}: {}", plain(value));
        }
        if let Some((columns, rows)) = &self.table {
            print_table(columns, rows);
        }
        if let Some(note) = self.note {
            eprintln!("{note}");
        }
    }

    fn to_json(&self) -> Value {
        let mut object: Map<String, Value> = self
            .fields
            .iter()
            .map(|(name, value)| (name.replace(' ', "_"), value.clone()))
            .collect();
        if let Some((columns, rows)) = &self.table {
            let rows = rows
                .iter()
                .map(|row| {
                    let row = columns
                        .iter()
                        .map(|c| c.replace(' ', "_"))
                        .zip(row.iter().cloned());
                    Value::Object(row.collect())
                })
                .collect();
            object.insert("rows".to_owned(), Value::Array(rows));
        }
        if let Some(note) = self.note {
            object.insert("note".to_owned(), note.into());
        }
        Value::Object(object)
    }
}

/// A value as a person reads it: text without quotes, nothing for null, lists by commas.
fn plain(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(text) => text.clone(),
        Value::Array(items) if items.is_empty() => "none".to_owned(),
        Value::Array(items) => items.iter().map(plain).collect::<Vec<_>>().join(", "),
        other => other.to_string(),
    }
}

fn print_table(columns: &[&str], rows: &[Vec<Value>]) {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| row.iter().map(plain).collect())
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, column)| {
            cells
                .iter()
                .map(|row| row[i].chars().count())
                .chain([column.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |row: Vec<&str>| {
        let padded: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(columns.to_vec());
    for row in &cells {
        line(row.iter().map(String::as_str).collect());
    }
    if rows.is_empty() {
        println!("(none)");
    }
}

/// Unix milliseconds as an RFC 3339 instant, in UTC.
pub(crate) fn instant(ms: i64) -> String {
    let since_epoch = Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_millis(UNIX_EPOCH + since_epoch).to_string()
}
