//! Structured logging to stderr: JSON for machines, text for people; the level can be
//! changed while running; secrets never reach a line.
//!
//! Every JSON line carries `correlation_id` and `trace_id` (empty when unknown): the
//! innermost enclosing span that recorded a field of that name provides it. Handlers open
//! a span with `correlation_id` (see [`correlation_id`]); the tracing work records
//! `trace_id` on the same span, or inserts a [`TraceId`] in the span's extensions from its
//! own layer (passed to [`init_with`]).
//!
//! Redaction (see [`redact`]) applies to event and span fields in both formats: a field
//! whose name suggests a credential is replaced whole, and credential-shaped substrings
//! (JWTs, `Bearer` tokens) and values registered with [`register_secret`] are masked
//! wherever they appear.

use std::fmt;
use std::sync::{LazyLock, Mutex, OnceLock, RwLock};

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::field::MakeExt as _;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::{Context, SubscriberExt as _};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer, Registry, reload};

use crate::config::{LogConfig, LogFormat};

/// What replaces a secret.
pub const REDACTED: &str = "[REDACTED]";

/// The span field naming the request's correlation id.
pub const CORRELATION_ID: &str = "correlation_id";
/// The span field naming the request's trace id.
pub const TRACE_ID: &str = "trace_id";

/// A trace id put into a span's extensions by a tracing layer (see the module docs).
#[derive(Debug, Clone)]
pub struct TraceId(pub String);

/// A layer added under the formatter by [`init_with`] (the OpenTelemetry layer).
pub type ExtraLayer = Box<dyn Layer<Registry> + Send + Sync>;

static RELOAD: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();
static LEVEL: Mutex<String> = Mutex::new(String::new());
static SECRETS: LazyLock<RwLock<Vec<String>>> = LazyLock::new(|| RwLock::new(Vec::new()));

/// Installs the global subscriber. Call once, from `main`.
pub fn init(config: &LogConfig) {
    init_with(config, None);
}

/// [`init`] with one more layer (e.g. OpenTelemetry) between the filter and the formatter.
pub fn init_with(config: &LogConfig, extra: Option<ExtraLayer>) {
    let filter = EnvFilter::try_new(&config.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    use std::io::IsTerminal as _;
    let formatter: Box<dyn Layer<Registry> + Send + Sync> = match config.format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .event_format(JsonLines)
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .fmt_fields(redacting_fields())
            .boxed(),
    };
    let layers: Vec<Box<dyn Layer<Registry> + Send + Sync>> =
        [Some(SpanFields.boxed()), extra, Some(formatter)]
            .into_iter()
            .flatten()
            .collect();
    // The level filter wraps the whole stack. Inside the vector it would be one layer
    // among others, and a vector enables a callsite when any of its layers is interested,
    // so the formatter would switch every TRACE callsite on.
    // A second init (tests calling main helpers twice) is harmless: keep the first.
    if tracing_subscriber::registry()
        .with(layers.with_filter(filter))
        .try_init()
        .is_ok()
    {
        let _ = RELOAD.set(handle);
        *lock(&LEVEL) = config.level.clone();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Why the log level was not changed.
#[derive(Debug, thiserror::Error)]
pub enum LevelError {
    /// The directive does not parse.
    #[error("invalid filter directive: {0}")]
    Invalid(String),
    /// [`init`] did not install the subscriber (another one is global).
    #[error("logging is not initialised by execbridge_runtime::telemetry")]
    NotInitialised,
}

/// The filter directive in force.
pub fn level() -> String {
    lock(&LEVEL).clone()
}

/// Replaces the filter with `directive` (an `EnvFilter` directive: "debug",
/// "info,execbridge_gateway=trace").
///
/// # Errors
/// [`LevelError`] when the directive is invalid or logging is not ours.
pub fn set_level(directive: &str) -> Result<(), LevelError> {
    let filter = EnvFilter::try_new(directive).map_err(|e| LevelError::Invalid(e.to_string()))?;
    let handle = RELOAD.get().ok_or(LevelError::NotInitialised)?;
    handle
        .reload(filter)
        .map_err(|_| LevelError::NotInitialised)?;
    *lock(&LEVEL) = directive.to_owned();
    Ok(())
}

/// Masks `secret` in every log line from now on (configured credentials, venue secrets).
/// Empty and very short values are ignored: masking them would mangle ordinary text.
pub fn register_secret(secret: &str) {
    if secret.len() < 8 {
        return;
    }
    let mut secrets = SECRETS
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if !secrets.iter().any(|s| s == secret) {
        secrets.push(secret.to_owned());
    }
}

/// Whether a field of this name holds a credential.
fn secret_name(name: &str) -> bool {
    const WORDS: &[&str] = &[
        "password",
        "passwd",
        "secret",
        "token",
        "api_key",
        "apikey",
        "x-api-key",
        "authorization",
        "signature",
        "private_key",
        "credential",
        "cookie",
        "jwt",
    ];
    let name = name.to_ascii_lowercase();
    WORDS.iter().any(|w| name.contains(w))
}

/// `value` of field `name` as it may be logged. See the module docs.
pub fn redact<'a>(name: &str, value: &'a str) -> std::borrow::Cow<'a, str> {
    use std::borrow::Cow;
    if secret_name(name) {
        return Cow::Borrowed(REDACTED);
    }
    let mut out = Cow::Borrowed(value);
    if value.contains("eyJ") {
        out = Cow::Owned(mask_jwts(&out));
    }
    if let Some(masked) = mask_bearer(&out) {
        out = Cow::Owned(masked);
    }
    let secrets = SECRETS
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for secret in secrets.iter() {
        if out.contains(secret.as_str()) {
            out = Cow::Owned(out.replace(secret.as_str(), REDACTED));
        }
    }
    out
}

