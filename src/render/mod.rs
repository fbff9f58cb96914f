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
        "node/agent.sql",
        include_str!("../../templates/node/agent.sql"),
    ),
    (
        "node/init.sql",
        include_str!("../../templates/node/init.sql"),
    ),
    (
        "node/ddl_guard.sql",
        include_str!("../../templates/node/ddl_guard.sql"),
    ),
    (
        "node/catalog.sql",
        include_str!("../../templates/node/catalog.sql"),
    ),
    (
        "node/migrations.sql",
        include_str!("../../templates/node/migrations.sql"),
    ),
    (
        "node/servers.sql",
        include_str!("../../templates/node/servers.sql"),
    ),
    (
        "node/ownership.sql",
        include_str!("../../templates/node/ownership.sql"),
    ),
    (
        "node/queue_read.sql",
        include_str!("../../templates/node/queue_read.sql"),
    ),
    (
        "node/conflict_error.sql",
        include_str!("../../templates/node/conflict_error.sql"),
    ),
    (
        "node/reachability.sql",
        include_str!("../../templates/node/reachability.sql"),
    ),
    (
        "node/flush.sql",
        include_str!("../../templates/node/flush.sql"),
    ),
    (
        "node/apply.sql",
        include_str!("../../templates/node/apply.sql"),
    ),
    (
        "node/park.sql",
        include_str!("../../templates/node/park.sql"),
    ),
    (
        "node/prune.sql",
        include_str!("../../templates/node/prune.sql"),
    ),
    (
        "node/privileges.sql",
        include_str!("../../templates/node/privileges.sql"),
    ),
    (
        "node/peers.sql",
        include_str!("../../templates/node/peers.sql"),
    ),
    (
        "table/add.sql",
        include_str!("../../templates/table/add.sql"),
    ),
    (
        "version_of.sql",
        include_str!("../../templates/version_of.sql"),
    ),
    (
        "table/read.sql",
        include_str!("../../templates/table/read.sql"),
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
        "plan_settings.sql",
        include_str!("../../templates/plan_settings.sql"),
    ),
    (
        "table/text_settings.sql",
        include_str!("../../templates/table/text_settings.sql"),
    ),
    (
        "ops/checksum.sql",
        include_str!("../../templates/ops/checksum.sql"),
    ),
    (
        "ops/verify.sql",
        include_str!("../../templates/ops/verify.sql"),
    ),
    ("ops/diff.sql", include_str!("../../templates/ops/diff.sql")),
    (
        "ops/repair.sql",
        include_str!("../../templates/ops/repair.sql"),
    ),
    ("ops/copy.sql", include_str!("../../templates/ops/copy.sql")),
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

/// The dollar-quote tag the templates put around function bodies.
const BODY_TAG: &str = "$fn$";

fn environment() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let sources: Vec<(&'static str, &'static str)> = TEMPLATES.to_vec();
        build_environment(&sources)
    })
}

fn build_environment<'a>(sources: &[(&'a str, &'a str)]) -> Environment<'a> {
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
    env.add_global("lock_key", crate::locks::LOCK_KEY);
    env.add_global("notify_channel", names::NOTIFY_CHANNEL);
    env.add_global("applying_setting", names::APPLYING_SETTING);
    env.add_global("flushing_setting", names::FLUSHING_SETTING);
    env.add_global(
        "capture_triggers",
        Value::from_pairs(names::CAPTURE_TRIGGERS),
    );
    // A dispatch template's `else`: a query name no branch knows is an error, not an empty statement.
    env.add_function("raise", |message: String| -> Result<Value, Error> {
        Err(Error::new(ErrorKind::InvalidOperation, message))
    });
    env.set_formatter(|out, _state, value| {
        if value.is_safe() || value.as_i64().is_some() {
            write!(out, "{value}").map_err(|e| Error::new(ErrorKind::WriteFailure, e.to_string()))
        } else {
            Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("unquoted value {value:?} in SQL template: pass it through qi or ql"),
            ))
        }
    });
    for (name, source) in sources {
        env.add_template(name, source).expect("templates parse");
    }
    env
}

/// Renders a template with the given context.
pub fn render(template: &str, ctx: &Value) -> Result<String> {
    render_in(TEMPLATES, environment(), template, ctx)
}

