//! Config errors that point at the problem: file, line, column, field, what is allowed.
//!
//! Two kinds of errors reach the user. Errors found by the TOML parser (syntax, an
//! unknown field, a wrong type) come with a byte span but no field path, so the path
//! is re-located by scanning the table headers above the span. Errors found by
//! validation carry the span of the offending value (kept with `toml::Spanned`) and a
//! path built while walking the config. Both end up as one [`Invalid`] line:
//! `/etc/bedrock-keyd/config.toml:12:9: key "default": sink[1].mode: …`.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// Why a config could not be found, read or accepted.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read the config file: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "no config file found (looked for {}); pass --config PATH or set BEDROCK_KEYD_CONFIG",
        list(tried)
    )]
    NotFound { tried: Vec<PathBuf> },
    #[error(transparent)]
    Invalid(Box<Invalid>),
}

fn list(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A precise complaint about one place in the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Invalid {
    pub path: PathBuf,
    /// 1-based.
    pub line: usize,
    /// 1-based, in characters.
    pub column: usize,
    /// Where in the schema: `key "default": sink[1].mode`, `defaults.lifetime`, `listen`
    /// (empty for errors about the file as a whole, such as a syntax error).
    pub field: String,
    /// What is wrong and what is allowed.
    pub message: String,
}

impl Invalid {
    /// The one constructor: the field path and the message pass through
    /// [`crate::redact`], since both may echo what the user wrote (a key name, a
    /// region, a value the parser quotes), and a pasted secret must not be printed
    /// back into a terminal, a CI log or the journal.
    pub fn new(path: &Path, line: usize, column: usize, field: &str, message: &str) -> Self {
        Self {
            path: path.to_owned(),
            line,
            column,
            field: crate::redact::redact(field).into_owned(),
            message: crate::redact::redact(message).into_owned(),
        }
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.path.display(), self.line, self.column)?;
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

/// A validation error before it is tied to a file: the span of the offending value
/// (or table), the field path, and the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SpannedError {
    pub span: Range<usize>,
    pub field: String,
    pub message: String,
    /// Another place the message refers to (the first of two duplicates): its line
    /// is appended when the error is located.
    pub related: Option<Range<usize>>,
}

impl SpannedError {
    pub fn new(span: Range<usize>, field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            span,
            field: field.into(),
            message: message.into(),
            related: None,
        }
    }

    /// Points also at `span`, e.g. the first definition of a duplicate.
    pub fn with_related(mut self, span: Range<usize>) -> Self {
        self.related = Some(span);
        self
    }

    /// Ties the error to `path`, whose text is `source`.
    pub fn locate(self, path: &Path, source: &str) -> ConfigError {
        let (line, column) = line_column(source, self.span.start);
        let mut message = self.message;
        if let Some(related) = self.related {
            let (line, _) = line_column(source, related.start);
            message.push_str(&format!(" (see line {line})"));
        }
        ConfigError::Invalid(Box::new(Invalid::new(
            path,
            line,
            column,
            &self.field,
            &message,
        )))
    }
}

/// Turns a TOML parser error into a located one, re-locating the field path.
pub fn from_toml(err: &toml::de::Error, path: &Path, source: &str) -> ConfigError {
    let offset = err.span().map_or(0, |s| s.start).min(source.len());
    let (line, column) = line_column(source, offset);
    let located = locate_field(source, offset);
    let mut message = err.message().trim().to_owned();
    if message.starts_with("invalid type")
        && let Some(hint) = located
            .structure_hint()
            .or_else(|| located.leaf.as_deref().and_then(type_hint))
    {
        message.push_str("; ");
        message.push_str(hint);
    }
    ConfigError::Invalid(Box::new(Invalid::new(
        path,
        line,
        column,
        &located.render(),
        &message,
    )))
}

/// What to write instead, for fields whose TOML type is easy to get wrong.
fn type_hint(field: &str) -> Option<&'static str> {
    match field {
        "lifetime" | "min_remaining" | "timeout" => {
            Some("write a quoted duration such as \"90s\", \"30m\" or \"12h\"")
        }
        "mode" => Some("write a quoted octal string such as \"0600\" or \"0640\""),
        "refresh_at" | "jitter" => Some("write a fraction such as 0.5"),
        "command" => Some("write a list of strings such as [\"/usr/bin/app\", \"--reload\"]"),
        "owner" | "group" => Some("write a quoted user name or id such as \"app\" or \"1000\""),
        _ => None,
    }
}

