//! The one boundary every free text crosses on its way into the store: reasons (which carry
//! a trainer's last output), event messages, names and comments of approvals. A text that
//! the database refuses cannot be recorded, and a failure that cannot be recorded is how a
//! cycle once looped: PostgreSQL rejects a NUL byte in `text` (SQLSTATE 22021) whatever
//! else the string holds. So NUL bytes are removed, other control characters (but newline
//! and tab) are written as `\u{..}` escapes, and a text is capped at [`MAX_TEXT`] bytes with
//! a note of how much was cut. Pure: no I/O.

use std::borrow::Cow;

/// The longest text the store keeps in one field, in bytes.
pub const MAX_TEXT: usize = 16 * 1024;

/// `text` as the store keeps it: no NUL, control characters escaped, at most [`MAX_TEXT`]
/// bytes. Borrows when nothing had to change.
pub fn clean_text(text: &str) -> Cow<'_, str> {
    let dirty = text
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t');
    if !dirty && text.len() <= MAX_TEXT {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len().min(MAX_TEXT + 64));
    for (i, c) in text.char_indices() {
        if out.len() >= MAX_TEXT {
            out.push_str(&format!(" … ({} bytes cut)", text.len() - i));
            break;
        }
        match c {
            '\0' => {}
            '\n' | '\t' => out.push(c),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed_unchanged() {
        let t = "training failed: line 1\n\tline 2 — ünïcode";
        assert!(matches!(clean_text(t), Cow::Borrowed(s) if s == t));
    }

    #[test]
    fn nul_is_removed_and_control_characters_escaped() {
        assert_eq!(
            clean_text("a\0b\u{1b}[31mred\rc\u{7f}"),
            "ab\\u{1b}[31mred\\u{d}c\\u{7f}"
        );
    }

    #[test]
    fn long_text_is_cut_on_a_character_boundary_with_a_note() {
        let t = "é".repeat(MAX_TEXT); // two bytes each
        let c = clean_text(&t);
        assert!(c.starts_with("éé"));
        assert!(
            c.ends_with(&format!(" … ({} bytes cut)", MAX_TEXT)),
            "{}",
            &c[c.len() - 40..]
        );
        assert_eq!(
            c.len(),
            MAX_TEXT + format!(" … ({} bytes cut)", MAX_TEXT).len()
        );
    }
}