fn render_in(
    sources: &[(&str, &str)],
    env: &Environment<'_>,
    template: &str,
    ctx: &Value,
) -> Result<String> {
    // A name (node, table, column, type) holding the body tag would end a function body early and
    // let the rest run as SQL: such a context renders with a tag that occurs nowhere in it. Quoting
    // only adds quotes and backslashes (and Debug escapes none of `$fn0-9`), so a tag absent from
    // the values' Debug form is absent from their SQL.
    let values = format!("{ctx:?}");
    let owned: Vec<(&str, String)>;
    let borrowed: Vec<(&str, &str)>;
    let retagged: Environment<'_>;
    let env = if values.contains(BODY_TAG) {
        let tag = (0..)
            .map(|i| format!("$fn{i}$"))
            .find(|t| !values.contains(t.as_str()))
            .expect("a free tag");
        owned = sources
            .iter()
            .map(|(name, source)| (*name, source.replace(BODY_TAG, &tag)))
            .collect();
        borrowed = owned.iter().map(|(n, s)| (*n, s.as_str())).collect();
        retagged = build_environment(&borrowed);
        &retagged
    } else {
        env
    };
    let mut sql = env
        .get_template(template)?
        .render(ctx)
        .with_context(|| format!("rendering {template}"))?;
    if !sql.ends_with('\n') {
        sql.push('\n');
    }
    Ok(sql)
}

#[cfg(test)]
mod tests {
    use super::*;
    use minijinja::context;

    #[test]
    fn plain_strings_are_refused() {
        let sources = [("t", "{{ x }}"), ("q", "{{ x | qi }} {{ x | ql }} {{ n }}")];
        let env = build_environment(&sources);
        let plain = context! { x => "users; drop table t", n => 7 };
        let err = render_in(&sources, &env, "t", &plain).unwrap_err();
        assert!(
            format!("{err:#}").contains("unquoted value 'users; drop table t' in SQL template"),
            "{err:#}"
        );
        assert_eq!(
            render_in(&sources, &env, "q", &plain).unwrap(),
            "\"users; drop table t\" 'users; drop table t' 7\n"
        );
        // The `safe` filter, which would let a template mark any string as SQL, is gone.
        let sources = [("s", "{{ x | safe }}")];
        let err = render_in(&sources, &build_environment(&sources), "s", &plain).unwrap_err();
        assert!(format!("{err:#}").contains("unknown filter"), "{err:#}");
        // Strict: an undefined variable is an error too.
        let err = render("node/init.sql", &context! {}).unwrap_err();
        assert!(format!("{err:#}").contains("undefined"), "{err:#}");
    }

    #[test]
    fn dispatch_templates_refuse_an_unknown_query() {
        for template in ["ops/copy.sql", "ops/diff.sql", "ops/repair.sql"] {
            let err = render(template, &context! { query => "no_such_query" }).unwrap_err();
            assert!(
                format!("{err:#}").contains(&format!("{template} has no query no_such_query")),
                "{template}: {err:#}"
            );
        }
    }

    #[test]
    fn names_holding_the_body_tag_get_another_tag() {
        let columns = vec![context! { name => "$fn$", type => safe("\"$fn0$\".t") }];
        let ctx = context! { name => "x", columns, table => safe("\"$fn1$\".\"$fn$\"") };
        let values = format!("{ctx:?}");
        assert!(values.contains("$fn$") && values.contains("$fn0$") && values.contains("$fn1$"));
        let tmpl = "create function f() returns void language sql as $fn$ select {{ columns[0].name | ql }}, {{ table }} $fn$;";
        let sources = [("t", tmpl)];
        // As the templates were rendered before: the name ends the body.
        let plain = build_environment(&sources)
            .get_template("t")
            .unwrap()
            .render(&ctx)
            .unwrap();
        assert_eq!(plain.matches("$fn$").count(), 4, "{plain}");
        let sql = render_in(&sources, &build_environment(&sources), "t", &ctx).unwrap();
        assert!(
            sql.starts_with("create function f() returns void language sql as $fn2$ select '$fn$'"),
            "{sql}"
        );
        assert_eq!(sql.matches("$fn2$").count(), 2, "{sql}");
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
