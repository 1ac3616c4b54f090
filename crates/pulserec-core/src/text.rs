//! Text clean-up shared by loaders, prompts and the HR@1 answer matcher.

/// Decodes HTML character references (`&amp;`, `&#39;`, `&#x27;`, ...).
///
/// Named references cover the entities that occur in Amazon and MovieLens titles; an unknown or
/// malformed reference is kept as written rather than guessed at.
pub fn html_unescape(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let tail = &rest[amp..];
        // References are short; look for the `;` within a small window.
        let end = tail
            .char_indices()
            .take(12)
            .find(|&(_, c)| c == ';')
            .map(|(i, _)| i);
        let decoded = end.and_then(|end| decode_reference(&tail[1..end]).map(|c| (c, end)));
        match decoded {
            Some((c, end)) => {
                out.push(c);
                rest = &tail[end + 1..];
            }
            None => {
                out.push('&');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn decode_reference(name: &str) -> Option<char> {
    if let Some(num) = name.strip_prefix('#') {
        let code = match num.strip_prefix(['x', 'X']) {
            Some(hex) => u32::from_str_radix(hex, 16).ok()?,
            None => num.parse::<u32>().ok()?,
        };
        return char::from_u32(code);
    }
    Some(match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        "nbsp" => '\u{a0}',
        "reg" => '®',
        "trade" => '™',
        "copy" => '©',
        "eacute" => 'é',
        "egrave" => 'è',
        "aacute" => 'á',
        "oacute" => 'ó',
        "uacute" => 'ú',
        "iacute" => 'í',
        "ntilde" => 'ñ',
        "uuml" => 'ü',
        "ouml" => 'ö',
        "auml" => 'ä',
        "szlig" => 'ß',
        "ndash" => '–',
        "mdash" => '—',
        "hellip" => '…',
        "lsquo" => '‘',
        "rsquo" => '’',
        "ldquo" => '“',
        "rdquo" => '”',
        "deg" => '°',
        "frac12" => '½',
        "times" => '×',
        _ => return None,
    })
}

/// Collapses every run of whitespace (including non-breaking spaces) to one space and trims.
pub fn normalize_whitespace(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for word in s
        .split(|c: char| c.is_whitespace())
        .filter(|w| !w.is_empty())
    {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

/// Cuts `s` to at most `max_chars` characters, at a word boundary when one is near, adding `…`
/// when something was cut.
pub fn truncate_chars(s: &str, max_chars: usize) -> String {
    if s.chars().count() <= max_chars {
        return s.to_string();
    }
    let cut: String = s.chars().take(max_chars.saturating_sub(1)).collect();
    // Prefer ending on a word boundary if that keeps at least two thirds of the budget.
    let trimmed = match cut.rfind(' ') {
        Some(i) if i * 3 >= cut.len() * 2 => &cut[..i],
        _ => cut.as_str(),
    };
    format!("{}…", trimmed.trim_end())
}

/// The clean-up every item title goes through: HTML-unescape, then whitespace-normalise.
pub fn clean_title(s: &str) -> String {
    normalize_whitespace(&html_unescape(s))
}

/// The paper's answer normalisation for HR@1 matching: HTML-unescape, lower-case, punctuation
/// stripped (replaced by a space), whitespace collapsed.
pub fn normalize_for_match(s: &str) -> String {
    let unescaped = html_unescape(s).to_lowercase();
    let spaced: String = unescaped
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c.is_whitespace() {
                c
            } else {
                ' '
            }
        })
        .collect();
    normalize_whitespace(&spaced)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescapes_named_and_numeric_references() {
        assert_eq!(
            html_unescape("Tom &amp; Jerry&#39;s &#x26; &quot;x&quot;"),
            "Tom & Jerry's & \"x\""
        );
        assert_eq!(
            html_unescape("a & b &bogus; &#xZZ;"),
            "a & b &bogus; &#xZZ;"
        );
        assert_eq!(html_unescape("no refs"), "no refs");
    }

    #[test]
    fn whitespace_and_truncation() {
        assert_eq!(normalize_whitespace("  a \t b\u{a0}\n c "), "a b c");
        assert_eq!(truncate_chars("short", 10), "short");
        assert_eq!(
            truncate_chars("the quick brown fox jumps", 12),
            "the quick…"
        );
        assert_eq!(truncate_chars("abcdefghijklmnop", 5), "abcd…");
    }

    #[test]
    fn match_normalisation_follows_the_paper() {
        assert_eq!(
            normalize_for_match("Halo 3: ODST &amp; More!"),
            "halo 3 odst more"
        );
    }
}
