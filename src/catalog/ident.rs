//! `SCHEMA.TABLE` as a DBA types it: unquoted parts fold ASCII letters to lower case, quoted parts
//! keep their case and may hold dots, quotes (doubled) and anything else.

use std::fmt;

use anyhow::{Result, bail};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableName {
    pub schema: String,
    pub table: String,
}

impl TableName {
    pub fn parse(text: &str) -> Result<TableName> {
        let parts = split(text, '.', true)?;
        match parts.as_slice() {
            [table] => Ok(TableName {
                schema: "public".into(),
                table: table.clone(),
            }),
            [schema, table] => Ok(TableName {
                schema: schema.clone(),
                table: table.clone(),
            }),
            _ => bail!(
                "{text:?} is not a table name: write SCHEMA.TABLE (quote parts with dots, e.g. \"my.schema\".t)"
            ),
        }
    }

    /// An optional SCHEMA.TABLE argument as the logical name repctl stores it under.
    pub fn logical_arg(text: Option<&str>) -> Result<Option<String>> {
        text.map(|t| TableName::parse(t).map(|n| n.to_string()))
            .transpose()
    }

    /// The SQL form, quoted.
    pub fn sql(&self) -> String {
        crate::render::qualified(&self.schema, &self.table)
    }
}

/// Displays in the form `parse` reads back, quoting only where needed.
impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{}",
            display_part(&self.schema),
            display_part(&self.table)
        )
    }
}

fn display_part(part: &str) -> String {
    let plain = part
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && part
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain {
        part.to_string()
    } else {
        crate::render::quote_ident(part)
    }
}

/// `--columns` as a DBA types it: names exactly as they are, separated by commas; a name in double
/// quotes (quotes doubled inside) may hold commas.
pub fn parse_column_list(text: &str) -> Result<Vec<String>> {
    split(text, ',', false)
}

/// Splits at `sep` outside double quotes. Unquoted parts fold ASCII to lower case and lose surrounding
/// blanks as SQL identifiers do when `fold`, and are kept exactly otherwise.
fn split(text: &str, sep: char, fold: bool) -> Result<Vec<String>> {
    let mut parts = Vec::new();
    let text = if fold { text.trim() } else { text };
    let mut chars = text.chars().peekable();
    loop {
        let mut part = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        part.push('"');
                    }
                    Some('"') => break,
                    Some(c) => part.push(c),
                    None => bail!("unterminated quoted identifier in {text:?}"),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == sep {
                    break;
                }
                // PostgreSQL folds only ASCII letters (in a UTF-8 database): `Ä` stays `Ä`.
                if fold {
                    part.push(c.to_ascii_lowercase());
                } else {
                    part.push(c);
                }
                chars.next();
            }
            if fold {
                part = part.trim().to_string();
            }
        }
        if part.is_empty() {
            bail!("empty name part in {text:?}");
        }
        parts.push(part);
        match chars.next() {
            None => return Ok(parts),
            Some(c) if c == sep => {}
            Some(c) => bail!("unexpected {c:?} after a quoted identifier in {text:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_displays() {
        let t = TableName::parse(r#""My.Schema"."Ta""ble""#).unwrap();
        assert_eq!(
            (t.schema.as_str(), t.table.as_str()),
            ("My.Schema", "Ta\"ble")
        );
        assert_eq!(TableName::parse(&t.to_string()).unwrap(), t);
        let t = TableName::parse("Local.LOC_test").unwrap();
        assert_eq!(t.to_string(), "local.loc_test");
        assert_eq!(TableName::parse("t").unwrap().schema, "public");
        let t = TableName::parse("Äpfel.ÖL_T").unwrap();
        assert_eq!((t.schema.as_str(), t.table.as_str()), ("Äpfel", "Öl_t"));
        assert!(TableName::parse("a.b.c").is_err());
        assert!(TableName::parse("a.").is_err());
    }

    #[test]
    fn column_lists_keep_names_and_quote_commas() {
        assert_eq!(
            parse_column_list(r#"id,Mixed Case,"a,b","q""x""#).unwrap(),
            ["id", "Mixed Case", "a,b", "q\"x"]
        );
        assert_eq!(parse_column_list(r#"Key "1""#).unwrap(), [r#"Key "1""#]);
        assert!(parse_column_list("a,,b").is_err());
        assert!(parse_column_list(r#""a"b"#).is_err());
    }
}
