//! Result sets and how they are printed: a table on a terminal, JSON, JSON lines or CSV.

use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use comfy_table::{CellAlignment, ContentArrangement, Table, presets::UTF8_FULL_CONDENSED};
use serde_json::Value;

/// How result sets are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// A boxed table (the default on a terminal).
    Table,
    /// One JSON array per result set.
    Json,
    /// One JSON object per row (the default when output is not a terminal).
    Jsonl,
    /// Comma-separated values with a header line.
    Csv,
}

impl Mode {
    /// Table on a terminal, JSON lines otherwise.
    pub fn auto() -> Self {
        if std::io::stdout().is_terminal() {
            Mode::Table
        } else {
            Mode::Jsonl
        }
    }

    /// The name used by `.mode`.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Table => "table",
            Mode::Json => "json",
            Mode::Jsonl => "jsonl",
            Mode::Csv => "csv",
        }
    }
}

/// A column of a result set.
#[derive(Clone, Debug)]
pub struct Column {
    /// Key in JSON output and CSV header.
    pub key: &'static str,
    /// Header in table output.
    pub title: &'static str,
    /// Whether table output shows it (JSON and CSV always do).
    pub in_table: bool,
}

/// Rows of JSON values under named columns.
#[derive(Clone, Debug, Default)]
pub struct ResultSet {
    /// Columns, in output order.
    pub columns: Vec<Column>,
    /// Rows, one value per column.
    pub rows: Vec<Vec<Value>>,
}

impl ResultSet {
    /// An empty result set with these `(key, title)` columns, all shown in tables.
    pub fn new(columns: &[(&'static str, &'static str)]) -> Self {
        ResultSet {
            columns: columns
                .iter()
                .map(|&(key, title)| Column {
                    key,
                    title,
                    in_table: true,
                })
                .collect(),
            rows: Vec::new(),
        }
    }

    /// Hides a column from table output (it stays in JSON and CSV).
    pub fn hide_in_table(mut self, key: &str) -> Self {
        for c in &mut self.columns {
            if c.key == key {
                c.in_table = false;
            }
        }
        self
    }

    /// Appends a row.
    pub fn push(&mut self, row: Vec<Value>) {
        debug_assert_eq!(row.len(), self.columns.len());
        self.rows.push(row);
    }
}

/// Where results go: standard output or a file chosen with `.output`.
pub enum Sink {
    /// Standard output.
    Stdout,
    /// A file.
    File(PathBuf, BufWriter<File>),
}

/// Prints result sets in a mode to a sink.
pub struct Printer {
    /// Current mode.
    pub mode: Mode,
    sink: Sink,
}

impl Printer {
    /// A printer to standard output.
    pub fn stdout(mode: Mode) -> Self {
        Printer {
            mode,
            sink: Sink::Stdout,
        }
    }

    /// Redirects output to `path` (truncating it), or back to standard output for `None`.
    pub fn redirect(&mut self, path: Option<&Path>) -> Result<()> {
        self.flush()?;
        self.sink = match path {
            None => Sink::Stdout,
            Some(p) => {
                let f = File::create(p)
                    .with_context(|| format!("{}: cannot create output file", p.display()))?;
                Sink::File(p.to_path_buf(), BufWriter::new(f))
            }
        };
        Ok(())
    }

    /// Where output goes now, for `.show`.
    pub fn target(&self) -> String {
        match &self.sink {
            Sink::Stdout => "stdout".into(),
            Sink::File(p, _) => p.display().to_string(),
        }
    }

    /// Flushes buffered output.
    pub fn flush(&mut self) -> Result<()> {
        match &mut self.sink {
            Sink::Stdout => std::io::stdout()
                .flush()
                .context("cannot write to standard output"),
            Sink::File(p, w) => w
                .flush()
                .with_context(|| format!("{}: cannot write", p.display())),
        }
    }

    /// Prints one result set.
    pub fn print(&mut self, rs: &ResultSet) -> Result<()> {
        let text = format_result_set(rs, self.mode);
        match &mut self.sink {
            Sink::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(text.as_bytes())
                    .context("cannot write to standard output")?;
                out.flush().context("cannot write to standard output")
            }
            Sink::File(p, w) => w
                .write_all(text.as_bytes())
                .with_context(|| format!("{}: cannot write", p.display())),
        }
    }
}

