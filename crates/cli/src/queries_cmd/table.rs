//! Aligned plain-text tables for `pgpilot queries`: columns padded to their
//! widest cell, numbers right-aligned, and the last (text) column cut with
//! `…` so each line fits the terminal width. A row may carry a note printed
//! on the line below it (a finding's fix).

/// How a column's cells are padded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// Narrowest the last column is cut to, however narrow the terminal.
const MIN_LAST_COLUMN: usize = 16;
/// Between columns.
const GAP: &str = "  ";

/// Headers, rows, and per-row notes.
pub struct Table {
    columns: Vec<(&'static str, Align)>,
    rows: Vec<(Vec<String>, Option<String>)>,
}

impl Table {
    /// A table with these headers; the last column is the one that is cut.
    pub fn new(columns: &[(&'static str, Align)]) -> Table {
        Table {
            columns: columns.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (one cell per column; whitespace runs, newlines included,
    /// become one space) with an optional note line under it.
    pub fn row(&mut self, cells: Vec<String>, note: Option<String>) {
        let cells = cells.iter().map(|c| one_line(c)).collect();
        self.rows.push((cells, note.map(|n| one_line(&n))));
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table, each line at most `width` characters (unless the fixed
    /// columns alone are wider).
    pub fn render(&self, width: usize) -> String {
        let n = self.columns.len();
        let mut widths: Vec<usize> = self.columns.iter().map(|(h, _)| h.len()).collect();
        for (cells, _) in &self.rows {
            for (w, cell) in widths.iter_mut().zip(cells) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let fixed: usize = widths[..n.saturating_sub(1)]
            .iter()
            .map(|w| w + GAP.len())
            .sum();
        let last = width.saturating_sub(fixed).max(MIN_LAST_COLUMN);
        let headers: Vec<String> = self.columns.iter().map(|(h, _)| h.to_string()).collect();
        let mut out = self.line(&headers, &widths, last);
        for (cells, note) in &self.rows {
            out.push_str(&self.line(cells, &widths, last));
            if let Some(note) = note {
                out.push_str(&cut(&format!("{GAP}{note}"), width.max(MIN_LAST_COLUMN)));
                out.push('\n');
            }
        }
        out
    }

    fn line(&self, cells: &[String], widths: &[usize], last: usize) -> String {
        let mut line = String::new();
        for (i, ((_, align), width)) in self.columns.iter().zip(widths).enumerate() {
            let cell = cells.get(i).map(String::as_str).unwrap_or_default();
            if i + 1 == self.columns.len() {
                line.push_str(&cut(cell, last));
                break;
            }
            match align {
                Align::Left => line.push_str(&format!("{cell:<width$}")),
                Align::Right => line.push_str(&format!("{cell:>width$}")),
            }
            line.push_str(GAP);
        }
        line.truncate(line.trim_end().len());
        line.push('\n');
        line
    }
}

/// `text` cut to `max` characters, the last one `…` when anything was cut.
pub fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Whitespace runs (newlines, tabs) as single spaces; control characters
/// dropped, so a query's text cannot break the table or the terminal.
fn one_line(text: &str) -> String {
    let cleaned: String = text
        .chars()
        .map(|c| if c.is_whitespace() { ' ' } else { c })
        .filter(|c| !c.is_control())
        .collect();
    cleaned.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Milliseconds with precision that suits their size: `0.42`, `12.5`, `1234`.
pub fn ms(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.0}")
    } else if value >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_columns_and_cuts_the_last() {
        let mut t = Table::new(&[
            ("NAME", Align::Left),
            ("N", Align::Right),
            ("TEXT", Align::Left),
        ]);
        t.row(vec!["a".into(), "1000".into(), "x".repeat(50)], None);
        t.row(
            vec!["bbb".into(), "7".into(), "SELECT\n  1".into()],
            Some("fix:\tthis".into()),
        );
        let text = t.render(30);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "NAME     N  TEXT");
        assert_eq!(lines[1], format!("a     1000  {}…", "x".repeat(17)));
        assert_eq!(lines[1].chars().count(), 30);
        assert_eq!(lines[2], "bbb      7  SELECT 1");
        assert_eq!(lines[3], "  fix: this");
    }

    #[test]
    fn narrow_terminals_keep_a_readable_last_column() {
        let mut t = Table::new(&[("A", Align::Left), ("QUERY", Align::Left)]);
        t.row(vec!["a".repeat(40), "y".repeat(40)], None);
        let line = t.render(20).lines().nth(1).unwrap_or_default().to_owned();
        assert!(line.ends_with(&format!("{}…", "y".repeat(MIN_LAST_COLUMN - 1))));
    }

    #[test]
    fn control_characters_are_dropped() {
        assert_eq!(one_line("a\u{1b}[31m b\r\n\tc"), "a[31m b c");
        assert_eq!(cut("héllo", 3), "hé…");
        assert_eq!(cut("abc", 3), "abc");
    }

    #[test]
    fn milliseconds_by_magnitude() {
        assert_eq!(ms(0.4249), "0.42");
        assert_eq!(ms(12.54), "12.5");
        assert_eq!(ms(1234.5), "1234");
    }
}
