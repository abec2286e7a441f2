//! The log format of the `arduino` program: one line per event, led by the node it happened
//! in, as `[ iopin ] tick 3 on /datafeed -> 1 0 1`. Programs that host nodes of their own
//! can install the same with [`init`].

use std::fmt;

use tracing::{Event, Level, Subscriber, field::Field};
use tracing_subscriber::{
    field::Visit,
    filter::Targets,
    fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields, format::Writer},
    layer::SubscriberExt,
    registry::LookupSpan,
    util::SubscriberInitExt,
};

/// Install the log format on stderr. `RUST_LOG` wins when set; otherwise `default` is the
/// filter (such as `arduino=info`). With `fields`, each line also shows the event's fields
/// (client address, peer, ...).
pub fn init(default: &str, fields: bool) {
    // `Targets` reads the usual `RUST_LOG` form (`arduino=debug,tokio_tungstenite=trace`)
    // without the regex engine `EnvFilter` brings, which would double the size of the binary
    // (and of what a node keeps resident).
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|spec| spec.parse::<Targets>().ok())
        .unwrap_or_else(|| default.parse().unwrap_or_default());
    let lines = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .event_format(Lines { fields });
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(lines)
        .try_init();
}

/// One line per event: `[ node ] message`, warnings and errors marked.
struct Lines {
    fields: bool,
}

impl<S, N> FormatEvent<S, N> for Lines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let node = ctx.event_scope().and_then(|scope| {
            scope
                .from_root()
                .find(|span| span.name() == "node")
                .and_then(|span| {
                    span.extensions()
                        .get::<FormattedFields<N>>()
                        .map(|fields| fields.fields.trim_start_matches("node=").to_owned())
                })
        });
        let name = node.as_deref().unwrap_or("arduino");
        write!(writer, "[ {name} ] ")?;
        match *event.metadata().level() {
            Level::ERROR => write!(writer, "error: ")?,
            Level::WARN => write!(writer, "warning: ")?,
            _ => {}
        }
        let mut line = Line {
            writer: &mut writer,
            fields: self.fields,
            result: Ok(()),
        };
        event.record(&mut line);
        line.result?;
        writeln!(writer)
    }
}

struct Line<'a, 'w> {
    writer: &'a mut Writer<'w>,
    fields: bool,
    result: fmt::Result,
}

impl Visit for Line<'_, '_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.result.is_err() {
            return;
        }
        self.result = if field.name() == "message" {
            write!(self.writer, "{value:?}")
        } else if self.fields {
            write!(self.writer, " {}={value:?}", field.name())
        } else {
            Ok(())
        };
    }
}

/// How much of a client's text a log line shows.
const SHOWN_BYTES: usize = 120;

/// Text from outside (a message, an ack, a close reason) as a log line may show it: control
/// characters escaped (`\n`, `\u{1b}`), so that a message cannot forge log lines or reach the
/// terminal, and cut after 120 bytes with the length said, so that a 1 MiB message is not a
/// 1 MiB line. Costs nothing unless the line is written.
///
/// ```
/// use arduino::logging::shown;
///
/// assert_eq!(shown("1\n[ clock ] done").to_string(), r"1\n[ clock ] done");
/// assert_eq!(shown(&"x".repeat(1000)).to_string().len(), 120 + "... (1000 bytes)".len());
/// ```
pub fn shown(text: &str) -> Shown<'_> {
    Shown(text)
}

/// See [`shown`].
#[derive(Clone, Copy)]
pub struct Shown<'a>(&'a str);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use fmt::Write;
        let text = self.0;
        let mut end = text.len().min(SHOWN_BYTES);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        for c in text[..end].chars() {
            match c {
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                '\\' => f.write_str("\\\\")?,
                c if c.is_control() => write!(f, "\\u{{{:x}}}", u32::from(c))?,
                c => f.write_char(c)?,
            }
        }
        if end < text.len() {
            write!(f, "... ({} bytes)", text.len())?;
        }
        Ok(())
    }
}

impl fmt::Debug for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::shown;

    #[test]
    fn control_characters_are_escaped_and_long_texts_cut() {
        assert_eq!(
            shown("a\r\n\u{1b}[31m\t\\").to_string(),
            r"a\r\n\u{1b}[31m\t\\"
        );
        assert_eq!(shown("plain").to_string(), "plain");
        // Cut on a character boundary, never inside one.
        let long = "é".repeat(100);
        let cut = shown(&long).to_string();
        assert!(cut.ends_with("... (200 bytes)"), "{cut}");
        assert_eq!(cut.trim_end_matches("... (200 bytes)").chars().count(), 60);
    }
}