/// Renders a result set as text in `mode` (ends with a newline unless empty).
pub fn format_result_set(rs: &ResultSet, mode: Mode) -> String {
    match mode {
        Mode::Table => format_table(rs),
        Mode::Jsonl => rs
            .rows
            .iter()
            .map(|r| format!("{}\n", json_object(rs, r)))
            .collect(),
        Mode::Json => {
            let objects: Vec<String> = rs.rows.iter().map(|r| json_object(rs, r)).collect();
            if objects.is_empty() {
                "[]\n".into()
            } else {
                format!("[{}]\n", objects.join(",\n "))
            }
        }
        Mode::Csv => {
            let mut s = rs
                .columns
                .iter()
                .map(|c| csv_field(c.key))
                .collect::<Vec<_>>()
                .join(",");
            s.push('\n');
            for r in &rs.rows {
                s.push_str(
                    &r.iter()
                        .map(|v| csv_field(&plain(v)))
                        .collect::<Vec<_>>()
                        .join(","),
                );
                s.push('\n');
            }
            s
        }
    }
}

fn format_table(rs: &ResultSet) -> String {
    let shown: Vec<usize> = (0..rs.columns.len())
        .filter(|&i| rs.columns[i].in_table)
        .collect();
    if rs.rows.is_empty() {
        return "(no rows)\n".into();
    }
    let mut t = Table::new();
    t.load_style(UTF8_FULL_CONDENSED);
    // Fit the terminal when there is one: long cells wrap inside their column.
    if let Some((_, cols)) = console::Term::stdout().size_checked() {
        t.set_content_arrangement(ContentArrangement::Dynamic);
        t.set_width(cols);
    }
    t.set_header(
        shown
            .iter()
            .map(|&i| rs.columns[i].title)
            .collect::<Vec<_>>(),
    );
    let decimals: Vec<usize> = shown
        .iter()
        .map(|&i| float_decimals(rs.rows.iter().map(|r| &r[i])))
        .collect();
    for r in &rs.rows {
        t.add_row(
            shown
                .iter()
                .zip(&decimals)
                .map(|(&i, &d)| table_cell(&r[i], d))
                .collect::<Vec<_>>(),
        );
    }
    for (pos, &i) in shown.iter().enumerate() {
        let numeric = rs.rows.iter().all(|r| r[i].is_number() || r[i].is_null());
        if let (true, Some(col)) = (numeric, t.column_mut(pos)) {
            col.set_cell_alignment(CellAlignment::Right);
        }
    }
    format!("{t}\n")
}

/// Decimals that show every float of a column exactly, at most 4.
fn float_decimals<'a>(values: impl Iterator<Item = &'a Value>) -> usize {
    values
        .filter_map(Value::as_f64)
        .map(|f| {
            (0..4)
                .find(|&d| (f * 10f64.powi(d)).fract() == 0.0)
                .map_or(4, |d| d as usize)
        })
        .max()
        .unwrap_or(0)
}

/// A value as a table cell: strings without quotes, floats with `decimals` decimals.
fn table_cell(v: &Value, decimals: usize) -> String {
    match v {
        Value::Number(n) if n.is_f64() => n
            .as_f64()
            .map_or_else(|| n.to_string(), |f| format!("{f:.decimals$}")),
        _ => plain(v),
    }
}

/// A value as plain text: strings without quotes, null empty, the rest as JSON.
fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// A row as a JSON object with keys in column order.
fn json_object(rs: &ResultSet, row: &[Value]) -> String {
    let fields: Vec<String> = rs
        .columns
        .iter()
        .zip(row)
        .map(|(c, v)| format!("{}:{}", Value::String(c.key.to_owned()), v))
        .collect();
    format!("{{{}}}", fields.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> ResultSet {
        let mut rs = ResultSet::new(&[("id", "id"), ("score", "score")]);
        rs.push(vec![json!("a,b"), json!(1.5)]);
        rs.push(vec![json!(7), json!(0.25)]);
        rs
    }

    #[test]
    fn jsonl_keeps_column_order_and_types() {
        let s = format_result_set(&sample(), Mode::Jsonl);
        assert_eq!(
            s,
            "{\"id\":\"a,b\",\"score\":1.5}\n{\"id\":7,\"score\":0.25}\n"
        );
    }

    #[test]
    fn csv_quotes_fields_with_commas() {
        let s = format_result_set(&sample(), Mode::Csv);
        assert_eq!(s, "id,score\n\"a,b\",1.5\n7,0.25\n");
    }

    #[test]
    fn json_mode_is_one_parseable_array() {
        let s = format_result_set(&sample(), Mode::Json);
        let v: Value = serde_json::from_str(&s).expect("valid JSON");
        assert_eq!(v.as_array().map(Vec::len), Some(2));
    }

    #[test]
    fn table_hides_hidden_columns_and_formats_floats() {
        let s = format_result_set(&sample().hide_in_table("id"), Mode::Table);
        assert!(
            s.contains("1.50 ") && s.contains("0.25 "),
            "two decimals show both: {s}"
        );
        assert!(!s.contains("a,b"), "{s}");
    }
}
