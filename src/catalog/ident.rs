//! `SCHEMA.TABLE` as a DBA types it: unquoted parts fold to lower case, quoted parts keep their case
//! and may hold dots, quotes (doubled) and anything else.

use std::fmt;

use anyhow::{Result, bail};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableName {
    pub schema: String,
    pub table: String,
}

impl TableName {
    pub fn parse(text: &str) -> Result<TableName> {
        let parts = split_identifiers(text)?;
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

fn split_identifiers(text: &str) -> Result<Vec<String>> {
    let mut parts = Vec::new();
    let mut chars = text.trim().chars().peekable();
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
                if c == '.' {
                    break;
                }
                part.extend(c.to_lowercase());
                chars.next();
            }
            part = part.trim().to_string();
        }
        if part.is_empty() {
            bail!("empty name part in {text:?}");
        }
        parts.push(part);
        match chars.next() {
            None => return Ok(parts),
            Some('.') => {}
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
        assert!(TableName::parse("a.b.c").is_err());
        assert!(TableName::parse("a.").is_err());
    }
}