/// 1-based line and character column of byte `offset` in `source`.
pub fn line_column(source: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(source.len());
    while !source.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &source[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = source[line_start..offset].chars().count() + 1;
    (line, column)
}

/// Which table an offset is in, as far as the headers above it tell.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Table {
    Root,
    Defaults,
    Key(usize),
    Sink(usize, usize),
    Notify(usize, usize),
    /// A header the schema does not know (`[[keys]]`), kept verbatim, or without its
    /// `key.` prefix (`[[key.snk]]`) inside the key it belongs to.
    Other(Option<usize>, String),
}

/// The field path of an offset, reconstructed from the text.
#[derive(Debug)]
struct Located {
    table: Table,
    /// Key names by index, where a `name = "…"` line gives one.
    names: Vec<Option<String>>,
    /// The field assigned on the offset's line, if any.
    leaf: Option<String>,
}

impl Located {
    /// For a table written with the wrong brackets or in the wrong place.
    fn structure_hint(&self) -> Option<&'static str> {
        let Table::Other(key, name) = &self.table else {
            return None;
        };
        match (key, name.as_str(), &self.leaf) {
            (_, "key", None) => Some("write [[key]] (double brackets: there may be many keys)"),
            (None, "key.sink" | "key.notify", None) => Some(
                "a [[key.sink]] or [[key.notify]] belongs under the [[key]] it is for; add that [[key]] above it",
            ),
            (Some(_), "sink", None) => {
                Some("write [[key.sink]] (double brackets: a key may have many sinks)")
            }
            (Some(_), "notify", None) => {
                Some("write [[key.notify]] (double brackets: a key may have many notifications)")
            }
            (_, "defaults", None) => Some("write [defaults] (single brackets: there is one)"),
            _ => None,
        }
    }

    fn render(&self) -> String {
        let key = |i: usize| match self.names.get(i).and_then(|n| n.as_deref()) {
            Some(name) => format!("key {name:?}"),
            None => format!("key[{i}]"),
        };
        let (context, table) = match &self.table {
            Table::Root => (None, None),
            Table::Defaults => (None, Some("defaults".to_owned())),
            Table::Key(i) => (Some(key(*i)), None),
            Table::Sink(i, j) => (Some(key(*i)), Some(format!("sink[{j}]"))),
            Table::Notify(i, j) => (Some(key(*i)), Some(format!("notify[{j}]"))),
            // `[[key.snk]]`: an unknown table inside the current key.
            Table::Other(Some(i), name) => (Some(key(*i)), Some(name.clone())),
            Table::Other(None, name) => (None, Some(name.clone())),
        };
        let tail = match (table, &self.leaf) {
            (Some(t), Some(leaf)) => Some(format!("{t}.{leaf}")),
            (Some(t), None) => Some(t),
            (None, Some(leaf)) => Some(leaf.clone()),
            (None, None) => None,
        };
        match (context, tail) {
            (Some(c), Some(t)) => format!("{c}: {t}"),
            (Some(c), None) => c,
            (None, Some(t)) => t,
            (None, None) => String::new(),
        }
    }
}

