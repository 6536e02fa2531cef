//! Delimited text as pandas' `read_csv(path, sep=…)` reads OpenCLIP's CSV datasets: a header row,
//! fields split on one separator character, a field in double quotes may hold the separator,
//! newlines and `""` (one quote); blank lines are skipped.

use anyhow::{bail, Context, Result};

/// A parsed table: the header's column names and every data row's fields.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn parse(text: &str, sep: char) -> Result<Table> {
        if sep == '"' || sep == '\n' || sep == '\r' {
            bail!("{sep:?} cannot separate fields");
        }
        let mut records: Vec<Vec<String>> = Vec::new();
        let (mut record, mut field) = (Vec::new(), String::new());
        let (mut quoted, mut in_quotes, mut line) = (false, false, 1usize);
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            if in_quotes {
                match c {
                    '"' if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    '"' => in_quotes = false,
                    c => {
                        line += usize::from(c == '\n');
                        field.push(c);
                    }
                }
                continue;
            }
            match c {
                '"' if field.is_empty() && !quoted => {
                    quoted = true;
                    in_quotes = true;
                }
                c if c == sep => {
                    record.push(std::mem::take(&mut field));
                    quoted = false;
                }
                '\r' if chars.peek() == Some(&'\n') => {}
                '\n' => {
                    record.push(std::mem::take(&mut field));
                    quoted = false;
                    line += 1;
                    // A blank line is no record (pandas' skip_blank_lines).
                    if !(record.len() == 1 && record[0].is_empty()) {
                        records.push(std::mem::take(&mut record));
                    }
                    record.clear();
                }
                c => field.push(c),
            }
        }
        if in_quotes {
            bail!("line {line}: a quoted field is never closed");
        }
        if !field.is_empty() || !record.is_empty() || quoted {
            record.push(field);
            records.push(record);
        }
        let mut records = records.into_iter();
        let header = records.next().context("no header row")?;
        let rows: Vec<Vec<String>> = records.collect();
        for (i, r) in rows.iter().enumerate() {
            if r.len() > header.len() {
                bail!(
                    "data row {} has {} fields, the header {}",
                    i + 1,
                    r.len(),
                    header.len()
                );
            }
        }
        Ok(Table { header, rows })
    }

    /// The index of column `name`; the error lists the header.
    pub fn column(&self, name: &str) -> Result<usize> {
        self.header
            .iter()
            .position(|h| h == name)
            .with_context(|| format!("no column {name:?} (the header has {:?})", self.header))
    }

    /// Every row's value in column `index` (a row cut short by pandas would read NaN: an error).
    pub fn values(&self, index: usize) -> Result<Vec<&str>> {
        self.rows
            .iter()
            .enumerate()
            .map(|(i, r)| {
                r.get(index).map(String::as_str).with_context(|| {
                    format!("data row {} has no {:?} field", i + 1, self.header[index])
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_separators_newlines_and_blank_lines() {
        let text = "filepath\ttitle\r\na.jpg\t\"a \"\"quoted\"\"\tcaption\nover two lines\"\n\nb.jpg\tplain\n";
        let t = Table::parse(text, '\t').unwrap();
        assert_eq!(t.header, ["filepath", "title"]);
        assert_eq!(t.rows.len(), 2);
        assert_eq!(t.rows[0][1], "a \"quoted\"\tcaption\nover two lines");
        assert_eq!(t.values(t.column("title").unwrap()).unwrap()[1], "plain");
        assert!(t
            .column("caption")
            .unwrap_err()
            .to_string()
            .contains("filepath"));
        assert!(Table::parse("a,b\n\"open,x\n", ',').is_err());
        assert!(Table::parse("a,b\n1,2,3\n", ',').is_err());
    }
}
