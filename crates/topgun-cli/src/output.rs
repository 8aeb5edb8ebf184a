//! JSON output on stdout: one compact JSON document per line, through a
//! buffered, locked handle.
//!
//! Write errors become [`CliError::Stdout`]; a closed pipe (the reader,
//! e.g. `head -1`, went away) is one of them, and ends the command quietly
//! with exit code 0. Rust ignores `SIGPIPE`, so it arrives as an error here
//! rather than killing the process.

use crate::error::CliError;
use serde::Serialize;
use serde_json::Value;
use std::io::{self, BufWriter, StdoutLock, Write};

/// A `{"key":…,"value":…}` line of `list` and `query`.
#[derive(Debug, Serialize)]
struct Row<'a> {
    key: &'a str,
    value: &'a Value,
}

/// Buffered, locked stdout. Call [`Output::finish`] to flush; dropping it
/// flushes too but loses the error.
#[derive(Debug)]
pub(crate) struct Output {
    out: BufWriter<StdoutLock<'static>>,
}

impl Output {
    /// Locks stdout for the rest of the command.
    pub(crate) fn stdout() -> Self {
        Self {
            out: BufWriter::new(io::stdout().lock()),
        }
    }

    /// Writes `value` as compact JSON and a newline.
    pub(crate) fn json_line<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), CliError> {
        serde_json::to_writer(&mut self.out, value)
            // An I/O failure keeps its kind through the conversion.
            .map_err(|e| CliError::Stdout(e.into()))?;
        self.out.write_all(b"\n").map_err(CliError::Stdout)
    }

    /// Writes a `{"key":…,"value":…}` line.
    pub(crate) fn row(&mut self, key: &str, value: &Value) -> Result<(), CliError> {
        self.json_line(&Row { key, value })
    }

    /// Flushes what is buffered, keeping the handle (for streams).
    pub(crate) fn flush(&mut self) -> Result<(), CliError> {
        self.out.flush().map_err(CliError::Stdout)
    }

    /// Flushes what is buffered.
    pub(crate) fn finish(mut self) -> Result<(), CliError> {
        self.out.flush().map_err(CliError::Stdout)
    }
}