/// Scans table headers and `name = "…"` lines to say where `offset` is. Best effort:
/// inline tables and dotted keys are not followed, which only makes the path shorter.
fn locate_field(source: &str, offset: usize) -> Located {
    let mut table = Table::Root;
    let mut names: Vec<Option<String>> = Vec::new();
    let mut sinks = 0usize;
    let mut notifies = 0usize;
    let mut at_offset: Option<(Table, Option<String>)> = None;
    let mut start = 0usize;
    for line in source.split_inclusive('\n') {
        let end = start + line.len();
        let text = strip_comment(line).trim();
        let mut leaf = None;
        if let Some(header) = header(text) {
            let key = names.len().checked_sub(1);
            table = match (header.as_str(), key) {
                ("[defaults]", _) => Table::Defaults,
                ("[[key]]", _) => {
                    names.push(None);
                    sinks = 0;
                    notifies = 0;
                    Table::Key(names.len() - 1)
                }
                ("[[key.sink]]", Some(i)) => {
                    sinks += 1;
                    Table::Sink(i, sinks - 1)
                }
                ("[[key.notify]]", Some(i)) => {
                    notifies += 1;
                    Table::Notify(i, notifies - 1)
                }
                (other, key) => {
                    let name = other.trim_matches(|c| c == '[' || c == ']').trim();
                    match (name.strip_prefix("key."), key) {
                        (Some(rest), Some(i)) => Table::Other(Some(i), rest.to_owned()),
                        _ => Table::Other(None, name.to_owned()),
                    }
                }
            };
        } else if let Some((field, value)) = text.split_once('=') {
            let field = field.trim().trim_matches(|c| c == '"' || c == '\'');
            if let (Table::Key(i), "name") = (&table, field)
                && let Some(name) = quoted(value.trim())
                && let Some(slot) = names.get_mut(*i)
            {
                *slot = Some(name.to_owned());
            }
            leaf = Some(field.to_owned());
        }
        if at_offset.is_none() && (offset < end || end == source.len()) {
            at_offset = Some((table.clone(), leaf));
        }
        start = end;
    }
    let (table, leaf) = at_offset.unwrap_or((Table::Root, None));
    Located { table, names, leaf }
}

/// `[x]` or `[[x]]` with inner whitespace normalised, or `None` for other lines.
fn header(text: &str) -> Option<String> {
    if !text.starts_with('[') || !text.ends_with(']') {
        return None;
    }
    let double = text.starts_with("[[") && text.ends_with("]]");
    let inner = if double {
        &text[2..text.len() - 2]
    } else {
        &text[1..text.len() - 1]
    };
    let inner: String = inner
        .split('.')
        .map(|part| part.trim().trim_matches('"'))
        .collect::<Vec<_>>()
        .join(".");
    Some(if double {
        format!("[[{inner}]]")
    } else {
        format!("[{inner}]")
    })
}

/// The line without a trailing `# comment` (a `#` inside quotes is kept).
fn strip_comment(line: &str) -> &str {
    let mut quote: Option<char> = None;
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (None, '#') => return &line[..i],
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            _ => {}
        }
    }
    line
}

/// The contents of a simple `"…"` or `'…'` string.
fn quoted(value: &str) -> Option<&str> {
    let q = value.chars().next().filter(|c| *c == '"' || *c == '\'')?;
    let rest = &value[1..];
    rest.find(q).map(|end| &rest[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_columns() {
        let text = "a = 1\nbé = 2\n";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 6), (2, 1));
        // Columns count characters, not bytes.
        assert_eq!(line_column(text, text.find('=').unwrap()), (1, 3));
        assert_eq!(line_column(text, text.rfind('=').unwrap()), (2, 4));
        assert_eq!(line_column(text, 999), (3, 1));
    }

    #[test]
    fn re_locates_fields_from_headers() {
        let text = "\
log_format = \"text\"
[defaults]
lifetime = \"1h\"
[[key]]
name = \"one\"
[[key]]
profile = \"p\" # name comes later
name = 'two'
  [[key.sink]]
  type = \"file\"
  [[ key.sink ]]
  pathh = \"/x\"
  [[key.notify]]
  signal = \"HUP\"
[[key.snk]]
y = 2
[[keys]]
x = 1
";
        let at = |needle: &str| locate_field(text, text.find(needle).unwrap()).render();
        assert_eq!(at("log_format"), "log_format");
        assert_eq!(at("lifetime"), "defaults.lifetime");
        assert_eq!(at("profile"), "key \"two\": profile");
        assert_eq!(at("type"), "key \"two\": sink[0].type");
        assert_eq!(at("pathh"), "key \"two\": sink[1].pathh");
        assert_eq!(at("signal"), "key \"two\": notify[0].signal");
        assert_eq!(at("[[key.snk]]"), "key \"two\": snk");
        assert_eq!(at("x = 1"), "keys.x");
    }
}
