//! JSON text to the spanned tree the TOML reader produces (`toml::de::DeValue`), so that JSON
//! jobs and ZeroCloud system maps go through the same shape and meaning phases as TOML jobs,
//! and every error can point at a line and column.
//!
//! serde_json checks the syntax first; its message and position are reported as they are.
//! This reader then walks the text, now known to be well formed, a second time to keep the
//! byte span of every key and value, which serde_json does not expose. It also refuses what
//! the tree cannot hold or a reader could misread: `null`, and a key given twice in one object
//! (which serde_json would silently resolve to the last one).

use std::borrow::Cow;

use toml::Spanned;
use toml::de::{DeArray, DeTable, DeValue};

use crate::error::{Error, TomlText};

/// Parses `t` as JSON into a spanned value.
pub(crate) fn parse<'a>(t: TomlText<'a>) -> Result<Spanned<DeValue<'a>>, Error> {
    if let Err(e) = serde_json::from_str::<serde_json::Value>(t.text) {
        return Err(syntax_error(t, &e));
    }
    let mut reader = Reader { t, pos: 0 };
    let value = reader.value()?;
    reader.skip_ws();
    if reader.pos != t.text.len() {
        // serde_json accepted the text, so this cannot happen; say so rather than panic.
        return Err(t.error(reader.pos..reader.pos, "trailing characters"));
    }
    Ok(value)
}

/// serde_json's message without its own ` at line L column C`, placed at its position.
fn syntax_error(t: TomlText<'_>, e: &serde_json::Error) -> Error {
    let text = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    let message = text.strip_suffix(&suffix).unwrap_or(&text).to_string();
    // serde_json counts columns in bytes from 1; the rest of zvm counts characters.
    let line_start = t
        .text
        .split_inclusive('\n')
        .take(e.line().saturating_sub(1))
        .map(str::len)
        .sum::<usize>();
    let at = line_start + e.column().saturating_sub(1);
    t.error(at..at, message)
}

struct Reader<'a> {
    t: TomlText<'a>,
    pos: usize,
}

