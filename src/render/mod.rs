//! Rendering generated SQL from `templates/`. The templates are compiled in, undefined variables are
//! errors, and the formatter prints only values marked safe: identifiers through `qi`, literals
//! through `ql`, or fragments Rust built the same way. A plain string in a template is refused.

pub mod names;

use std::sync::OnceLock;

use anyhow::{Context, Result};
use minijinja::value::Value;
use minijinja::{AutoEscape, Environment, Error, ErrorKind, UndefinedBehavior};

/// Every template, by name; `include_str!` keeps the binary self-contained.
const TEMPLATES: &[(&str, &str)] = &[
    (
        "node/init.sql",
        include_str!("../../templates/node/init.sql"),
    ),
    (
        "table/add.sql",
        include_str!("../../templates/table/add.sql"),
    ),
    (
        "table/apply.sql",
        include_str!("../../templates/table/apply.sql"),
    ),
    (
        "table/capture.sql",
        include_str!("../../templates/table/capture.sql"),
    ),
    (
        "table/remove.sql",
        include_str!("../../templates/table/remove.sql"),
    ),
    (
        "table/text_settings.sql",
        include_str!("../../templates/table/text_settings.sql"),
    ),
    (
        "ops/verify.sql",
        include_str!("../../templates/ops/verify.sql"),
    ),
];

/// Quotes an identifier (libpq's rules): the one place identifiers are quoted on the Rust side.
pub fn quote_ident(name: &str) -> String {
    postgres_protocol::escape::escape_identifier(name)
}

/// Quotes a literal (libpq's rules, `E''` when it holds backslashes).
pub fn quote_literal(value: &str) -> String {
    postgres_protocol::escape::escape_literal(value)
}

/// `schema.table`, each part quoted.
pub fn qualified(schema: &str, table: &str) -> String {
    format!("{}.{}", quote_ident(schema), quote_ident(table))
}

/// A text array literal, e.g. for `columns text[]`.
fn array_literal(items: &[String]) -> String {
    let inner: Vec<String> = items
        .iter()
        .map(|i| format!("\"{}\"", i.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect();
    format!("{{{}}}", inner.join(","))
}

/// A fragment of SQL that is already safe to print (quoted, or taken from the catalog).
pub fn safe(sql: impl Into<String>) -> Value {
    Value::from_safe_string(sql.into())
}

fn qi(value: Value) -> Result<Value, Error> {
    let s = value
        .as_str()
        .ok_or_else(|| Error::new(ErrorKind::InvalidOperation, "qi takes a string"))?;
    Ok(safe(quote_ident(s)))
}

fn ql(value: Value) -> Result<Value, Error> {
    if let Some(s) = value.as_str() {
        return Ok(safe(quote_literal(s)));
    }
    // A list renders as a text[] literal.
    let items: Vec<String> = value
        .try_iter()
        .map_err(|_| {
            Error::new(
                ErrorKind::InvalidOperation,
                "ql takes a string or a list of strings",
            )
        })?
        .map(|v| v.as_str().map(str::to_string))
        .collect::<Option<_>>()
        .ok_or_else(|| Error::new(ErrorKind::InvalidOperation, "ql takes a list of strings"))?;
    Ok(safe(quote_literal(&array_literal(&items))))
}

fn ql_or_null(value: Value) -> Result<Value, Error> {
    if value.is_none() || value.is_undefined() {
        Ok(safe("null"))
    } else {
        ql(value)
    }
}

fn environment() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_syntax(
            minijinja::syntax::SyntaxConfig::builder()
                .trim_blocks(true)
                .lstrip_blocks(true)
                .keep_trailing_newline(true)
                .build()
                .expect("valid syntax config"),
        );
        env.set_auto_escape_callback(|_| AutoEscape::Custom("sql".into()));
        env.remove_filter("safe");
        env.add_filter("qi", qi);
        env.add_filter("ql", ql);
        env.add_filter("ql_or_null", ql_or_null);
        env.set_formatter(|out, _state, value| {
            if value.is_safe() || value.as_i64().is_some() {
                write!(out, "{value}")
                    .map_err(|e| Error::new(ErrorKind::WriteFailure, e.to_string()))
            } else {
                Err(Error::new(
                    ErrorKind::InvalidOperation,
                    format!("unquoted value {value:?} in SQL template: pass it through qi or ql"),
                ))
            }
        });
        for (name, source) in TEMPLATES {
            env.add_template(name, source).expect("templates parse");
        }
        env
    })
}

/// Renders a template with the given context.
pub fn render(template: &str, ctx: &Value) -> Result<String> {
    let tmpl = environment().get_template(template)?;
    let mut sql = tmpl
        .render(ctx)
        .with_context(|| format!("rendering {template}"))?;
    if !sql.ends_with('\n') {
        sql.push('\n');
    }
    Ok(sql)
}

/// Advisory lock taken by every changing command, so two repctl runs never interleave on a node.
pub const LOCK_KEY: i64 = 0x7265_7063_746c;

#[cfg(test)]
mod tests {
    use super::*;
    use minijinja::context;

    #[test]
    fn plain_strings_are_refused() {
        let mut env = Environment::new();
        env.add_template("t", "{{ x }}").unwrap();
        let err = render("node/init.sql", &context! {}).unwrap_err();
        assert!(format!("{err:#}").contains("undefined"), "{err:#}");
    }

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_literal("a\\b"), " E'a\\\\b'");
        assert_eq!(
            array_literal(&["a,b".into(), "c\"d".into()]),
            r#"{"a,b","c\"d"}"#
        );
    }
}
