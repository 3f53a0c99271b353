//! Samples, their summary (median, min, max), and the two outputs of a
//! benchmark: a table on stdout and a JSON object for `--json`.
//!
//! A benchmark collects one [`Series`] per contender, names one of them the
//! reference, and hands them to [`Report`]; the ratio of each row is its
//! median over the reference's median (below 1 is faster than the reference).

use std::time::Duration;

use serde_json::{json, Value};

/// The timings of one contender, in run order (warmups excluded).
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    /// What the row measures, in a few words.
    pub note: String,
    pub samples: Vec<Duration>,
}

impl Series {
    pub fn new(name: &str, note: &str) -> Series {
        Series {
            name: name.to_owned(),
            note: note.to_owned(),
            samples: Vec::new(),
        }
    }

    pub fn summary(&self) -> Option<Summary> {
        Summary::of(&self.samples)
    }
}

/// Median, min and max of a series, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub median_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
}

impl Summary {
    /// `None` for an empty series.
    pub fn of(samples: &[Duration]) -> Option<Summary> {
        let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        ms.sort_by(f64::total_cmp);
        let n = ms.len();
        let median = match n {
            0 => return None,
            _ if n % 2 == 1 => ms[n / 2],
            _ => (ms[n / 2 - 1] + ms[n / 2]) / 2.0,
        };
        Some(Summary {
            median_ms: median,
            min_ms: ms[0],
            max_ms: ms[n - 1],
        })
    }
}

/// A derived row: the difference of two medians (e.g. crun net of its wrapper).
#[derive(Debug, Clone)]
pub struct Derived {
    pub name: String,
    pub note: String,
    pub median_ms: f64,
}

/// The outcome of one benchmark.
#[derive(Debug, Clone)]
pub struct Report {
    pub bench: &'static str,
    pub workload: String,
    pub runs: usize,
    pub warmups: usize,
    pub series: Vec<Series>,
    pub derived: Vec<Derived>,
    /// The name of the series or derived row the ratios are relative to.
    pub reference: String,
    /// Peers that were not measured, with the reason.
    pub skipped: Vec<(String, String)>,
    /// The goals this benchmark checks, as readable sentences with the verdict.
    pub goals: Vec<String>,
}

impl Report {
    /// The median of a series or derived row by name.
    pub fn median(&self, name: &str) -> Option<f64> {
        self.series
            .iter()
            .find(|s| s.name == name)
            .and_then(|s| s.summary().map(|m| m.median_ms))
            .or_else(|| {
                self.derived
                    .iter()
                    .find(|d| d.name == name)
                    .map(|d| d.median_ms)
            })
    }

    fn ratio(&self, median: f64) -> Option<f64> {
        self.median(&self.reference)
            .filter(|r| *r > 0.0)
            .map(|r| median / r)
    }

    /// The table, as printed on stdout.
    pub fn table(&self) -> String {
        let mut out = format!(
            "\n== {} — {} ({} runs after {} warmups, interleaved)\n",
            self.bench, self.workload, self.runs, self.warmups
        );
        out += &format!(
            "{:<28} {:>9} {:>9} {:>9} {:>9}  {}\n",
            "contender",
            "median",
            "min",
            "max",
            format!("×{}", short(&self.reference)),
            "what"
        );
        let ratio = |m: f64| {
            self.ratio(m)
                .map_or_else(|| "-".to_owned(), |r| format!("{r:.2}"))
        };
        for series in &self.series {
            let Some(s) = series.summary() else { continue };
            out += &format!(
                "{:<28} {:>7.2}ms {:>7.2}ms {:>7.2}ms {:>9}  {}\n",
                series.name,
                s.median_ms,
                s.min_ms,
                s.max_ms,
                ratio(s.median_ms),
                series.note
            );
        }
        for derived in &self.derived {
            out += &format!(
                "{:<28} {:>7.2}ms {:>9} {:>9} {:>9}  {}\n",
                derived.name,
                derived.median_ms,
                "",
                "",
                ratio(derived.median_ms),
                derived.note
            );
        }
        for (peer, why) in &self.skipped {
            out += &format!("SKIPPED {peer}: {why}\n");
        }
        for goal in &self.goals {
            out += &format!("goal: {goal}\n");
        }
        out
    }

    /// The JSON object of this benchmark.
    pub fn json(&self) -> Value {
        let rows: Vec<Value> = self
            .series
            .iter()
            .filter_map(|series| {
                let s = series.summary()?;
                Some(json!({
                    "name": series.name,
                    "note": series.note,
                    "median_ms": s.median_ms,
                    "min_ms": s.min_ms,
                    "max_ms": s.max_ms,
                    "ratio": self.ratio(s.median_ms),
                    "samples_ms": series
                        .samples
                        .iter()
                        .map(|d| d.as_secs_f64() * 1e3)
                        .collect::<Vec<_>>(),
                }))
            })
            .collect();
        let derived: Vec<Value> = self
            .derived
            .iter()
            .map(|d| {
                json!({
                    "name": d.name,
                    "note": d.note,
                    "median_ms": d.median_ms,
                    "ratio": self.ratio(d.median_ms),
                })
            })
            .collect();
        json!({
            "bench": self.bench,
            "workload": self.workload,
            "runs": self.runs,
            "warmups": self.warmups,
            "reference": self.reference,
            "results": rows,
            "derived": derived,
            "skipped": self
                .skipped
                .iter()
                .map(|(peer, why)| json!({ "peer": peer, "reason": why }))
                .collect::<Vec<_>>(),
            "goals": self.goals,
        })
    }
}

/// The first word of a contender name, for the ratio column header.
fn short(name: &str) -> &str {
    name.split_whitespace().next().unwrap_or(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(values: &[u64]) -> Vec<Duration> {
        values.iter().map(|v| Duration::from_millis(*v)).collect()
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        let odd = Summary::of(&ms(&[5, 1, 3])).unwrap();
        assert_eq!((odd.median_ms, odd.min_ms, odd.max_ms), (3.0, 1.0, 5.0));
        let even = Summary::of(&ms(&[4, 1, 3, 2])).unwrap();
        assert_eq!(even.median_ms, 2.5);
        assert!(Summary::of(&[]).is_none());
    }

    #[test]
    fn ratios_are_relative_to_the_reference() {
        let mut fast = Series::new("a", "");
        fast.samples = ms(&[2, 2, 2]);
        let mut slow = Series::new("b", "");
        slow.samples = ms(&[6, 6, 6]);
        let report = Report {
            bench: "t",
            workload: String::new(),
            runs: 3,
            warmups: 0,
            series: vec![fast, slow],
            derived: Vec::new(),
            reference: "a".into(),
            skipped: Vec::new(),
            goals: Vec::new(),
        };
        assert_eq!(report.ratio(6.0), Some(3.0));
        assert!(report.table().contains("3.00"));
    }
}
