//! URL query strings (`?a=1&b=x%20y`): case-insensitive keys, percent-decoded values, as
//! ASP.NET Core's query collection reads them (RFC 3986 §3.4, form-style `+` as space).

use std::borrow::Cow;

/// A parsed view of a query string (without the leading `?`).
#[derive(Debug, Clone, Copy)]
pub struct Query<'a> {
    raw: &'a str,
}

impl<'a> Query<'a> {
    /// Wraps a raw query string; `None` means no query.
    pub fn new(raw: Option<&'a str>) -> Self {
        Self {
            raw: raw.unwrap_or(""),
        }
    }

    /// The first value of `name` (compared case-insensitively), percent-decoded. A value that
    /// is not valid UTF-8 after decoding is returned lossily.
    pub fn get(&self, name: &str) -> Option<Cow<'a, str>> {
        self.raw.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            decode(key)
                .eq_ignore_ascii_case(name)
                .then(|| decode(value))
        })
    }
}

/// Percent-decodes `text`, with `+` as a space; invalid escapes are kept as they are.
pub fn decode(text: &str) -> Cow<'_, str> {
    if !text.contains(['%', '+']) {
        return Cow::Borrowed(text);
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).and_then(|h| {
                    std::str::from_utf8(h)
                        .ok()
                        .and_then(|h| u8::from_str_radix(h, 16).ok())
                });
                match hex {
                    Some(byte) => {
                        out.push(byte);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            other => out.push(other),
        }
        i += 1;
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_case_insensitive_and_values_decoded() {
        let q = Query::new(Some(
            "negotiateVersion=1&id=abc_-D&access_token=a%2Bb%20c+d",
        ));
        assert_eq!(q.get("NEGOTIATEVERSION").as_deref(), Some("1"));
        assert_eq!(q.get("id").as_deref(), Some("abc_-D"));
        assert_eq!(q.get("access_token").as_deref(), Some("a+b c d"));
        assert_eq!(q.get("missing"), None);
    }

    #[test]
    fn keys_without_values_and_bad_escapes_are_tolerated() {
        let q = Query::new(Some("flag&x=%zz%4"));
        assert_eq!(q.get("flag").as_deref(), Some(""));
        assert_eq!(q.get("x").as_deref(), Some("%zz%4"));
        assert_eq!(Query::new(None).get("x"), None);
    }
}