fn base64url(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '='
}

/// Replaces each `eyJ<b64>.<b64>[.<b64>]` (a JWS/JWT: its header is JSON, so base64url of
/// `{"`) with [`REDACTED`].
fn mask_jwts(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find("eyJ") {
        out.push_str(&rest[..at]);
        let candidate = &rest[at..];
        let end = candidate
            .find(|c: char| !(base64url(c) || c == '.'))
            .unwrap_or(candidate.len());
        let token = &candidate[..end];
        if token.split('.').filter(|p| !p.is_empty()).count() >= 2 {
            out.push_str(REDACTED);
        } else {
            out.push_str(token);
        }
        rest = &candidate[end..];
        if end == 0 {
            // Not reachable ("eyJ" is base64url), but never loop forever.
            break;
        }
    }
    out.push_str(rest);
    out
}

/// Masks the word after each `Bearer ` (any case), or `None` when there is none.
fn mask_bearer(s: &str) -> Option<String> {
    let lower = s.to_ascii_lowercase();
    if !lower.contains("bearer ") {
        return None;
    }
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while let Some(found) = lower[i..].find("bearer ") {
        let start = i + found + "bearer ".len();
        out.push_str(&s[i..start]);
        let end = s[start..]
            .find(|c: char| c.is_whitespace() || c == '"' || c == '\'' || c == ',')
            .map_or(s.len(), |e| start + e);
        if end > start {
            out.push_str(REDACTED);
        }
        i = end;
    }
    out.push_str(&s[i..]);
    Some(out)
}

/// Fields as JSON values, redacted.
#[derive(Default)]
struct JsonFields(Map<String, Value>);

impl Visit for JsonFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(
            field.name().to_owned(),
            Value::String(redact(field.name(), value).into_owned()),
        );
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.record_str(field, &format!("{value:?}"));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), value.into());
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_owned(), value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), value.into());
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.record_str(field, &value.to_string());
    }
}

/// Keeps each span's fields (redacted) in its extensions, for the JSON lines.
struct SpanFields;

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for SpanFields {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = JsonFields::default();
        attrs.record(&mut fields);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(fields);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            let mut extensions = span.extensions_mut();
            if let Some(fields) = extensions.get_mut::<JsonFields>() {
                values.record(fields);
            } else {
                let mut fields = JsonFields::default();
                values.record(&mut fields);
                extensions.insert(fields);
            }
        }
    }
}

/// One JSON object per line: `timestamp`, `level`, `target`, the event's fields
/// (`message` among them), `span` (the enclosing spans' fields, inner ones winning),
/// `spans` (their names, outermost first), `correlation_id` and `trace_id`.
struct JsonLines;

fn non_empty(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) if s.is_empty() => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

