//! A `--where` condition must be one expression: templates put it inside parentheses, and a
//! condition such as `a) or (b` would re-balance them and change what it means where a template
//! writes `x and (W)`. PostgreSQL's parser cannot see that (the wrapped text is valid), so the
//! condition's own parentheses are checked here, outside literals, quoted names and comments.

use anyhow::{Result, bail};

pub fn check(condition: &str) -> Result<()> {
    let chars: Vec<char> = condition.chars().collect();
    let mut depth: i64 = 0;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        match c {
            '\'' => {
                i = skip_quoted(
                    &chars,
                    i,
                    '\'',
                    chars
                        .get(i.wrapping_sub(1))
                        .is_some_and(|p| *p == 'e' || *p == 'E'),
                )
            }
            '"' => i = skip_quoted(&chars, i, '"', false),
            '-' if next == Some('-') => {
                bail!(
                    "--where must not contain a comment (\"--\"): it would hide the rest of the generated SQL"
                )
            }
            '/' if next == Some('*') => bail!("--where must not contain a comment (\"/*\")"),
            '$' if dollar_tag(&chars, i).is_some() => {
                bail!("--where must not contain dollar quoting")
            }
            ';' => bail!("--where must be one condition, not statements (it contains \";\")"),
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth < 0 {
                    bail!(
                        "--where closes a parenthesis it did not open: write one condition, e.g. \"a > 1 or b\""
                    );
                }
            }
            _ => {}
        }
        i += 1;
    }
    if depth != 0 {
        bail!("--where leaves a parenthesis open");
    }
    if i > chars.len() {
        bail!("--where has an unterminated quote");
    }
    Ok(())
}

/// Index of the closing quote (past the end when unterminated). A doubled quote is part of the
/// text; in E'' strings a backslash escapes the next character.
fn skip_quoted(chars: &[char], open: usize, quote: char, backslash: bool) -> usize {
    let mut i = open + 1;
    while i < chars.len() {
        if backslash && chars[i] == '\\' {
            i += 2;
            continue;
        }
        if chars[i] == quote {
            if chars.get(i + 1) == Some(&quote) {
                i += 2;
                continue;
            }
            return i;
        }
        i += 1;
    }
    chars.len() + 1
}

/// `$tag$` starting at `i`, if any (a `$` after an identifier character is part of a name).
fn dollar_tag(chars: &[char], i: usize) -> Option<usize> {
    if i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_') {
        return None;
    }
    let mut j = i + 1;
    while j < chars.len() && (chars[j].is_alphanumeric() || chars[j] == '_') {
        if j == i + 1 && chars[j].is_ascii_digit() {
            return None; // $1 is a parameter, not a quote
        }
        j += 1;
    }
    (j < chars.len() && chars[j] == '$').then_some(j)
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn one_condition_passes() {
        for ok in [
            "region = 'eu'",
            "a > 1 and (b or c)",
            "note = 'x) or (y'",
            "\"odd)name\" is null",
            "v = E'it\\'s ('",
        ] {
            check(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
    }

    #[test]
    fn rebalanced_or_stacked_is_refused() {
        for bad in [
            "a) or (b",
            "true); drop table t; select (1",
            "a -- )",
            "a /* ) */",
            "a = $x$)$x$",
            "(a",
            "a = 'open",
        ] {
            assert!(check(bad).is_err(), "{bad} was accepted");
        }
    }
}