impl<'a> Reader<'a> {
    fn bytes(&self) -> &'a [u8] {
        self.t.text.as_bytes()
    }

    fn peek(&self) -> Option<u8> {
        self.bytes().get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn err(&self, at: usize, message: impl Into<String>) -> Error {
        self.t.error(at..at, message)
    }

    fn expect(&mut self, byte: u8) -> Result<(), Error> {
        self.skip_ws();
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.err(self.pos, format!("expected `{}`", byte as char)))
        }
    }

    fn value(&mut self) -> Result<Spanned<DeValue<'a>>, Error> {
        self.skip_ws();
        let start = self.pos;
        let value = match self.peek() {
            Some(b'{') => DeValue::Table(self.object()?),
            Some(b'[') => DeValue::Array(self.array()?),
            Some(b'"') => DeValue::String(self.string()?),
            Some(b't') => self.word("true", DeValue::Boolean(true))?,
            Some(b'f') => self.word("false", DeValue::Boolean(false))?,
            Some(b'n') => {
                return Err(self.err(
                    start,
                    "`null` is not a value zvm reads; leave the key out to take its default",
                ));
            }
            Some(b'-' | b'0'..=b'9') => return self.number(),
            _ => return Err(self.err(start, "expected a value")),
        };
        Ok(Spanned::new(start..self.pos, value))
    }

    fn word(&mut self, word: &str, value: DeValue<'a>) -> Result<DeValue<'a>, Error> {
        if self.bytes()[self.pos..].starts_with(word.as_bytes()) {
            self.pos += word.len();
            Ok(value)
        } else {
            Err(self.err(self.pos, "expected a value"))
        }
    }

    /// A JSON number is also a TOML integer or float in the same spelling, so TOML's own
    /// reader turns it into the tree's number types (which have no public constructor).
    fn number(&mut self) -> Result<Spanned<DeValue<'a>>, Error> {
        let start = self.pos;
        while matches!(
            self.peek(),
            Some(b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
        ) {
            self.pos += 1;
        }
        let text = &self.t.text[start..self.pos];
        match DeValue::parse(text) {
            Ok(v) if matches!(v.get_ref(), DeValue::Integer(_) | DeValue::Float(_)) => {
                Ok(Spanned::new(start..self.pos, v.into_inner()))
            }
            _ => Err(self.err(start, format!("number `{text}` is out of range"))),
        }
    }

    fn object(&mut self) -> Result<DeTable<'a>, Error> {
        self.pos += 1; // `{`
        let mut table = DeTable::new();
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(table);
        }
        loop {
            self.skip_ws();
            let key_start = self.pos;
            let key = self.string()?;
            let key_span = key_start..self.pos;
            if table.get(key.as_ref()).is_some() {
                return Err(self.err(key_start, format!("duplicate key `{key}`")));
            }
            self.expect(b':')?;
            let value = self.value()?;
            table.insert(Spanned::new(key_span, key), value);
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(table);
                }
                _ => return Err(self.err(self.pos, "expected `,` or `}`")),
            }
        }
    }

    fn array(&mut self) -> Result<DeArray<'a>, Error> {
        self.pos += 1; // `[`
        let mut array = DeArray::new();
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(array);
        }
        loop {
            array.push(self.value()?);
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(array);
                }
                _ => return Err(self.err(self.pos, "expected `,` or `]`")),
            }
        }
    }

    fn string(&mut self) -> Result<Cow<'a, str>, Error> {
        let start = self.pos;
        if self.peek() != Some(b'"') {
            return Err(self.err(start, "expected a string"));
        }
        self.pos += 1;
        let text = self.t.text;
        let mut out: Option<String> = None;
        let mut run = self.pos;
        loop {
            match self.peek() {
                None => return Err(self.err(start, "unterminated string")),
                Some(b'"') => {
                    let s = match out {
                        None => Cow::Borrowed(&text[run..self.pos]),
                        Some(mut s) => {
                            s.push_str(&text[run..self.pos]);
                            Cow::Owned(s)
                        }
                    };
                    self.pos += 1;
                    return Ok(s);
                }
                Some(b'\\') => {
                    let s = out.get_or_insert_with(String::new);
                    s.push_str(&text[run..self.pos]);
                    let at = self.pos;
                    self.pos += 1;
                    let c = match self.peek() {
                        Some(b'"') => '"',
                        Some(b'\\') => '\\',
                        Some(b'/') => '/',
                        Some(b'b') => '\u{8}',
                        Some(b'f') => '\u{c}',
                        Some(b'n') => '\n',
                        Some(b'r') => '\r',
                        Some(b't') => '\t',
                        Some(b'u') => {
                            self.pos += 1;
                            let c = self.unicode_escape(at)?;
                            s.push(c);
                            run = self.pos;
                            continue;
                        }
                        _ => return Err(self.err(at, "invalid escape")),
                    };
                    s.push(c);
                    self.pos += 1;
                    run = self.pos;
                }
                Some(_) => {
                    // Step over a whole character; `text` is valid UTF-8.
                    let c = text[self.pos..].chars().next().map_or(1, char::len_utf8);
                    self.pos += c;
                }
            }
        }
    }

    /// The four hex digits after `\u` (and a second escape for a surrogate pair).
    fn unicode_escape(&mut self, at: usize) -> Result<char, Error> {
        let high = self.hex4(at)?;
        let code = if (0xD800..0xDC00).contains(&high) {
            if !self.bytes()[self.pos..].starts_with(b"\\u") {
                return Err(self.err(at, "lone surrogate in a `\\u` escape"));
            }
            self.pos += 2;
            let low = self.hex4(at)?;
            if !(0xDC00..0xE000).contains(&low) {
                return Err(self.err(at, "lone surrogate in a `\\u` escape"));
            }
            0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)
        } else {
            high
        };
        char::from_u32(code).ok_or_else(|| self.err(at, "lone surrogate in a `\\u` escape"))
    }

    fn hex4(&mut self, at: usize) -> Result<u32, Error> {
        let digits = self
            .t
            .text
            .get(self.pos..self.pos + 4)
            .filter(|d| d.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| self.err(at, "invalid `\\u` escape"))?;
        self.pos += 4;
        u32::from_str_radix(digits, 16).map_err(|_| self.err(at, "invalid `\\u` escape"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn parse_ok(text: &str) -> Spanned<DeValue<'_>> {
        let t = TomlText {
            file: Path::new("j.json"),
            text,
        };
        parse(t).unwrap_or_else(|e| panic!("{e}"))
    }

    fn parse_err(text: &str) -> String {
        let t = TomlText {
            file: Path::new("j.json"),
            text,
        };
        parse(t).unwrap_err().to_string()
    }

    #[test]
    fn values_and_spans() {
        let text = r#"{"a": [1, -2.5, true, "x\"\u00e9\ud83d\ude00"], "b": {}}"#;
        let v = parse_ok(text);
        let DeValue::Table(t) = v.get_ref() else {
            panic!()
        };
        let (k, a) = t.iter().find(|(k, _)| k.get_ref() == "a").unwrap();
        assert_eq!(&text[k.span()], "\"a\"");
        let DeValue::Array(items) = a.get_ref() else {
            panic!()
        };
        assert_eq!(&text[items[0].span()], "1");
        assert!(matches!(items[0].get_ref(), DeValue::Integer(i) if i.as_str() == "1"));
        assert!(matches!(items[1].get_ref(), DeValue::Float(_)));
        assert!(matches!(items[2].get_ref(), DeValue::Boolean(true)));
        assert!(matches!(items[3].get_ref(), DeValue::String(s) if s == "x\"é😀"));
        assert_eq!(&text[items[3].span()], r#""x\"\u00e9\ud83d\ude00""#);
        assert_eq!(
            &text[a.span()],
            r#"[1, -2.5, true, "x\"\u00e9\ud83d\ude00"]"#
        );
    }

    #[test]
    fn errors_have_positions() {
        assert_eq!(parse_err("{\n  \"a\": 1,\n}"), "j.json:3:1: trailing comma");
        assert_eq!(
            parse_err("{\"a\": 1, \"a\": 2}"),
            "j.json:1:10: duplicate key `a`"
        );
        assert_eq!(
            parse_err("{\"é\": null}"),
            "j.json:1:7: `null` is not a value zvm reads; leave the key out to take its default"
        );
        // serde_json counts the two bytes of `é` as two columns; zvm counts characters.
        assert_eq!(parse_err("{\"é\": x}"), "j.json:1:7: expected value");
        assert!(parse_err("").starts_with("j.json:1:1: EOF while parsing"));
    }
}