impl<S, N> FormatEvent<S, N> for JsonLines
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
        let mut line = Map::new();
        let mut timestamp = String::new();
        SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        line.insert("timestamp".into(), timestamp.into());
        let metadata = event.metadata();
        line.insert("level".into(), metadata.level().as_str().into());
        line.insert("target".into(), metadata.target().into());
        let mut span_fields = Map::new();
        let mut names = Vec::new();
        let mut correlation_id = None;
        let mut trace_id = None;
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                names.push(Value::String(span.name().to_owned()));
                let extensions = span.extensions();
                if let Some(fields) = extensions.get::<JsonFields>() {
                    for (k, v) in &fields.0 {
                        span_fields.insert(k.clone(), v.clone());
                    }
                    correlation_id = non_empty(fields.0.get(CORRELATION_ID)).or(correlation_id);
                    trace_id = non_empty(fields.0.get(TRACE_ID)).or(trace_id);
                }
                if let Some(TraceId(id)) = extensions.get::<TraceId>() {
                    trace_id = Some(id.clone());
                }
            }
        }
        let mut fields = JsonFields::default();
        event.record(&mut fields);
        correlation_id = non_empty(fields.0.get(CORRELATION_ID)).or(correlation_id);
        trace_id = non_empty(fields.0.get(TRACE_ID)).or(trace_id);
        for (k, v) in fields.0 {
            // The fixed keys win: an event field cannot forge the level or the ids.
            line.entry(k).or_insert(v);
        }
        if !names.is_empty() {
            line.insert("span".into(), Value::Object(span_fields));
            line.insert("spans".into(), Value::Array(names));
        }
        line.insert(
            CORRELATION_ID.into(),
            correlation_id.unwrap_or_default().into(),
        );
        line.insert(TRACE_ID.into(), trace_id.unwrap_or_default().into());
        let json = serde_json::to_string(&Value::Object(line)).map_err(|_| fmt::Error)?;
        writeln!(writer, "{json}")
    }
}

/// The text format's field formatter, redacting as the JSON one does.
fn redacting_fields() -> impl for<'w> FormatFields<'w> + Send + Sync + 'static {
    tracing_subscriber::fmt::format::debug_fn(
        |writer: &mut Writer<'_>, field: &Field, value: &dyn fmt::Debug| {
            let text = format!("{value:?}");
            let text = redact(field.name(), &text);
            if field.name() == "message" {
                write!(writer, "{text}")
            } else {
                write!(writer, "{}={text}", field.name())
            }
        },
    )
    .delimited(" ")
}

/// The correlation id a caller sent in `x-correlation-id` (or `x-request-id`), or a new
/// one: put it on the handler's span (`correlation_id = %id`) so every line of the
/// request carries it.
pub fn correlation_id(headers: &http::HeaderMap) -> String {
    for key in ["x-correlation-id", "x-request-id"] {
        if let Some(id) = headers
            .get(key)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= 128)
            .filter(|v| v.bytes().all(|b| b.is_ascii_graphic()))
        {
            return id.to_owned();
        }
    }
    new_correlation_id()
}

/// A fresh correlation id: 16 hex digits, unique within the process and unlikely to
/// repeat across processes.
pub fn new_correlation_id() -> String {
    use std::hash::{BuildHasher as _, Hasher as _};
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static SEED: LazyLock<std::collections::hash_map::RandomState> =
        LazyLock::new(std::collections::hash_map::RandomState::new);
    let mut hasher = SEED.build_hasher();
    hasher.write_u64(NEXT.fetch_add(1, Ordering::Relaxed));
    format!("{:016x}", hasher.finish())
}

/// For tests: the JSON formatter writing into a buffer, with the filter `directive`.
#[doc(hidden)]
pub fn test_subscriber(
    directive: &str,
    out: std::sync::Arc<Mutex<Vec<u8>>>,
) -> impl Subscriber + Send + Sync {
    let writer = move || TestWriter(out.clone());
    tracing_subscriber::registry()
        .with(EnvFilter::new(directive))
        .with(SpanFields)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(writer)
                .event_format(JsonLines),
        )
}

struct TestWriter(std::sync::Arc<Mutex<Vec<u8>>>);

impl std::io::Write for TestWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        lock(&self.0).extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests;
